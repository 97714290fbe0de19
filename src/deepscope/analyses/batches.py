"""Data in, batches out: one canonical :class:`Batch` whatever the dataset yields (tensors, tuples or dicts)."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..notices import user_stacklevel

LABEL_KEYS = ("labels", "label", "targets", "target", "y")
FRAME_LABEL_KEYS = ("label", "labels", "target", "targets")  # a DataFrame's "y" is as often a coordinate
MASK_KEY = "attention_mask"  # read as the padding mask (1 = real token) unless ``mask=`` says otherwise
MASK_MARKS = ("tokens", "padding")  # what a mask's true values mark


@dataclass(frozen=True)
class PaddingMask:
    """Which entry of a dict batch is the padding mask, and what its true (non-zero) values mark: ``"tokens"`` —
    1 for a real token, as Hugging Face's ``attention_mask`` — or ``"padding"`` — True for a padded position, as
    PyTorch's ``src_key_padding_mask``."""

    key: str = MASK_KEY
    marks: str = "tokens"
    given: bool = False  # named by the user (a batch without it is an error), not the default

    def real_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` as True for real tokens. (B, T) -> (B, T) bool."""
        return mask == 0 if self.marks == "padding" else mask != 0


ATTENTION_MASK = PaddingMask()  # the default: ``attention_mask``, when a batch has one


def padding_mask(option: Any) -> PaddingMask | None:
    """``deepscope.analyze(mask=...)``: None (``attention_mask`` when a batch has one), False (no padding mask), a
    dict key (its true values mark real tokens) or ``(key, "tokens" | "padding")``."""
    if option is None:
        return ATTENTION_MASK
    if option is False:
        return None
    if isinstance(option, str):
        option = (option, "tokens")
    if (not isinstance(option, (tuple, list)) or len(option) != 2 or not isinstance(option[0], str) or not option[0]
            or option[1] not in MASK_MARKS):  # fmt: skip
        raise ValueError(f"deepscope.analyze: mask is a dict key of the batches (its true values mark real tokens), "
                         f"(key, 'tokens' | 'padding'), or False for none; not {option!r}")  # fmt: skip
    return PaddingMask(option[0], option[1], given=True)


def unused_masks(batch: Batch) -> list[str]:
    """Keyword inputs of a batch without a padding mask that look like one: named ``mask``, ``padding_mask`` or
    ``*_mask``, holding a (B, T) bool or integer tensor whose T is the other inputs' sequence length."""
    if batch.mask is not None:
        return []
    lengths = {int(v.shape[1]) for k, v in batch.kwargs.items() if isinstance(v, torch.Tensor) and v.ndim >= 2
               and not _looks_like_mask_name(k)}  # fmt: skip
    return [k for k, v in batch.kwargs.items() if _looks_like_mask_name(k) and isinstance(v, torch.Tensor)
            and v.ndim == 2 and len(v) == batch.size and not v.is_floating_point() and not v.is_complex()
            and (not lengths or int(v.shape[1]) in lengths)]  # fmt: skip


def _looks_like_mask_name(key: str) -> bool:
    k = key.lower()
    return k == "mask" or k.endswith("_mask") or k.endswith("padding_mask")


@dataclass
class Batch:
    """What the model is called with (``model(*args, **kwargs)``), plus labels and a padding mask if known."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # (B, T), True or 1 for real tokens
    size: int = 0
    items: int | None = None  # a tuple batch's length (its first item is the input, its second the label)
    text_labels: list[str] | None = None  # the batch's labels, when they are text (no classes until mapped)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` of every tensor whose first dimension is the batch (and of a list of one item per
        instance: texts)."""

        def cut(v: Any) -> Any:
            per_row = isinstance(v, torch.Tensor) and v.ndim or isinstance(v, (list, tuple))
            return v[start:stop] if per_row and len(v) == self.size else v

        return Batch(
            tuple(cut(a) for a in self.args),
            {k: cut(v) for k, v in self.kwargs.items()},
            cut(self.labels),
            cut(self.mask),
            max(0, min(stop, self.size) - start),
            self.items,
            cut(self.text_labels),
        )

    def to(self, device: torch.device) -> Batch:
        move = lambda v: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v  # noqa: E731
        return Batch(tuple(move(a) for a in self.args), {k: move(v) for k, v in self.kwargs.items()},
                     self.labels, move(self.mask), self.size, self.items, self.text_labels)  # fmt: skip


def to_batch(raw: Any, mask: PaddingMask | None = ATTENTION_MASK) -> Batch:
    """A collated batch as the canonical :class:`Batch`.

    A tensor is the input; a tuple/list is ``(input, label, ...)``; a dict is the model's keyword arguments,
    less the label key (``labels``, ``label``, ``targets``…), with the entry ``mask`` names (``attention_mask``
    by default) also kept as the padding mask, as True for real tokens.
    """
    if isinstance(raw, torch.Tensor):
        _no_dict(mask)
        return Batch((raw,), size=_rows(raw))
    if isinstance(raw, Mapping):
        kwargs = dict(raw)
        labels = next((kwargs.pop(k) for k in LABEL_KEYS if k in kwargs), None)
        first = next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        if first is None:
            raise TypeError("deepscope.analyze: a dict batch needs at least one tensor input")
        y, texts = _labels(labels)
        return Batch((), kwargs, y, _mask_of(kwargs, mask), _rows(first), text_labels=texts)
    if isinstance(raw, (tuple, list)) and raw:
        x = raw[0]
        if isinstance(x, Mapping):  # (dict of inputs, labels)
            b = to_batch(x, mask)
            if len(raw) > 1:
                b.labels, b.text_labels = _labels(raw[1])
            return b
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"deepscope.analyze: the first item of a batch must be a tensor, got {type(x).__name__}")
        _no_dict(mask)
        y, texts = _labels(raw[1] if len(raw) > 1 else None)
        return Batch((x,), labels=y, size=_rows(x), items=len(raw), text_labels=texts)
    raise TypeError(f"deepscope.analyze: cannot read a batch of type {type(raw).__name__} (tensor, tuple or dict)")


def _mask_of(kwargs: dict[str, Any], mask: PaddingMask | None) -> torch.Tensor | None:
    if mask is None:
        return None
    m = kwargs.get(mask.key)
    if m is None and mask.given:
        raise ValueError(f"deepscope.analyze: mask={mask.key!r} names no entry of the batches (entries: "
                         f"{', '.join(map(str, kwargs))})")  # fmt: skip
    if m is None:
        return None
    if not mask.given and not (isinstance(m, torch.Tensor) and m.ndim == 2):
        return None  # the default's name on something else (a decoder's 4-D attention mask): not a padding mask
    if not isinstance(m, torch.Tensor) or m.ndim != 2:
        raise ValueError(f"deepscope.analyze: the padding mask {mask.key!r} must be a (batch, tokens) tensor, got "
                         f"{tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}")  # fmt: skip
    return mask.real_tokens(m)


def _no_dict(mask: PaddingMask | None) -> None:
    if mask is not None and mask.given:
        raise ValueError(f"deepscope.analyze: mask={mask.key!r} names an entry of dict batches, but the batches are "
                         "tensors or tuples; yield dicts ({'input_ids': …, " + repr(mask.key) + ": …}) to pass a "
                         "padding mask")  # fmt: skip


def _rows(x: torch.Tensor) -> int:
    if x.ndim == 0:
        raise ValueError("deepscope.analyze: batch inputs must have a batch dimension")
    return int(x.shape[0])


def _text_labels(y: Any) -> list[str] | None:
    """Labels given as text (``("pos", "neg", …)``, a NumPy array of strings), else None."""
    if isinstance(y, np.ndarray) and y.dtype.kind in "US":
        return [str(v) for v in y.tolist()]
    if isinstance(y, (list, tuple)) and y and all(isinstance(v, str) for v in y):
        return list(y)
    return None


def _labels(y: Any) -> tuple[torch.Tensor | None, list[str] | None]:
    """A batch's labels as classes, or — given as text — as the texts (no classes: labels= replaces them, or the
    analysis says how to map them)."""
    texts = _text_labels(y)
    return (None, texts) if texts is not None else (_as_labels(y), None)


def _as_labels(y: Any) -> torch.Tensor | None:
    if y is None:
        return None
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (B, 1) -> (B,): the targets of a model with one output (BCEWithLogitsLoss)
    if y.ndim != 1:
        return None  # not class labels (a sequence's, a one-hot or soft target): correctness does not apply
    y = y.detach().cpu()
    return float_classes(y) if y.is_floating_point() else y.to(torch.int64)


def float_classes(y: torch.Tensor) -> torch.Tensor | None:
    """Float labels as classes (int64) when all are whole numbers — ``y.float()``, as a binary classifier trained
    with BCE reads them —, NaN as -1 (unlabelled); None when some have fractions (a regression target: no classes).

    >>> float_classes(torch.tensor([0.0, 1.0, float("nan")]))
    tensor([ 0,  1, -1])
    """
    nan = torch.isnan(y)
    if not (nan | (torch.isfinite(y) & (y == y.round()))).all():
        return None
    return torch.where(nan, -1, y).to(torch.int64)


@dataclass(frozen=True)
class Source:
    """How rows are read: a map-style dataset batched here, or an iterable already yielding batches."""

    data: Any
    length: int | None  # instances, when known before iterating
    map_style: bool
    batch_size: int
    collate: Callable[[list[Any]], Any] | None
    mask: PaddingMask | None = ATTENTION_MASK  # where dict batches hold their padding mask

    def batches(self, start: int) -> Iterator[Batch]:
        """Batches from row ``start`` on (earlier rows are skipped, not computed)."""
        if self.map_style:
            collate = self.collate or torch.utils.data.default_collate
            n = len(self.data)
            columns = columns_of(self.data) if self.collate is None else None
            many = getattr(self.data, "__getitems__", None)
            for lo in range(start, n, self.batch_size):
                hi = min(lo + self.batch_size, n)
                if columns is not None:  # slices of its columns, no per-item calls
                    yield to_batch(columns.take(slice(lo, hi)), self.mask)
                elif many is not None:  # the batched-fetch protocol DataLoader uses
                    yield to_batch(collate(many(list(range(lo, hi)))), self.mask)
                else:
                    yield to_batch(collate([self.data[i] for i in range(lo, hi)]), self.mask)
            return
        seen = 0
        for raw in self.data:
            b = to_batch(raw, self.mask)
            if seen + b.size > start:
                yield b.slice(max(0, start - seen), b.size) if seen < start else b
            seen += b.size


@dataclass(frozen=True)
class Columns:
    """A whole dataset given as columns of equal length — ``(X, y)``, ``{"input_ids": …, "label": …}``,
    ``(tokenizer(texts, return_tensors="pt"), y)``, a TensorDataset's tensors —: a batch is a slice of each (no
    per-instance calls), shaped as the columns are (one column alone: its tensor)."""

    parts: Any  # a tuple of tensors and dicts of tensors, or a dict of tensors
    n: int

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.take(i)

    def take(self, index: int | slice | torch.Tensor) -> Any:
        """Rows ``index`` of every column."""
        parts = self.parts[0] if isinstance(self.parts, tuple) and len(self.parts) == 1 else self.parts
        return _rows_of(parts, index)


def _rows_of(part: Any, index: int | slice | torch.Tensor) -> Any:
    if isinstance(part, torch.Tensor):
        return part[index]
    if isinstance(part, Mapping):
        return {k: _rows_of(v, index) for k, v in part.items()}
    return tuple(_rows_of(v, index) for v in part)


def columns_of(data: Any) -> Columns | None:
    """``data`` as :class:`Columns` when it is a whole dataset of columns (a TensorDataset; a tuple of two or more
    tensors or NumPy arrays of one length, its first maybe a dict of them; a dict of them), else None."""
    if isinstance(data, Columns):
        return data
    if type(data) is torch.utils.data.TensorDataset:
        return Columns(tuple(data.tensors), len(data))
    if isinstance(data, tuple) and len(data) > 1:
        return _tuple_columns(data)
    if isinstance(data, Mapping):
        parts = _column_dict(data)
    else:
        return None
    leaves = _leaves(parts) if parts is not None else [None]
    lengths = {len(t) for t in leaves} if all(t is not None for t in leaves) else set()
    if len(lengths) != 1 or 0 in lengths:
        return None
    return Columns(parts, lengths.pop())


def _tuple_columns(data: tuple) -> Columns | None:
    """``(X, y, …)`` as columns: ``X`` a tensor or array of instances (two or more dimensions) or a dict of them,
    every later item one value per instance (labels: a tensor, an array, a list, a pandas Series). Anything else is
    a tuple of batches (``torch.split``'s chunks), read as before."""
    first, rest = data[0], data[1:]
    if not (isinstance(first, Mapping) or getattr(first, "ndim", 0) >= 2):
        return None
    if any(getattr(r, "ndim", 1) != 1 for r in rest) or not all(
        isinstance(r, (torch.Tensor, np.ndarray, list, tuple)) or hasattr(r, "to_numpy") for r in rest
    ):
        return None  # later items of several dimensions: batches
    x = _column_dict(first) if isinstance(first, Mapping) else _column(first)
    if x is None or (isinstance(x, dict) and any(v is None for v in x.values())):
        return None
    parts = [x, *(_label_column(r, i + 1) for i, r in enumerate(rest))]
    lengths = [len(t) for t in _leaves(tuple(parts))]
    if len(set(lengths)) != 1:
        raise ValueError(f"deepscope.analyze: data (X, y, …) read as the whole dataset's columns, but their lengths "
                         f"differ: {', '.join(map(str, lengths))}")  # fmt: skip
    return Columns(tuple(parts), lengths[0]) if lengths[0] else None


def _label_column(values: Any, item: int = 1) -> torch.Tensor:
    """One value per instance as a tensor: integral floats (a pandas column with missing values) as int64, missing
    ones -1 (unlabelled); text refused with how to map it."""
    seq = list(values) if getattr(getattr(values, "dtype", None), "kind", "") == "O" else values  # object: strings?
    if _text_labels(seq) is not None:
        raise TypeError(f"deepscope.analyze: item {item} of (X, y) holds text labels: map them to classes 0, 1, "
                        "… (classes, y = np.unique(texts, return_inverse=True)) and pass "
                        "class_names=classes")  # fmt: skip
    if isinstance(values, torch.Tensor):  # whole numbers as classes, as an array's below
        classes = float_classes(values.detach().cpu()) if values.is_floating_point() and values.ndim == 1 else None
        return values if classes is None else classes
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):  # a pandas Series (nullable dtypes too)
        kind = getattr(values.dtype, "kind", "f")
        values = values.to_numpy(dtype="float64", na_value=np.nan) if kind in "biuf" else values.to_numpy()
    a = np.asarray(values)
    if a.dtype.kind == "f" and len(a) and np.all(np.isnan(a) | (a == np.round(a))):
        a = np.where(np.isnan(a), -1, a).astype(np.int64)  # whole numbers with gaps: classes, unlabelled where NaN
    column = _column(a)
    if column is None:
        raise TypeError(f"deepscope.analyze: item {item} of (X, y) holds {a.dtype} values, not numbers")
    return column


