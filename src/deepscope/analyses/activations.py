"""Activations: every instance's activation of the named layers, pooled to one vector, with the model's predictions.

Written to ``<run_dir>/artifacts/activations/`` (docs/store-format.md, "Artifacts: analyses"). Rows are written
in chunks; ``progress.json`` records the rows on disk, so a run interrupted at any point resumes after them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..notices import notice
from ..store.runmeta import write_json_atomic
from .aggregates import SPECIAL_KEYS
from .base import RESERVED_COLUMNS, artifact_dir, decoded, model_class, provenance, read_json, write_provenance
from .batches import Batch, PaddingMask, Source, current_length, padding_mask, source
from .chunk_files import aligned_empty, write_chunk_file
from .class_scores import top_class

NAME = "activations"
NEXT_SUFFIX = ".next"  # a new analysis computed beside a finished one, which it replaces when complete
OLD_SUFFIX = ".old"  # the finished one, between the renames that swap the new one in
CHUNK_BYTES = 8 << 20  # rows per chunk: about 8 MiB of the widest array
PREVIEW_SIDE = 64  # image previews: the longer side at most this many pixels
PREVIEW_KWARGS = ("pixel_values", "images", "image", "x")  # dict batches: where an image input is looked for
# Modules whose 3-d outputs are (B, C, L) with channels first; other 3-d outputs are sequences (B, T, D).
CHANNELS_FIRST_1D = (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.InstanceNorm1d, nn.MaxPool1d, nn.AvgPool1d,
                     nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)  # fmt: skip


def is_feature_map(t: torch.Tensor, module: nn.Module) -> bool:
    """Feature maps: (B, C, H, W) outputs, and (B, C, L) outputs of 1-d convolutions, pooling and norms."""
    return t.ndim == 4 or (t.ndim == 3 and isinstance(module, CHANNELS_FIRST_1D))


@dataclass(frozen=True)
class ActivationsConfig:
    """``layers``: module paths as in ``model.named_modules()``, ``""`` for the model itself (default: the model's
    children; a ``ModuleList`` or ``ModuleDict`` child stands for its own; the model itself when it has none).

    ``sequence_pooling``: ``"mean"`` (over real tokens when the batch has a padding mask) or ``"last"``
    (the last real token). ``mask``: the dict batches' padding mask — None for ``attention_mask`` when present, a
    key whose true values mark real tokens, ``(key, "padding")`` for one whose true values mark padding (PyTorch's
    ``src_key_padding_mask``), or False for none (:func:`.batches.padding_mask`). ``scores``: ``"softmax"`` of the
    output logits, ``"raw"`` outputs, or ``"none"``: the outputs are no class scores (an embedding model, a
    regressor): no predictions, scores or accuracy.
    """

    layers: tuple[str, ...] | None = None
    batch_size: int = 256
    sequence_pooling: str = "mean"
    mask: str | tuple[str, str] | bool | None = None
    scores: str = "softmax"
    chunk_rows: int | None = None
    resume: bool = True
    progress: bool = True
    previews: bool = True

    def __post_init__(self) -> None:
        if self.sequence_pooling not in ("mean", "last"):
            raise ValueError(f"deepscope.analyze: sequence_pooling is 'mean' or 'last', not {self.sequence_pooling!r}")
        if self.scores not in ("softmax", "raw", "none"):
            raise ValueError(f"deepscope.analyze: scores must be 'softmax', 'raw' or 'none', not {self.scores!r}")
        if self.batch_size < 1 or (self.chunk_rows is not None and self.chunk_rows < 1):
            raise ValueError("deepscope.analyze: batch_size and chunk_rows must be positive")
        padding_mask(self.mask)  # a malformed one is refused here, before any work

    @property
    def padding(self) -> PaddingMask | None:
        """Where dict batches hold their padding mask (None: nowhere)."""
        return padding_mask(self.mask)


MODEL_LAYER = "(model)"  # how the model itself (``""`` in ``named_modules()``) is named once recorded: a module's
# name holds no "." and is never empty, and the name must be a file's and a query's


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules by their recorded names: ``named_modules()``'s, the model itself as :data:`MODEL_LAYER`."""
    return {name or MODEL_LAYER: module for name, module in model.named_modules()}


