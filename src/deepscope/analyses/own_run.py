"""Which run ``deepscope.analyze`` writes into: the one given (``run=``), else the current one, else — after
training, a checkpoint loaded, no ``deepscope.init()`` active — a run it starts itself and finishes when done.

A run analyze started is its own to clean up: when the analysis fails before any row is kept, nothing would be in
it, and it is removed rather than left empty in the runs list; otherwise it is finished (crashed or interrupted)
with what it holds, and the error says how to resume into it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run import Run, current, default_dir
from .base import model_class
from .progress import SAME_CALL_RESUMES, read_progress

PROJECT = "analyze"  # the project of the runs analyze starts, as of those ``deepscope analyze`` starts


@dataclass(frozen=True)
class NewRun:
    """The run analyze starts when there is none to add to: ``project`` (default ``"analyze"``), ``name`` (default:
    the model's class) in ``dir`` (default: as :func:`deepscope.init`)."""

    project: str | None = None
    name: str | None = None
    dir: str | os.PathLike[str] | None = None

    def start(self, model: Any) -> Run:
        kind = model_class(model)
        name = self.name or kind.rpartition(".")[2]
        return Run(project=self.project or PROJECT, name=name, dir=self.dir,
                   config={"command": "deepscope.analyze", "model": kind})  # fmt: skip


def analysis_target(run: Any, project: str | None, name: str | None, dir: Any) -> Path | NewRun:
    """The directory of the run to add the analysis to, or the new run to start: ``run=``, else the current run,
    else a new one. ``project`` and ``name`` are the new run's: refused beside a run to add to, rather than
    ignored; ``dir`` is also where a run's id is looked up."""
    if run is not None:
        if project is not None or name is not None:
            raise ValueError("deepscope.analyze: run= is the run to add the analysis to, project= and name= are for "
                             "a new one: give one or the other")  # fmt: skip
        return existing_run_dir(run, dir)
    active = current()
    if active is None:
        return NewRun(project, name, dir)
    if project is not None or name is not None or dir is not None:
        raise ValueError(f"deepscope.analyze: run {active.id!r} is active, and the analysis goes into it; project=, "
                         "name= and dir= are for the run analyze starts when none is active: leave them out, pass "
                         "run=, or call deepscope.finish() first")  # fmt: skip
    return active.dir


def run_dir_of(run: Any, dir: Any = None) -> Path:
    """Where ``run`` is: a :class:`Run`'s directory, ``run`` itself when it is a directory, or the run of that id in
    ``dir`` (default: the default runs directory) when there is one — else ``run`` as given, for callers to refuse."""
    if isinstance(run, Run):
        return Path(run.dir)
    run_dir = Path(run)
    if isinstance(run, str) and os.sep not in run and not run_dir.is_dir():
        in_root = (Path(dir) if dir is not None else default_dir()) / run
        if in_root.is_dir():
            return in_root  # a run's id, in the runs directory
    return run_dir


def existing_run_dir(run: Any, dir: Any = None) -> Path:
    """The directory of ``run`` (:func:`run_dir_of`), which must exist."""
    run_dir = run_dir_of(run, dir)
    if not run_dir.is_dir():
        root = Path(dir) if dir is not None else default_dir()
        raise FileNotFoundError(f"deepscope.analyze: no run directory {os.fspath(run)!r} (nor a run of that id in "
                                f"{os.fspath(root)}); pass a Run (deepscope.init(...)), the directory of an existing "
                                "run or its id — or leave run= out for a new run")  # fmt: skip
    return run_dir


def kept_nothing(run_dir: Path) -> bool:
    """Whether the run holds no row of an analysis: none started, or none of its rows on disk."""
    progress = read_progress(run_dir)
    return progress is None or (not progress.get("complete") and not progress.get("rows_done"))


def end_after_failure(run: Run, error: BaseException, note: bool = True) -> bool:
    """End the run analyze started, which ``error`` stopped: removed when it kept nothing (True), else finished
    as crashed — interrupted, for a Ctrl-C —, with a ``note`` on the error saying how to resume into it."""
    removed = kept_nothing(run.dir)
    run._finish_after(type(error), error)
    if removed:
        shutil.rmtree(run.dir, ignore_errors=True)
    elif note and hasattr(error, "add_note"):  # shown under the traceback (3.11+)
        # the same call would start another run: not how to resume into this one
        error.__notes__ = [n for n in getattr(error, "__notes__", []) if SAME_CALL_RESUMES not in n]
        error.add_note(f"deepscope.analyze: what was analysed is kept in the run it started, {run.id!r}: pass "
                       f"run={os.fspath(run.dir)!r} to resume into it (called again without run=, analyze starts "
                       "another run)")  # fmt: skip
    return removed


def say_where(run: Run) -> None:
    """The run analyze started, and how to see it: printed, as the dashboard is where its results are."""
    print(f"deepscope.analyze: recorded in the new run {run.id!r} (project {run.project!r}) in {run.root}; to see "
          f"it (Instances tab): deepscope serve {shlex.quote(os.fspath(run.root))}", file=sys.stderr)  # fmt: skip