def _column(x: Any) -> torch.Tensor | None:
    """A tensor or numeric NumPy array with a first (instance) dimension, as a tensor; else None."""
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return x
    if isinstance(x, np.ndarray) and x.ndim > 0 and x.dtype.kind in "biuf":
        # NumPy's float64 default is rarely a model's: as float32, as torch's default dtype
        x = np.ascontiguousarray(x, np.float32 if x.dtype == np.float64 else None)
        return torch.from_numpy(x if x.flags.writeable else x.copy())  # a read-only view (pandas) is copied
    return None


def _frame_columns(df: Any) -> Columns:
    """A pandas DataFrame as data: its number columns are the input (N, F) float32, a label column (``label``,
    ``labels``, ``target``, ``targets``; whole numbers, missing ones unlabelled) the labels — a target of fractions is
    a regressor's: left out, no labels —; text or other columns belong in ``metadata=``."""
    label = next((k for k in FRAME_LABEL_KEYS if k in df.columns), None)
    inputs = df.drop(columns=[label]) if label is not None else df
    other = [str(c) for c, t in inputs.dtypes.items() if t.kind not in "biuf"]
    if other or not len(inputs.columns):
        raise TypeError("deepscope.analyze: a DataFrame as data is read as a table of numbers (its columns the "
                        "model's input, a 'label' column the labels); "
                        + (f"{', '.join(other[:5])} {'is' if len(other) == 1 else 'are'} no numbers — pass such "
                           "columns as metadata=df[[…]] and the numbers as data" if other else "it has no input "
                           "columns"))  # fmt: skip
    x = torch.from_numpy(np.ascontiguousarray(inputs.to_numpy(np.float32)))
    if label is None:
        return Columns((x,), len(x))
    try:
        y = _label_column(df[label])
    except TypeError:
        raise TypeError(f"deepscope.analyze: the DataFrame's {label!r} column holds no integer classes; map them to "
                        "0, 1, … and give their names as class_names") from None  # fmt: skip
    if y.is_floating_point():  # a regression target: no classes, and no input either
        return Columns((x,), len(x))
    return Columns((x, y), len(x))


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "dtypes") and hasattr(data, "to_numpy")


