"""Resuming an interrupted activations analysis: the digests that tell whether a new call may continue it, the
readers of its ``progress.json``, and the swap of a finished analysis for the new one computed beside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..notices import notice
from .base import artifact_dir, read_json
from .batches import Batch, Source

NAME = "activations"  # the analysis resumed here: its name, and its artifact directory's
NEXT_SUFFIX = ".next"  # a new analysis computed beside a finished one, which it replaces when complete
OLD_SUFFIX = ".old"  # the finished one, between the renames that swap the new one in


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


def resumable(progress: dict[str, Any], fingerprint: dict[str, Any], src: Source) -> bool:
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
