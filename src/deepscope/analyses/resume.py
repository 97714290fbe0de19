"""Resuming an interrupted activations analysis: the digests that tell whether a new call may continue it
(where it stands on disk: ``progress.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..notices import notice
from .batches import Batch, Source, to_batch


def weights_digest(model: nn.Module) -> str:
    """A digest of the parameters and buffers: a resume with other weights starts over. Named as in the model inside
    a wrapper (``fc1.weight``, not ``_orig_mod.fc1.weight`` or ``module.fc1.weight``): the same weights, compiled or
    wrapped or not, have one digest."""
    from ..capture.layers import unwrapped

    model = unwrapped(model)
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


def tail_batches(src: Source, start: int) -> Iterable[Batch]:
    """The data's batches from row ``start`` on, as directly as it allows: a dataset's rows read at ``start``; a
    DataLoader that reads its dataset in order, the one batch that holds it (collated as the loader collates it:
    the same padding); any other iterable of batches, read from its start."""
    import torch.utils.data as tud

    loader = src.data if isinstance(src.data, tud.DataLoader) else None
    if (
        src.map_style
        or loader is None
        or not isinstance(loader.sampler, tud.SequentialSampler)
        or not (loader.batch_size and hasattr(loader.dataset, "__getitem__"))
    ):
        return src.batches(start)
    lo = start - start % loader.batch_size  # the loader's batches start at multiples of its batch size
    hi = min(lo + loader.batch_size, len(loader.dataset))
    one = tud.DataLoader(loader.dataset, batch_sampler=[list(range(lo, hi))], collate_fn=loader.collate_fn)
    return [to_batch(raw, src.mask).slice(start - lo, hi - lo) for raw in one]


def resumable(progress: dict[str, Any], fingerprint: dict[str, Any], src: Source) -> bool:
    """Whether an interrupted analysis continues with this call: same fingerprint, and the same first rows of
    data and rows just before the resume point (:func:`tail_batches`). Where it does not, one line says why it
    starts over."""
    rows = int(progress.get("rows_done", 0))
    old = progress.get("fingerprint") or {}
    differ = _differences(old, fingerprint)
    if not differ and isinstance(src.data, Iterator):  # checked, its first rows would be gone
        if rows:
            notice(f"deepscope.analyze: the data is an iterator, read once: the rows of the interrupted analysis "
                   f"cannot be checked and skipped, so it starts over instead of resuming after its {rows:,} rows",
                   stacklevel=None)  # fmt: skip
        return False
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
    checked = not differ and tail and tail.get("stop") == rows
    if checked and rows_digest(tail_batches(src, int(tail["start"])), rows - int(tail["start"])) != tail.get("digest"):
        differ = [f"the data (its rows before row {rows:,})"]
    if differ and rows:
        notice(f"deepscope.analyze: {', '.join(differ)} changed since the interrupted analysis: starting over "
               f"instead of resuming after its {rows:,} rows", stacklevel=None)  # fmt: skip
    return not differ