def _column_dict(d: Mapping[Any, Any]) -> dict[Any, torch.Tensor | None] | None:
    return {k: _column(v) for k, v in d.items()} if d else None


def _leaves(parts: Any) -> list[Any]:
    if isinstance(parts, Mapping):
        return list(parts.values())
    if isinstance(parts, tuple):
        return [leaf for p in parts for leaf in (_leaves(p) if isinstance(p, Mapping) else [p])]
    return [parts]


def source(data: Any, batch_size: int = 256, collate: Callable[[list[Any]], Any] | None = None,
           mask: PaddingMask | None = ATTENTION_MASK) -> Source:  # fmt: skip
    """Classify ``data``: a tensor, a map-style Dataset, a list of labelled instances, a DataLoader, or any other
    iterable of batches; ``mask``: where dict batches hold their padding mask."""
    return replace(_source(data, batch_size, collate), mask=mask)


def _source(data: Any, batch_size: int, collate: Callable[[list[Any]], Any] | None) -> Source:
    if isinstance(data, torch.Tensor):
        if data.ndim == 0:
            raise TypeError("deepscope.analyze: data is a single number; give a tensor of instances (first dimension)")
        return Source(Columns((data,), len(data)), len(data), True, batch_size, None)
    if _is_frame(data):
        columns = _frame_columns(data)
        return Source(columns, len(columns), True, batch_size, None)
    if (columns := columns_of(data)) is not None and not isinstance(data, torch.utils.data.Dataset):
        return Source(columns, len(columns), True, batch_size, None)
    if isinstance(data, Mapping):
        raise TypeError("deepscope.analyze: a dict as data is read as the whole dataset's columns — tensors or NumPy "
                        "arrays of one length (input_ids, attention_mask, label…, as a tokenizer returns with "
                        "return_tensors='pt'); " + _columns_mismatch(data))  # fmt: skip
    if isinstance(data, torch.utils.data.DataLoader):
        _check_order(data)
        n = _loader_length(data)
        bs = data.batch_sampler
        if n is not None and bs.drop_last and n % bs.batch_size:
            import warnings

            kept = (n // bs.batch_size) * bs.batch_size
            warnings.warn(f"deepscope.analyze: the DataLoader drops its last, partial batch (drop_last=True): "
                          f"{n - kept} of {n} instances are left out", RuntimeWarning,
                          stacklevel=user_stacklevel() + 1)  # fmt: skip
            n = kept
        return Source(data, n, False, batch_size, None)
    if isinstance(data, torch.utils.data.IterableDataset):  # instances (as a DataLoader expects) or batches
        return Source(_Batched(data, batch_size, collate), None, False, batch_size, None)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (Sequence, Mapping)):
        return Source(data, len(data), True, batch_size, collate)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if _is_listed_columns(data):
            raise TypeError("deepscope.analyze: data [X, y] is a list, read as a list of batches (X the first, y the "
                            "second); pass the whole dataset as a tuple (X, y)")  # fmt: skip
        if len(data) and _is_instance(data[0]):  # batched here, as a DataLoader would
            return Source(data, len(data), True, batch_size, collate)
        return Source(data, None, False, batch_size, None)  # a list of batches
    if isinstance(data, Iterable):
        return Source(data, None, False, batch_size, None)
    raise TypeError(f"deepscope.analyze: data must be a Dataset, a DataLoader or an iterable of batches, "
                    f"got {type(data).__name__}")  # fmt: skip