def class_name_list(names: Any) -> list[str] | None:
    """Class names as a list, class ``i`` at ``i``: a sequence, or a mapping from class index to name (a Hugging Face
    config's ``id2label``, its keys integers or their text)."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise TypeError(f"deepscope.analyze: class_names is one string ({str(names)[:40]!r}); give a list of names, "
                        "one per class")  # fmt: skip
    if isinstance(names, Mapping):
        try:
            by_index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise TypeError(
                "deepscope.analyze: class_names as a dict maps class indices (0, 1, … or '0', '1', …) "
                f"to names, as a config's id2label does; its keys are {list(names)[:5]}"
            ) from None
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"deepscope.analyze: class_names as a dict needs every class index from 0 to "
                             f"{len(by_index) - 1}; it has {sorted(by_index)[:10]}")  # fmt: skip
        return [by_index[i] for i in range(len(by_index))]
    return [str(c) for c in names]


GLOB_CHARS = "*?["


def expand_layers(model: nn.Module, layers: Any) -> list[str] | None:
    """``layers`` as module paths: a path, a glob on paths (``"encoder.*"``: every module under ``encoder``,
    containers too), a list of them, or ``f(path, module) -> bool`` (asked of every module; one it raises for is not
    chosen) — matches in the model's order. A glob or function that matches
    nothing raises ``ValueError``."""
    if layers is None:
        return None
    paths = [(name, module) for name, module in model.named_modules() if name] if isinstance(model, nn.Module) else []
    if callable(layers) and not isinstance(layers, str):
        chosen = [name for name, module in paths if _chooses(layers, name, module)]
        if not chosen:
            raise ValueError("deepscope.analyze: the layers function chose no module")
        return chosen
    out: list[str] = []
    for entry in [layers] if isinstance(layers, str) else list(layers):
        if not isinstance(entry, str):
            raise TypeError(f"deepscope.analyze: layers are module paths (text), globs or a function, not "
                            f"{type(entry).__name__}")  # fmt: skip
        if not any(c in entry for c in GLOB_CHARS):
            out += [entry] if entry not in out else []  # named again after a glob matched it: once
            continue
        hits = [name for name, _ in paths if fnmatch.fnmatchcase(name, entry)]
        if not hits:
            raise ValueError(f"deepscope.analyze: no layer matches {entry!r}; layers: "
                             f"{', '.join(n for n, _ in paths[:40])}{', …' if len(paths) > 40 else ''}")  # fmt: skip
        out += [h for h in hits if h not in out]
    return out


def _chooses(fn: Callable[[str, nn.Module], Any], name: str, module: nn.Module) -> bool:
    """Whether a layers function chooses a module; one that raises (it expected a leaf: ``m.out_features``) does not."""
    try:
        return bool(fn(name, module))
    except Exception:
        return False


def validate_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The layers to record, by their recorded names (the model itself, ``""``, is :data:`MODEL_LAYER`); an unknown
    name raises ``ValueError`` listing the valid ones."""
    if layers is None:
        return _unclashing([name or MODEL_LAYER for name in default_layers(model)])
    if isinstance(layers, str):
        layers = [layers]
    layers = [MODEL_LAYER if name == "" else name for name in layers]
    valid = [name for name, _ in model.named_modules() if name]
    if not layers:
        shown = ", ".join(valid[:60]) + (", …" if len(valid) > 60 else "")
        raise ValueError(f"deepscope.analyze: no layers given; name some (valid layers: {shown}) or leave layers "
                         "out for the model's children")  # fmt: skip
    known = {MODEL_LAYER, *valid}  # the model itself, "" as named_modules() names it
    unknown = [name for name in layers if name not in known]
    if unknown:
        shown = ", ".join(valid[:60]) + (f", … ({len(valid) - 60} more)" if len(valid) > 60 else "")
        raise ValueError(f"deepscope.analyze: no layer named {', '.join(map(repr, unknown))} in "
                         f"{type(model).__name__}; valid layers: {shown or 'none but the model'}, and '' for the "
                         "model itself")  # fmt: skip
    if len(set(layers)) != len(layers):
        twice = sorted({name for name in layers if layers.count(name) > 1})
        raise ValueError(f"deepscope.analyze: {', '.join(map(repr, twice))} named twice in layers")
    return _unclashing(list(layers))


def default_layers(model: nn.Module) -> list[str]:
    """The model's children — a container that is never called itself (``ModuleList``, ``ModuleDict``) stands for its
    own children, recursively —, or the model itself (``""``) when it has none."""
    out: list[str] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if type(child).forward is nn.Module.forward:  # never called (a ModuleList; an empty one adds nothing)
                walk(path, child)
            else:
                out.append(path)

    walk("", model)
    return out or [""]


def _unclashing(layers: list[str]) -> list[str]:
    """``layers``, if each can name its array's file. A module name may hold "/" (``add_module`` allows it): each
    layer's array is the file "<name>.zarr", which must not be the scores', labels' or previews' arrays, nor lie
    outside the analysis (an absolute path, "..")."""
    clash = [n for n in layers if n.startswith(("outputs/", "inputs/", "/")) or ".." in n.split("/") or "\\" in n]
    if clash:
        raise ValueError(f"deepscope.analyze: layer names {', '.join(map(repr, clash))} cannot name their arrays' "
                         "files (outputs/ and inputs/ hold the scores, labels and previews; a name must not be a path "
                         "outside the analysis); record other modules (layers=...), or rename them")  # fmt: skip
    return layers


def pool(x: torch.Tensor, mask: torch.Tensor | None, channels_first: bool, mode: str = "mean") -> torch.Tensor:
    """One vector per instance: channel means of feature maps, a (masked) mean or last token of sequences.

    >>> pool(torch.ones(8, 16, 7, 7), None, False).shape
    torch.Size([8, 16])
    """
    if x.ndim == 1:
        return x[:, None]  # (B,) -> (B, 1)
    if x.ndim == 2:
        return x
    if x.ndim >= 4 or channels_first:
        return x.flatten(2).mean(2)  # (B, C, H, W, ...) -> (B, C, H*W...) -> (B, C)
    # (B, T, D): a sequence
    if mask is not None and mask.shape == x.shape[:2]:
        real = mask != 0
        if mode == "last":
            t = torch.arange(x.shape[1], device=x.device)
            last = (t * real).argmax(1)  # index of the last real token, left or right padding alike
            return x[torch.arange(x.shape[0], device=x.device), last]  # (B, T, D) -> (B, D)
        m = real.to(x.dtype).unsqueeze(-1)  # (B, T) -> (B, T, 1)
        return (x * m).sum(1) / m.sum(1).clamp(min=1)  # (B, T, D) -> (B, D)
    return x[:, -1] if mode == "last" else x.mean(1)


def padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` as a regular tensor: a nested one (``nn.TransformerEncoder``'s fast path in eval mode drops the padding
    tokens) padded back with zeros to the batch's ``(B, T)`` mask, so that its rows line up with the mask."""
    if not x.is_nested:
        return x
    if mask is not None and mask.ndim == 2:
        return x.to_padded_tensor(0.0, output_size=(mask.shape[0], mask.shape[1], x.size(-1)))
    return x.to_padded_tensor(0.0)


def first_tensor(out: Any) -> torch.Tensor | None:
    """The tensor a module returned: itself, the first of a tuple, or ``logits`` / the first value of a dict."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for o in out if (t := first_tensor(o)) is not None), None)
    if isinstance(out, dict) or hasattr(out, "keys"):
        if "logits" in out:
            return first_tensor(out["logits"])
        return next((t for k in out.keys() if (t := first_tensor(out[k])) is not None), None)
    return None


# Modules that read (B, T, F) sequences: a model with one reads its 3-d inputs as sequences, not grey images.
SEQUENCE_MODULES = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                    nn.Conv1d)  # fmt: skip


def reads_sequences(model: nn.Module) -> bool:
    """Whether ``model`` holds a module that reads sequences (:data:`SEQUENCE_MODULES`)."""
    return any(isinstance(m, SEQUENCE_MODULES) for m in model.modules())


def image_input(batch: Batch, sequences: bool = False) -> torch.Tensor | None:
    """The batch's input when it looks like images: (B, C, H, W) with C of 1 or 3, or (B, H, W), of floats or bytes
    — unless ``sequences`` (the model reads sequences: a (B, T, F) input is one).

    The first positional input, else a keyword input named like ``pixel_values``; sides of at least 4 pixels.
    """
    x = batch.args[0] if batch.args else next((batch.kwargs[k] for k in PREVIEW_KWARGS if k in batch.kwargs), None)
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.dtype == torch.uint8):
        return None
    if x.ndim == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 4:
        return x
    if x.ndim == 3 and min(x.shape[1:]) >= 4 and not sequences:
        return x[:, None]  # (B, H, W) -> (B, 1, H, W)
    return None


MAX_STORED_FEATURES = 64  # a table's inputs up to this many numbers an instance are stored (wider: an embedding)


def feature_input(batch: Batch) -> torch.Tensor | None:
    """The batch's input when it is a row of numbers per instance (a table's features): the first positional input,
    (B, F) floating with F ≤ ``MAX_STORED_FEATURES``; else None."""
    x = batch.args[0] if batch.args else None
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 2 and 0 < x.shape[1] <= MAX_STORED_FEATURES:
        return x
    return None


def input_kind(batch: Batch, sequences: bool = False) -> str:
    """What the model reads: ``"images"`` (see :func:`image_input`), ``"tokens"`` (integer ids: text) or
    ``"features"`` (numbers of a table, an embedding, a sequence…)."""
    if image_input(batch, sequences) is not None:
        return "images"
    x = batch.args[0] if batch.args else batch.kwargs.get("input_ids", next(iter(batch.kwargs.values()), None))
    if isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool:
        return "tokens"
    return "features"


def preview_size(height: int, width: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    """The preview's (h, w): the image scaled down so that its longer side is at most ``side``."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def preview(x: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Images (B, C, H, W) as small uint8 previews (B, h, w, channels): area-downscaled to ``size``, then each
    instance min–max scaled to 0…255 on its own (a constant image is black).

    >>> preview(torch.randn(2, 3, 224, 224), (64, 64), 3).shape
    torch.Size([2, 64, 64, 3])
    """
    x = x.detach().float().nan_to_num()
    if tuple(x.shape[2:]) != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="area")  # (B, C, H, W) -> (B, C, h, w)
    if x.shape[1] != channels:  # a later batch in the other mode: grey <-> colour
        x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
    lo = x.amin((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    span = x.amax((1, 2, 3), keepdim=True) - lo
    x = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return (x * 255).round_().to(torch.uint8).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)


def integer_labels(labels: Any) -> np.ndarray:
    """One integer class per instance (int64; -1, or None in a list, for an unlabelled instance), or a ``ValueError``
    (floats with fractions are not classes)."""
    if isinstance(labels, (list, tuple)) and any(v is None for v in labels):
        labels = [-1 if v is None else v for v in labels]
    if isinstance(labels, (list, tuple)) and any(isinstance(v, str) for v in labels):
        raise ValueError("deepscope.analyze: labels must be integer class indices, got strings (class names?): pass "
                         "the indices as labels and the names as class_names")  # fmt: skip
    try:
        y = np.asarray(torch.as_tensor(labels).cpu())
    except (TypeError, ValueError) as e:
        raise ValueError(f"deepscope.analyze: labels must be one integer class index per instance ({e})") from e
    if y.ndim != 1:
        raise ValueError(f"deepscope.analyze: labels must be one integer per instance, not an array of shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError("deepscope.analyze: labels must be integer class indices; got non-integer floats "
                             "(a regression target is no class: leave labels out, or pass it as metadata)")  # fmt: skip
    elif y.dtype.kind not in "iub":
        raise ValueError(f"deepscope.analyze: labels must be integer class indices, got {y.dtype}")
    if len(y) and y.min() < -1:
        i = int(np.argmax(y < -1))
        raise ValueError(f"deepscope.analyze: label {int(y[i])} of instance {i} is no class index (0 and up; -1 marks "
                         "an unlabelled instance)")  # fmt: skip
    return y.astype(np.int64)


def replace_dir(new: Path, old: Path) -> None:
    """Put directory ``new`` in the place of ``old``: renames, then the old one is removed (``recover_swap`` finishes
    the job after a crash between the renames)."""
    trash = old.with_name(old.name + OLD_SUFFIX)
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(old, trash)
    os.rename(new, old)
    shutil.rmtree(trash, ignore_errors=True)


def rows_kept(run_dir: str | os.PathLike[str]) -> int:
    """Rows of an unfinished analysis of the run on disk (what a resume starts after): 0 when none."""
    final = artifact_dir(run_dir, NAME)
    for d in (final.with_name(final.name + NEXT_SUFFIX), final):
        progress = read_json(d / "progress.json")
        if progress and not progress.get("complete"):
            return int(progress.get("rows_done", 0))
    return 0


def read_progress(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``progress.json`` of its latest analysis, or None."""
    return read_json(artifact_dir(run_dir, NAME) / "progress.json")


def unfinished_reason(run_dir: str | os.PathLike[str]) -> str | None:
    """Why the run has no finished analysis, where an unfinished one lies on disk: stopped (interrupted, or failed:
    the error), or still running — with its rows; ``None`` where there is none."""
    progress = read_progress(run_dir)
    if not progress or progress.get("complete"):
        return None
    rows, length = int(progress.get("rows_done", 0)), progress.get("fingerprint", {}).get("length")
    where = f"{rows:,} of {length:,} rows" if isinstance(length, int) else f"{rows:,} rows"
    stopped = progress.get("stopped")
    if stopped == "interrupted":
        return f"its analysis was interrupted after {where}: call deepscope.analyze again the same way to resume it"
    if stopped:
        return f"its analysis failed after {where}: {stopped}"
    return f"its analysis is under way or was stopped without a word (a killed process) after {where}"


def recover_swap(final: Path) -> None:
    """After a crash inside ``replace_dir``: the complete new analysis, else the old one, back in place."""
    trash = final.with_name(final.name + OLD_SUFFIX)
    if not final.exists():
        for candidate in (final.with_name(final.name + NEXT_SUFFIX), trash):
            progress = read_json(candidate / "progress.json")
            if progress and progress.get("complete"):
                os.rename(candidate, final)
                break
    shutil.rmtree(trash, ignore_errors=True)


def weights_digest(model: nn.Module) -> str:
    """A digest of the parameters and buffers: a resume with other weights starts over."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode())
        h.update(memoryview(t.detach().to("cpu", torch.float32).contiguous().numpy()).cast("B"))  # no copy
    return h.hexdigest()


DIGEST_ROWS = 64  # the first rows of the data, whose digest tells a resume that the data is the same
TAIL_ROWS = 16  # ... and the rows just before the resume point (data changed further in: not mixed in either)


def rows_digest(batches: Iterable[Batch], n: int) -> str | None:
    """A digest of the first ``n`` rows the batches hold, row by row (the same however they are batched); None when
    they hold fewer."""
    h = hashlib.blake2b(digest_size=16)
    left = n
    for batch in batches:
        part = batch.slice(0, left)
        values = [*part.args, *(part.kwargs[k] for k in sorted(part.kwargs)), part.labels]
        tensors = [v.detach().to("cpu").contiguous() for v in values if isinstance(v, torch.Tensor)]
        for i in range(part.size):
            for t in tensors:
                row = t[i]
                h.update(f"{t.dtype}{tuple(row.shape)}".encode())
                h.update(memoryview(row.reshape(-1).view(torch.uint8).numpy() if t.dtype != torch.bool else
                                    row.reshape(-1).to(torch.uint8).numpy()).cast("B"))  # fmt: skip
        left -= part.size
        if left <= 0:
            return h.hexdigest()
    return None


def batch_digest(batch: Batch) -> str:
    """A digest of a batch's first rows — inputs, keyword inputs, labels —: an interrupted analysis resumes only over
    the same data (same length and weights, other images would mix two datasets in one result)."""
    part = batch.slice(0, DIGEST_ROWS)
    h = hashlib.blake2b(digest_size=16)
    values = [*part.args, *(part.kwargs[k] for k in sorted(part.kwargs)), part.labels]
    for v in values:
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(memoryview(t.view(torch.uint8).numpy() if t.dtype == torch.bool else
                                t.flatten().view(torch.uint8).numpy()).cast("B"))  # fmt: skip
        else:
            h.update(repr(type(v)).encode())
    return h.hexdigest()


def labels_digest(labels: np.ndarray | None) -> str | None:
    return (
        None if labels is None else hashlib.blake2b(np.ascontiguousarray(labels).tobytes(), digest_size=16).hexdigest()
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between an interrupted analysis's fingerprint and this one's, in words."""
    words = {"model_class": "the model's class", "weights": "the weights", "layers": "the layers",
             "length": "the data's length", "labels": "the labels", "sequence_pooling": "sequence_pooling",
             "scores": "scores", "previews": "previews", "mask": "mask"}  # fmt: skip
    return [words.get(k, k) for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]


# Keys of a subset filter that are not column names (aggregates.subset_mask): no metadata column may be one.
FILTER_WORDS = tuple(k for k in SPECIAL_KEYS if k not in RESERVED_COLUMNS)


def _metadata_column(name: Any, values: Any) -> Any:
    """One column of a dict of columns, as Arrow; a column of mixed types is named in the error."""
    import pyarrow as pa

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return pa.array(values if isinstance(values, np.ndarray) else list(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise TypeError(f"deepscope.analyze: metadata column {str(name)!r} cannot be stored ({e}); give it one "
                        f"value per instance, all of one type (all numbers, or all strings)") from None  # fmt: skip


def metadata_table(metadata: Any) -> Any:
    """The user's metadata as a ``pyarrow.Table`` (from a Table, a DataFrame, a dict of columns, rows, or texts)."""
    import pyarrow as pa

    try:
        if metadata is None or isinstance(metadata, pa.Table):
            table = metadata
        elif hasattr(metadata, "to_arrow"):
            table = metadata.to_arrow()
        elif hasattr(metadata, "to_frame") and hasattr(metadata, "iloc"):  # a pandas Series: one column
            table = pa.Table.from_pandas(metadata.to_frame(str(metadata.name or "value")), preserve_index=False)
        elif hasattr(metadata, "iloc"):  # a pandas DataFrame
            table = pa.Table.from_pandas(metadata, preserve_index=False)
        elif isinstance(metadata, dict):
            table = pa.table({str(k): _metadata_column(k, v) for k, v in metadata.items()})
        elif isinstance(metadata, Sequence) and metadata and all(isinstance(r, dict) for r in metadata):
            table = pa.Table.from_pylist(list(metadata))
        elif isinstance(metadata, Sequence) and all(isinstance(r, str) for r in metadata):
            table = pa.table({"text": list(metadata)})
        else:
            raise TypeError(f"deepscope.analyze: metadata must be a table, a dict of columns or a list of rows, "
                            f"got {type(metadata).__name__}")  # fmt: skip
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise TypeError(f"deepscope.analyze: metadata cannot be stored as a table ({e}); each column needs one "
                        f"value per instance, all of one type (all numbers, or all strings)") from None  # fmt: skip
    if table is not None:
        table = midnights_as_dates(decoded(table))
    if table is not None and (clash := [c for c in table.column_names if c in RESERVED_COLUMNS]):
        raise ValueError(f"deepscope.analyze: metadata columns {clash} clash with the instance table's own "
                         f"columns {list(RESERVED_COLUMNS)}; rename them")  # fmt: skip
    if table is not None and (clash := [c for c in table.column_names if c in FILTER_WORDS]):
        raise ValueError(f"deepscope.analyze: metadata columns {clash} are words of subset filters "
                         f"({', '.join(FILTER_WORDS)}); rename them")  # fmt: skip
    return table


def midnights_as_dates(table: Any) -> Any:
    """Columns of times without a zone that are all at midnight (a pandas column of dates is ``datetime64``) as
    dates: shown as ``2024-01-24``, filtered with date inputs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            col = table.column(i)
            if col.null_count < len(col) and pc.all(pc.equal(col, pc.floor_temporal(col, unit="day"))).as_py():
                table = table.set_column(i, field.name, col.cast(pa.date32()))
    return table


def checked_text_column(text_column: str | bool | None, metadata: Any) -> str | bool | None:
    """``text_column``: None (found by the reader), False (the inputs are no text), or a metadata column of
    strings, which the inputs are shown as."""
    import pyarrow as pa

    if text_column is None or text_column is False:
        return text_column
    if not isinstance(text_column, str):
        raise TypeError(f"deepscope.analyze: text_column is a metadata column's name, False or None, not "
                        f"{text_column!r}")  # fmt: skip
    names = [] if metadata is None else metadata.column_names
    if text_column not in names:
        raise ValueError(f"deepscope.analyze: text_column {text_column!r} is no metadata column "
                         f"({', '.join(names) or 'no metadata given'})")  # fmt: skip
    kind = metadata.schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"deepscope.analyze: text_column {text_column!r} holds {kind}, not text")
    return text_column


class Activations:
    """Record pooled activations of ``layers`` and the model's predictions for every instance of a dataset.

    >>> Activations(ActivationsConfig(layers=("features",)), labels=y).run(run.dir, model, dataset)
    """

    name = NAME

    def __init__(
        self,
        config: ActivationsConfig | None = None,
        *,
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        metadata: Any = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        text_column: str | bool | None = None,
    ) -> None:
        self.config = config or ActivationsConfig()
        self.labels = None if labels is None else integer_labels(labels)
        if self.labels is not None and len(self.labels) and (self.labels < 0).all():
            self.labels = None  # every instance unlabelled: no labels (-1 stands for "no label")
        self._unlabelled_only = labels is not None and self.labels is None
        self.class_names = class_name_list(class_names)
        self.metadata = metadata_table(metadata)
        self.collate_fn = collate_fn
        self.text_column = checked_text_column(text_column, self.metadata)

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        return isinstance(model, nn.Module) and (hasattr(data, "__iter__") or hasattr(data, "__getitem__"))

    # ---- checks before any work ---------------------------------------------------------------------
    def _given_counts(self) -> dict[str, int]:
        """How many labels and metadata rows were given (each must match the instances)."""
        counts = {}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if self.metadata is not None:
            counts["metadata rows"] = self.metadata.num_rows
        return counts

    def _check(self, model: nn.Module, src: Source) -> list[str]:
        layers = validate_layers(model, self.config.layers)
        n = src.length
        if n == 0:
            raise ValueError("deepscope.analyze: the data has no instances")
        for what, count in self._given_counts().items():
            if n is not None and count != n:
                raise ValueError(f"deepscope.analyze: {count} {what} for a dataset of {n} instances")
        y, names = self.labels, self.class_names
        if y is not None and names is not None and len(y) and y.max() >= len(names):
            raise ValueError(f"deepscope.analyze: labels range up to {y.max()}, "
                             f"but there are {len(names)} class names")  # fmt: skip
        return layers

    def _judged_labels(self, data_labels: np.ndarray | None) -> np.ndarray | None:
        """The labels the outputs are judged by: those given (none when every given one is -1, "unlabelled"), else
        the batches'."""
        if self._unlabelled_only:
            return np.zeros(0, np.int64)
        return self.labels if self.labels is not None else data_labels

    def _one_logit_is_binary(self, data_labels: np.ndarray) -> bool:
        """At the first batch of a model with one output per instance: whether it is a binary classifier's logit
        (scores then 1 - σ(z) and σ(z)) — with two class names, or labels of 0 and 1 only —, not a regressor's value."""
        if self.config.scores == "none":
            return False
        if self.class_names is not None:
            return len(self.class_names) == 2
        y = self._judged_labels(data_labels)
        known = y[y >= 0]
        return bool(len(known)) and int(known.max()) <= 1

    def _outputs_are_scores(self, width: int, data_labels: np.ndarray) -> bool:
        """At the first batch, once the model's output width is known: whether its outputs are scores of the classes
        (one per class name, one for every label). If not (an embedding model, a regressor, a padded head), one
        warning, and predictions, scores and accuracy are left out."""
        if self.config.scores == "none":
            return False  # the user says so: no warning
        names = self.class_names
        y = self._judged_labels(data_labels)
        why = None
        if names is not None and len(names) != width:
            why = f"{len(names)} class names"
        elif len(y) and y.max() >= width:
            why = f"labels up to {y.max()}"
        if why is None:
            return True
        warnings.warn(f"deepscope.analyze: the model's {width} outputs are no scores of its classes ({why}): "
                      "predictions, scores and accuracy are left out", RuntimeWarning, stacklevel=2)  # fmt: skip
        return False

    def _warn_if_wide(self, outputs: dict[str, np.ndarray] | None) -> None:
        """Once every label is known: outputs taken as class scores that far outnumber the classes the labels name
        may be no class scores at all (an embedding) — one warning that names ``scores='none'``."""
        scores = None if outputs is None else outputs.get("scores")
        y = self._judged_labels(None if outputs is None else outputs.get("labels"))
        if scores is None or y is None or not len(y) or self.class_names is not None:
            return
        width, classes = scores.shape[1], int(y.max()) + 1  # the labels name classes 0 … classes - 1
        if classes >= 2 and width >= 2 * classes:
            warnings.warn(f"deepscope.analyze: the model's {width} outputs were taken as scores of classes, though "
                          f"the labels name only {classes} (0 to {classes - 1}); if they are no class scores (an "
                          "embedding), analyse with scores='none' (--scores none)", RuntimeWarning,
                          stacklevel=3)  # fmt: skip

    def check(self, model: nn.Module, data: Any) -> list[str]:
        """What can be checked before any work (layers, counts of labels and metadata rows, class names); returns
        the layers."""
        return self._check(model, source(data, self.config.batch_size, self.collate_fn, self.config.padding))

    def run(self, run_dir: str | os.PathLike[str], model: nn.Module, data: Any) -> Path:
        """Compute (or resume) the activations; returns the artifact directory."""
        cfg = self.config
        src = source(data, cfg.batch_size, self.collate_fn, cfg.padding)
        layers = self._check(model, src)
        out_dir = artifact_dir(run_dir, NAME)
        fingerprint = {
            "model_class": model_class(model),
            "weights": weights_digest(model),
            "layers": layers,
            "length": src.length,
            "sequence_pooling": cfg.sequence_pooling,
            "scores": cfg.scores,
            "previews": cfg.previews,
        }
        if self.labels is not None:
            fingerprint["labels"] = labels_digest(self.labels)
        if cfg.mask is not None:  # a padding mask other than the default changes every pooled sequence
            fingerprint["mask"] = list(cfg.mask) if isinstance(cfg.mask, (tuple, list)) else cfg.mask
        # A finished analysis stays in place, and in the dashboard, until the new one is complete: the new one is
        # computed beside it (and resumed there after an interruption), then takes its place.
        final = out_dir
        recover_swap(final)
        done = read_json(final / "progress.json")
        if done and done.get("complete"):
            out_dir = final.with_name(final.name + NEXT_SUFFIX)
        progress = read_json(out_dir / "progress.json") if cfg.resume else None
        if progress and not progress.get("complete") and not self._resumable(progress, fingerprint, src):
            progress = None
        if progress:
            state = _State.reopen(out_dir, progress)
            if not cfg.progress:  # the progress bar says where it starts; without it, a line does
                print(f"deepscope.analyze: resuming after {state.rows_done:,} rows kept", file=sys.stderr)
        else:
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            state = _State(out_dir, fingerprint, cfg.chunk_rows)
        started = time.time()
        from .extraction import Extractor

        modules = layer_modules(model)
        limit = min(self._given_counts().values(), default=None)  # data of unknown length may not yield more
        names = None if self.class_names is None else len(self.class_names)
        extractor = Extractor(
            model,
            [(n, modules[n]) for n in layers],
            cfg,
            src,
            state,
            limit,
            self._outputs_are_scores,
            names,
            self._one_logit_is_binary,
            labels_given=self.labels is not None or self._unlabelled_only,
        )
        tabled: list[int] = []

        def table_while_writing(n: int) -> None:
            self._check_rows(src, n)
            if (kept := extractor.outputs_in_memory()) is not None:  # else read back, once on disk
                self._write_instances(out_dir, n, kept)
                tabled.append(n)

        try:
            extractor.extract(table_while_writing)
        except BaseException as e:  # why it stopped, for the dashboard (and for the next call: resumed or not)
            state.stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"[:500]
            state.save()
            if isinstance(e, KeyboardInterrupt) and hasattr(e, "add_note"):  # shown under the traceback (3.11+)
                e.add_note(f"deepscope.analyze: {state.rows_done:,} rows are kept: call it again the same way to "
                           "resume after them")  # fmt: skip
            raise
        n = state.rows_done
        if n == 0:
            raise ValueError("deepscope.analyze: the data has no instances")
        self._warn_if_wide(extractor.outputs_in_memory())
        if tabled != [n]:
            self._write_instances(out_dir, n)
        write_provenance(out_dir, provenance(NAME, asdict(cfg) | {"layers": layers}, model_class=model_class(model),
                                             layers={k: state.widths[k] for k in layers}, length=n,
                                             started=started, class_names=self.class_names))  # fmt: skip
        state.finish()
        if out_dir != final:
            replace_dir(out_dir, final)
        return final

    def _resumable(self, progress: dict[str, Any], fingerprint: dict[str, Any], src: Source) -> bool:
        """Whether an interrupted analysis continues with this call: same fingerprint, and the same first rows of
        data — and, for data read directly (a Dataset), the same rows just before the resume point. Where it does not,
        one line says why it starts over."""
        rows = int(progress.get("rows_done", 0))
        old = progress.get("fingerprint") or {}
        differ = _differences(old, fingerprint)
        if not differ and progress.get("data") is not None:
            k = progress.get("data_rows")
            if k:  # a digest of rows: whatever the batch size now
                same = rows_digest(src.batches(0), int(k)) == progress["data"]
            else:  # recorded before: the first batch's rows
                first = next(iter(src.batches(0)), None)
                same = first is not None and batch_digest(first) == progress["data"]
            if not same:
                differ = ["the data (its first rows)"]
        tail = progress.get("tail")
        checked = not differ and tail and tail.get("stop") == rows and src.map_style  # read directly: a batch's worth
        if checked and rows_digest(src.batches(int(tail["start"])), rows - int(tail["start"])) != tail.get("digest"):
            differ = [f"the data (its rows before row {rows:,})"]
        if differ and rows:
            notice(f"deepscope.analyze: {', '.join(differ)} changed since the interrupted analysis: starting over "
                   f"instead of resuming after its {rows:,} rows", stacklevel=None)  # fmt: skip
        return not differ

    def _check_rows(self, src: Source, n: int) -> None:
        """The ``n`` rows extracted are the dataset's length, and as many as the labels and metadata rows given."""
        if src.length is not None and current_length(src) != src.length:
            raise ValueError(f"deepscope.analyze: the dataset's length changed from {src.length} to "
                             f"{current_length(src)} while it was read")  # fmt: skip
        if src.length is not None and n != src.length:
            raise ValueError(f"deepscope.analyze: the dataset yielded {n} instances, but its length is {src.length}")
        for what, count in self._given_counts().items():
            if count != n:
                raise ValueError(f"deepscope.analyze: {count} {what} for a dataset of {n} instances")

    def _write_instances(self, out_dir: Path, n: int, outputs: dict[str, np.ndarray] | None = None) -> None:
        """The instance table; ``outputs``: the stored labels and scores, if still in memory (else read back)."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        import zarr

        def stored(name: str) -> np.ndarray | None:
            if outputs is not None:
                return outputs.get(name)
            path = out_dir / "outputs" / f"{name}.zarr"
            return zarr.open_array(str(path), mode="r")[:] if path.exists() else None

        cols: dict[str, Any] = {"index": pa.array(np.arange(n, dtype=np.int64))}
        labels = self.labels
        if labels is None and not self._unlabelled_only and (data_labels := stored("labels")) is not None:
            labels = data_labels if (data_labels >= 0).any() else None
        if labels is not None:
            cols["label"] = pa.array(labels, mask=labels < 0)
        if (scores := stored("scores")) is not None:
            pred, top = top_class(scores)
            cols["prediction"] = pa.array(pred)
            cols["score"] = pa.array(top)
            if labels is not None:
                cols["correct"] = pa.array(pred == labels, mask=labels < 0)
        table = pa.table(cols)
        if self.metadata is not None:
            for name in self.metadata.column_names:
                table = table.append_column(name, self.metadata.column(name))
        for key, texts in (outputs or {}).items():  # the batches' texts (a dict entry), unless metadata holds them
            name = key.removeprefix("text:")
            if key.startswith("text:") and name not in table.column_names:
                table = table.append_column(name, pa.array(texts.tolist(), pa.string()))
        meta = {"deepscope.class_names": json.dumps(self.class_names), "deepscope.version": "1"}
        if self.text_column is not None:  # the user's choice; else the reader finds one
            meta["deepscope.text_column"] = json.dumps(self.text_column)
        table = table.replace_schema_metadata(meta)
        tmp = out_dir / ".instances.parquet.tmp"
        # Dictionary-encoding floats (scores) and the row numbers is slow and saves nothing (half the write time,
        # for 100k rows): the row numbers are delta-encoded (1 kB instead of 400), the other columns dictionaries.
        plain = lambda f: f.name == "index" or pa.types.is_floating(f.type)  # noqa: E731
        pq.write_table(table, tmp, use_dictionary=[f.name for f in table.schema if not plain(f)],
                       column_encoding={"index": "DELTA_BINARY_PACKED"})  # fmt: skip
        os.replace(tmp, out_dir / "instances.parquet")


class _State:
    """The arrays on disk and the rows they hold (``progress.json``)."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], chunk_rows: int | None) -> None:
        self.dir = out_dir
        self.fingerprint = fingerprint
        self.length: int | None = fingerprint.get("length")  # None: an iterable of unknown length
        self.chunk_rows = chunk_rows
        self.rows_done = 0
        self.widths: dict[str, int] = {}
        self.outputs: dict[str, dict[str, Any]] = {}  # layer -> {"shape": per instance, unpooled; "maps": bool; "type"}
        self.inputs: str | None = None  # what the model read: "images", "tokens" (integer ids) or "features"
        self.data: str | None = None  # the digest of the data's first rows (rows_digest of data_rows rows)
        self.data_rows = 0
        # the digest of the rows just before rows_done: {"start", "stop", "digest"} (rows_digest), or None
        self.tail: dict[str, Any] | None = None
        self.stopped: str | None = None  # why the last call stopped before the end: "interrupted", or the error
        self.arrays: dict[str, Any] = {}
        self._dirs: set[Path] = set()  # chunk directories known to exist
        self._saved = 0.0  # when progress.json was last written (time.monotonic())

    @classmethod
    def reopen(cls, out_dir: Path, progress: dict[str, Any]) -> _State:
        import zarr

        s = cls(out_dir, progress["fingerprint"], progress["chunk_rows"])
        s.rows_done = int(progress["rows_done"])
        s.widths = dict(progress["widths"])
        s.outputs = dict(progress.get("outputs", {}))
        s.inputs = progress.get("inputs")
        s.data = progress.get("data")
        s.data_rows = int(progress.get("data_rows") or 0)
        s.tail = progress.get("tail")
        for key in progress["arrays"]:
            arr = zarr.open_array(str(out_dir / key), mode="r+")
            arr.resize((s.rows_done, *arr.shape[1:]))  # rows written after the last progress record are redone
            if s.length:
                arr.resize((s.length, *arr.shape[1:]))  # back to the full length, without their chunks
            s.arrays[key] = arr
        return s

    def plan(self, widths: dict[str, int], outputs: dict[str, tuple[int, ...]],
             layer_outputs: dict[str, dict[str, Any]]) -> dict[str, tuple[tuple[int, ...], Any]]:  # fmt: skip
        """The arrays to create, once the first batch tells the widths (and each layer's unpooled output shape):
        ``{key: (shape after the first dimension, dtype)}``; the chunk rows are chosen."""
        self.widths = widths
        self.outputs = layer_outputs
        specs = {f"{layer}.zarr": ((w,), "float32") for layer, w in widths.items()}
        specs |= {f"{k}.zarr": v for k, v in outputs.items()}
        if self.chunk_rows is None:
            widest = max(math.prod(tail) * np.dtype(dtype).itemsize for tail, dtype in specs.values())
            self.chunk_rows = int(min(8192, max(256, 2 ** math.floor(math.log2(max(1, CHUNK_BYTES // widest))))))
        return specs

    def create(self, specs: dict[str, tuple[tuple[int, ...], Any]]) -> None:
        """Create the planned arrays (:meth:`plan`) and record them."""
        import zarr

        arrays = {}  # all or none: an interrupted creation must not leave a progress record of some of them
        for key, (tail, dtype) in specs.items():
            # Uncompressed: written once, read often; zstd made extraction about 3x slower here.
            # The full length at once, when known: growing an array writes its metadata (1–2 ms) at every chunk.
            # Chunk files side by side (c.0.0, c.1.0, …), not a directory per chunk row (c/0/0): making those
            # directories cost the writer 14 ms per 100k rows of one layer.
            arrays[key] = zarr.create_array(
                store=str(self.dir / key), shape=(self.length or 0, *tail), dtype=dtype,
                chunks=(self.chunk_rows, *tail), compressors=None, overwrite=True,
                chunk_key_encoding={"name": "default", "separator": "."},
            )  # fmt: skip
        self.arrays = arrays
        self.save()

    def write(self, start: int, chunk: dict[str, np.ndarray]) -> int:
        stop = start + len(next(iter(chunk.values())))
        for key, values in chunk.items():
            arr = self.arrays[key]
            if arr.shape[0] < stop:  # a dataset of unknown length
                arr.resize((stop, *arr.shape[1:]))
            if not self._write_whole_chunk(key, arr, start, values):
                arr[start:stop] = values
        return stop

    def _write_whole_chunk(self, key: str, arr: Any, start: int, values: np.ndarray) -> bool:
        """Write one whole chunk (or the array's last one, padded) straight to its file: an uncompressed Zarr v3
        chunk is the C-order bytes of its values (the ``bytes`` codec alone). Half the CPU time of
        ``arr[...] = values``, which competes with the forward pass for the same cores. False (nothing written) for
        anything else: zarr writes those."""
        rows = arr.chunks[0]
        codecs = arr.metadata.codecs
        n = len(values)
        edge = n < rows and start + n == arr.shape[0]  # the array's last chunk: stored whole, padded, as zarr does
        if start % rows or (n != rows and not edge) or len(codecs) != 1 or type(codecs[0]).__name__ != "BytesCodec":
            return False
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if values.dtype.itemsize > 1 and endian != sys.byteorder:
            return False
        if edge:
            padded = aligned_empty((rows, *values.shape[1:]), arr.dtype)
            padded[:n] = values
            padded[n:] = arr.fill_value
            values = padded
        path = self.dir / key / arr.metadata.encode_chunk_key((start // rows,) + (0,) * (arr.ndim - 1))
        if path.parent not in self._dirs:  # one directory per chunk row: made once, not asked again per chunk
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        write_chunk_file(path, values if values.dtype == arr.dtype else values.astype(arr.dtype))
        return True

    def save_progress(self) -> None:
        """Record the rows on disk at most twice a second: a resumed run redoes the rows after the last record."""
        if time.monotonic() - self._saved >= 0.5:
            self.save()

    def save(self, complete: bool = False) -> None:
        self._saved = time.monotonic()
        write_json_atomic(self.dir / "progress.json", {
            "version": 1, "fingerprint": self.fingerprint, "rows_done": self.rows_done, "complete": complete,
            "chunk_rows": self.chunk_rows, "widths": self.widths, "outputs": self.outputs,
            "arrays": sorted(self.arrays), "inputs": self.inputs, "data": self.data, "data_rows": self.data_rows,
            "stopped": self.stopped,
            "tail": self.tail if self.tail and self.tail["stop"] == self.rows_done else None,
        })  # fmt: skip

    def finish(self) -> None:
        for arr in self.arrays.values():
            if arr.shape[0] != self.rows_done:
                arr.resize((self.rows_done, *arr.shape[1:]))
        self.save(complete=True)
