"""Where an activations analysis stands on disk, without torch (the dashboard server reads it): its
``progress.json``, the rows an unfinished one kept, why a run has no finished one, and the swap of a finished
analysis for the new one computed beside it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .base import artifact_dir, read_json

NAME = "activations"  # the analysis resumed here: its name, and its artifact directory's
NEXT_SUFFIX = ".next"  # a new analysis computed beside a finished one, which it replaces when complete
OLD_SUFFIX = ".old"  # the finished one, between the renames that swap the new one in

# how an analysis stopped part-way is resumed — true of a run given to it, not of one it started (see own_run)
SAME_CALL_RESUMES = "call it again the same way to resume after them"


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