RANDOM_SAMPLERS = (torch.utils.data.RandomSampler, torch.utils.data.SubsetRandomSampler,
                   torch.utils.data.WeightedRandomSampler)  # fmt: skip
ORDERED_SAMPLERS = (torch.utils.data.SequentialSampler, range, list, tuple, np.ndarray)  # the same order on every pass


def _check_order(loader: torch.utils.data.DataLoader) -> None:
    """Refuse a DataLoader whose sampler or batch sampler shuffles (rows would be stored as other instances, and each
    pass over the data — resumes, feature maps — would read another order); warn of a sampler deepscope does not
    know."""
    if isinstance(loader.dataset, torch.utils.data.IterableDataset):
        return  # no sampler: the dataset's own order
    bs = loader.batch_sampler
    samplers = [loader.sampler] if bs is None else [getattr(bs, "sampler", None)]
    unknown = [] if bs is None or type(bs) is torch.utils.data.BatchSampler else [bs]
    for s in samplers:
        if isinstance(s, RANDOM_SAMPLERS) or (isinstance(s, torch.utils.data.DistributedSampler) and s.shuffle):
            raise ValueError("deepscope.analyze: the DataLoader shuffles; rows must come in order (shuffle=False, "
                             f"and no {type(s).__name__} in its sampler or batch_sampler)")  # fmt: skip
        if s is not None and not isinstance(s, (*ORDERED_SAMPLERS, torch.utils.data.DistributedSampler)):
            unknown.append(s)
    if unknown:
        import warnings

        warnings.warn(f"deepscope.analyze: the DataLoader's {type(unknown[0]).__name__} is no sampler deepscope "
                      "knows to keep one order; its rows are stored in the order it yields them, which must be the "
                      "same on every pass (a resume, feature maps) and that of labels= and metadata=",
                      RuntimeWarning, stacklevel=user_stacklevel() + 1)  # fmt: skip


