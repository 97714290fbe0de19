"""The committed ``web/openapi.json`` is what the server generates: the web client's types cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deepscope.server import create_app

REPO = Path(__file__).resolve().parents[2]


def test_committed_schema_is_up_to_date():
    script = REPO / "scripts" / "gen_api_types.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_schema_describes_every_route_and_the_live_messages(tmp_path):
    spec = create_app(tmp_path).openapi()
    assert set(spec["paths"]) == {
        "/api/health",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/keys",
        "/api/runs/{run_id}/summary",
        "/api/runs/{run_id}/scalars",
        "/api/runs/{run_id}/histograms",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/layers",
        "/api/runs/{run_id}/layerstats/matrix",
        "/api/runs/{run_id}/layerstats/profile",
        "/api/runs/{run_id}/layerstats/series",
        "/api/runs/{run_id}/layerstats/total",
        "/api/runs/{run_id}/ranks",
        "/api/runs/{run_id}/graph",
        "/api/runs/{run_id}/analysis",
        "/api/runs/{run_id}/analysis/instances",
        "/api/runs/{run_id}/analysis/instances/{index}",
        "/api/runs/{run_id}/analysis/instances/{index}/maps",
        "/api/runs/{run_id}/analysis/subset",
        "/api/runs/{run_id}/analysis/matrix",
        "/api/runs/{run_id}/analysis/top",
        "/api/runs/{run_id}/analysis/column",
        "/api/runs/{run_id}/analysis/progress",
        "/api/runs/{run_id}/analysis/neighbors",
        "/api/runs/{run_id}/analysis/projection",
        "/api/runs/{run_id}/analysis/confusion",
        "/api/live",
    }
    scalars = spec["paths"]["/api/runs/{run_id}/scalars"]["get"]
    assert list(scalars["responses"]["200"]["content"]) == ["application/vnd.apache.arrow.stream"]
    assert {"LiveRun", "LiveRuns", "RunSummary", "RunDetail"} <= set(spec["components"]["schemas"])
