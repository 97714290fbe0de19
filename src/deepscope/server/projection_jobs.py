"""UMAP and t-SNE projections computed in the background, one at a time, with their progress for the views.

PCA is written by ``deepscope.analyze`` itself; the others take seconds to minutes, so a request starts a job and
the analysis summary reports it (``running`` with a fraction, then ``ready`` — read from disk — or ``failed``).

Jobs run in daemon threads and stop at their next progress report once the server closes: Ctrl-C on ``deepscope
serve`` never waits minutes for a UMAP (worker threads of a ``ThreadPoolExecutor`` are joined at interpreter exit).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from . import schemas

log = logging.getLogger("deepscope")
_SHUT_DOWN = "stopped: the server is shutting down"


class _Stopped(Exception):
    """Raised in a job's progress report once the server closes: the job ends there, having written nothing."""


class ProjectionJobs:
    """Background projection jobs of one server, keyed by (run, layer, method)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()  # a projection takes every core it can: one after the other
        self._closing = threading.Event()
        self._jobs: dict[tuple[str, str, str], schemas.ProjectionStatus] = {}
        self._threads: set[threading.Thread] = set()

    def start(self, run_id: str, run_dir: Path, layer: str, method: str) -> schemas.ProjectionStatus:
        """Queue the projection unless it is already queued or running; its status now."""
        key = (run_id, layer, method)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state == "running":
                return job
            if self._closing.is_set():
                return schemas.ProjectionStatus(layer=layer, method=method, state="failed", progress=0.0,
                                                message=_SHUT_DOWN)  # fmt: skip
            job = self._jobs[key] = schemas.ProjectionStatus(
                layer=layer, method=method, state="running", progress=0.0, message="queued"
            )
            thread = threading.Thread(target=self._run, args=(key, run_dir), name="deepscope-projection", daemon=True)
            self._threads.add(thread)
        thread.start()
        return job

    def statuses(self, run_id: str) -> list[schemas.ProjectionStatus]:
        with self._lock:
            return [s for (run, _, _), s in self._jobs.items() if run == run_id]

    def _set(self, key: tuple[str, str, str], **fields: object) -> None:
        with self._lock:
            self._jobs[key] = self._jobs[key].model_copy(update=fields)

    def _report(self, key: tuple[str, str, str], fraction: float, message: str) -> None:
        # compute_projection reports before it writes and after: a job stopped here leaves the old files or the new
        if self._closing.is_set():
            raise _Stopped
        self._set(key, progress=float(fraction), message=str(message))

    def _run(self, key: tuple[str, str, str], run_dir: Path) -> None:
        try:
            with self._one_at_a_time:
                if self._closing.is_set():
                    self._set(key, state="failed", message=_SHUT_DOWN)
                else:
                    self._compute(key, run_dir)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _compute(self, key: tuple[str, str, str], run_dir: Path) -> None:
        from ..analyses.projection import compute_projection

        _, layer, method = key
        self._set(key, message="starting")
        try:
            compute_projection(run_dir, layer, method, on_progress=lambda f, msg: self._report(key, f, msg))
        except _Stopped:
            self._set(key, state="failed", message=_SHUT_DOWN)
            return
        except Exception as e:  # a failed projection is shown in the view, never kills the server
            log.warning("deepscope: %s projection of %s failed", method, layer, exc_info=True)
            self._set(key, state="failed", message=f"{type(e).__name__}: {e}")
            return
        with self._lock:
            self._jobs.pop(key, None)  # on disk now: the summary reads it as ready

    def close(self, timeout: float = 2.0) -> None:
        """Stop the jobs: each ends at its next progress report; wait up to ``timeout`` seconds for them.

        A job still running then is in a step without reports (UMAP's nearest neighbours), before it writes: its
        daemon thread ends with the process, leaving nothing half-written."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
