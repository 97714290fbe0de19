"""UMAP and t-SNE projections computed in the background, one at a time, with their progress for the views.

PCA is written by ``deepscope.analyze`` itself; the others take seconds to minutes, so a request starts a job and
the analysis summary reports it (``running`` with a fraction, then ``ready`` — read from disk — or ``failed``).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import schemas

log = logging.getLogger("deepscope")


class ProjectionJobs:
    """Background projection jobs of one server, keyed by (run, layer, method)."""

    def __init__(self, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepscope-projection")
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str, str], schemas.ProjectionStatus] = {}

    def start(self, run_id: str, run_dir: Path, layer: str, method: str) -> schemas.ProjectionStatus:
        """Queue the projection unless it is already queued or running; its status now."""
        key = (run_id, layer, method)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state == "running":
                return job
            job = self._jobs[key] = schemas.ProjectionStatus(
                layer=layer, method=method, state="running", progress=0.0, message="queued"
            )
        self._pool.submit(self._run, key, run_dir)
        return job

    def statuses(self, run_id: str) -> list[schemas.ProjectionStatus]:
        with self._lock:
            return [s for (run, _, _), s in self._jobs.items() if run == run_id]

    def _set(self, key: tuple[str, str, str], **fields: object) -> None:
        with self._lock:
            self._jobs[key] = self._jobs[key].model_copy(update=fields)

    def _run(self, key: tuple[str, str, str], run_dir: Path) -> None:
        from ..analyses.projection import compute_projection

        _, layer, method = key
        self._set(key, message="starting")
        try:
            compute_projection(
                run_dir, layer, method, on_progress=lambda f, msg: self._set(key, progress=float(f), message=str(msg))
            )
        except Exception as e:  # a failed projection is shown in the view, never kills the server
            log.warning("deepscope: %s projection of %s failed", method, layer, exc_info=True)
            self._set(key, state="failed", message=f"{type(e).__name__}: {e}")
            return
        with self._lock:
            self._jobs.pop(key, None)  # on disk now: the summary reads it as ready

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