def _loader_length(loader: torch.utils.data.DataLoader) -> int | None:
    """How many instances a DataLoader yields before its drop_last (see :func:`source`), when known: None for an
    iterable dataset, for batches made by the dataset itself (``batch_size=None``: each item is a batch) and for a
    batch sampler of its own sizes."""
    ds = loader.dataset
    if not hasattr(ds, "__len__") or isinstance(ds, torch.utils.data.IterableDataset):
        return None
    bs = loader.batch_sampler
    if bs is None or type(bs) is not torch.utils.data.BatchSampler:
        return None
    sampler = bs.sampler
    return len(sampler) if hasattr(sampler, "__len__") else len(ds)  # a sampler over part of the dataset: that part


class _Batched:
    """An iterable dataset's items: collated into batches of ``size`` when they are instances (as a DataLoader would),
    passed on as they are when they are batches. Decided on the first item of each pass, which is read once (a
    single-pass dataset loses nothing)."""

    def __init__(self, data: Iterable[Any], size: int, collate: Callable[[list[Any]], Any] | None) -> None:
        self.data, self.size, self.collate = data, size, collate or torch.utils.data.default_collate

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.data)
        first = next(it, _END)
        if first is _END:
            return
        if not _is_instance(first):
            yield first
            yield from it
            return
        items: list[Any] = []
        for item in itertools.chain([first], it):
            items.append(item)
            if len(items) == self.size:
                yield self.collate(items)
                items = []
        if items:
            yield self.collate(items)


