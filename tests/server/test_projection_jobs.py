"""Background projections stop when the server closes: Ctrl-C never waits for a UMAP, nothing is left half-written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import deepscope.analyses.projection as projection
from deepscope.server.projection_jobs import ProjectionJobs


def slow_projection(written: list[str]):
    """Stands in for a UMAP of a big layer: reports every 10 ms for a minute, then writes."""

    def compute(run_dir, layer, method, *, on_progress, seed=0):
        for i in range(6000):
            on_progress(i / 6000, "optimising the layout")
            time.sleep(0.01)
        on_progress(0.99, "writing")
        written.append(method)

    return compute


def test_closing_stops_a_running_job_at_its_next_report(tmp_path, monkeypatch):
    written: list[str] = []
    monkeypatch.setattr(projection, "compute_projection", slow_projection(written))
    jobs = ProjectionJobs()
    jobs.start("r", tmp_path, "fc", "umap")
    jobs.start("r", tmp_path, "fc", "tsne")  # queued behind it
    deadline = time.monotonic() + 10
    while jobs.statuses("r")[0].message != "optimising the layout" and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    jobs.close()
    assert time.monotonic() - started < 1.0 and not jobs._threads  # both ended, the queued one without starting
    assert written == [] and {s.state for s in jobs.statuses("r")} == {"failed"}
    assert jobs.start("r", tmp_path, "fc", "pca").state == "failed"  # a closed server starts none


def test_a_job_in_a_step_without_reports_does_not_hold_the_process_up(tmp_path):
    """UMAP's nearest neighbours report nothing for minutes: the job's thread must not be joined at exit."""
    script = textwrap.dedent(f"""
        import time
        import deepscope.analyses.projection as projection
        from deepscope.server.projection_jobs import ProjectionJobs

        def compute(run_dir, layer, method, *, on_progress, seed=0):
            time.sleep(120)

        projection.compute_projection = compute
        jobs = ProjectionJobs()
        jobs.start("r", {str(tmp_path)!r}, "fc", "umap")
        time.sleep(0.2)
        jobs.close(timeout=0.2)
    """)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert time.monotonic() - started < 30