_END = object()


def _is_listed_columns(data: Sequence[Any]) -> bool:
    """Whether a list is ``[X, y]``: inputs of two or more dimensions and one label per row of them."""
    if not isinstance(data, list) or len(data) != 2:
        return False
    x, y = data
    arrays = (torch.Tensor, np.ndarray)
    return isinstance(x, arrays) and isinstance(y, arrays) and x.ndim >= 2 and y.ndim == 1 and len(x) == len(y)


def _is_instance(item: Any) -> bool:
    """Whether a list's item is one instance, not a batch: its label is a single number (``(x, 3)``,
    ``{"x": x, "label": 3}``). Unlabelled items are read as batches."""
    if isinstance(item, Mapping):
        label = next((item[k] for k in LABEL_KEYS if k in item), None)
    elif isinstance(item, (tuple, list)) and len(item) > 1:
        label = item[1]
    else:
        return False
    if isinstance(label, torch.Tensor):
        return label.ndim == 0
    return isinstance(label, (numbers.Number, np.generic)) or (isinstance(label, np.ndarray) and label.ndim == 0)


def _columns_mismatch(d: Mapping[Any, Any]) -> str:
    shapes = ", ".join(f"{k}: {tuple(v.shape) if hasattr(v, 'shape') else type(v).__name__}" for k, v in d.items())
    return f"this one holds {shapes or 'nothing'}"


def current_length(src: Source) -> int | None:
    """The dataset's length now (to catch a dataset that changes while it is read)."""
    if src.map_style:
        return len(src.data)
    return src.length
