"""The ``deepscope`` command, run as a user would: in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import deepscope
from deepscope.analyses import read as read_analyses


def deepscope_command(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "deepscope", *args], stdout=subprocess.PIPE, text=True, env=env,
        preexec_fn=ctrl_c_as_at_a_terminal, **kwargs,
    )  # fmt: skip


def ctrl_c_as_at_a_terminal() -> None:
    """In the child: SIGINT's default disposition, as a command started at a terminal has (a suite started in the
    background inherits it ignored, and the child would never see the Ctrl-C the tests send)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def printed_urls(proc: subprocess.Popen, n: int, timeout: float = 30) -> list[str]:
    """The first ``n`` URLs that ``deepscope serve`` prints."""
    urls: list[str] = []
    deadline = time.monotonic() + timeout
    while len(urls) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the server exited early"
        if line.startswith("deepscope: open "):
            urls.append(line.removeprefix("deepscope: open ").strip())
    return urls


def test_serve_on_a_public_host_requires_and_prints_a_token(tmp_path):
    with deepscope_command("serve", str(tmp_path / "runs"), "--host", "0.0.0.0", "--port", "0") as proc:
        try:
            urls = printed_urls(proc, 2)
            local = urlsplit(urls[-1])
            assert local.hostname == "127.0.0.1"
            token = parse_qs(local.query)["token"][0]
            assert len(token) >= 24 and all(parse_qs(urlsplit(u).query)["token"] == [token] for u in urls)

            base = f"http://127.0.0.1:{local.port}"
            assert httpx.get(f"{base}/api/health", timeout=10).status_code == 401
            health = httpx.get(f"{base}/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert health.status_code == 200 and health.json()["root"].endswith("runs")
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0  # Ctrl-C is a clean stop


def test_serve_on_loopback_needs_no_token(tmp_path):
    with deepscope_command("serve", str(tmp_path), "--port", "0") as proc:
        try:
            [url] = printed_urls(proc, 1)
            assert "token" not in url and urlsplit(url).hostname == "127.0.0.1"
            assert httpx.get(f"{url}api/runs", timeout=10).json() == {"runs": []}
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0


def test_serve_rejects_an_unsafe_token(tmp_path):
    with deepscope_command("serve", str(tmp_path), "--token", "a b", stderr=subprocess.PIPE) as proc:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "token" in err


@pytest.mark.slow
def test_demo_trains_both_networks_without_serving(tmp_path):
    runs = tmp_path / "demo"
    with deepscope_command("demo", "--steps", "20", "--no-serve", env={"DEEPSCOPE_DIR": str(runs)}) as proc:
        out, _ = proc.communicate(timeout=240)  # the runs go where DEEPSCOPE_DIR says, as for every command
    assert proc.returncode == 0, out
    store = deepscope.open(runs)
    infos = store.runs()
    assert sorted(r.name for r in infos) == ["cnn-batchnorm-relu", "mlp-sigmoid-naive-init"]
    for info in infos:
        assert info.status == "finished"
        reader = store.run(info.id)
        keys = {(k.key, k.kind): k for k in reader.keys()}
        for key in ("train/loss", "train/acc", "lr"):
            assert keys[key, "scalar"].count == 20
        for key in ("val/loss", "val/acc"):
            assert keys[key, "scalar"].last_step == 19
        assert ("val/top_hidden", "histogram") in keys
        assert any(e.kind == "note" for e in reader.events())
        analysis = read_analyses(runs / info.id)  # analysed before it was marked finished
        assert analysis.complete and len(analysis) == 5000 and analysis.input_kind == "image"
        assert analysis.projection("classifier").shape == (5000, 2) and analysis.confusion() is not None


@pytest.mark.slow
def test_demo_serves_live_and_stops_cleanly_on_ctrl_c(tmp_path):
    runs = tmp_path / "demo"
    with deepscope_command("demo", "--steps", "100000", "--port", "0", "--dir", str(runs)) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("deepscope: dashboard at http://127.0.0.1:"), line
            url = line.split(" at ")[1].strip()
            assert httpx.get(f"{url}api/runs", timeout=10).status_code == 200  # up before torch is imported
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                listed = httpx.get(f"{url}api/runs", timeout=10).json()["runs"]
                if len(listed) == 2 and all((r["max_step"] or 0) >= 5 for r in listed):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("the demo's runs did not appear")
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out, out
    assert {(r.status, r.exit_reason) for r in deepscope.open(runs).runs()} == {("finished", "interrupted (SIGINT)")}


def test_graph_command_records_an_onnx_file(tmp_path):
    import torch
    from typer.testing import CliRunner

    from deepscope.cli import app
    from deepscope.graphs.store import read_graph

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(model, (torch.randn(1, 4),), str(path), dynamo=False)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["graph", str(path), "--dir", str(runs), "--no-serve"])
    assert result.exit_code == 0, result.output
    (info,) = deepscope.open(runs).runs()
    g = read_graph(runs / info.id)
    assert info.name == "tiny" and g.method == "onnx" and len(g.nodes) >= 3
    bad = CliRunner().invoke(app, ["graph", str(tmp_path / "missing.onnx"), "--dir", str(runs), "--no-serve"])
    assert bad.exit_code == 1 and "missing.onnx does not exist" in bad.output
    (tmp_path / "model.txt").write_text("x")
    bad = CliRunner().invoke(app, ["graph", str(tmp_path / "model.txt"), "--dir", str(runs), "--no-serve"])
    assert bad.exit_code == 1 and "not an .onnx file" in bad.output


def test_version():
    from typer.testing import CliRunner

    from deepscope.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"deepscope {deepscope.__version__}"


def test_serving_a_runs_own_directory_serves_the_runs_directory_above_it(tmp_path, capsys):
    from deepscope.server.launch import prepare

    with deepscope.init(dir=tmp_path, id="one") as run:
        run.log({"loss": 1.0}, step=0)
    prepared = prepare(tmp_path / "one", "127.0.0.1", 0, None)
    try:
        assert prepared.root == tmp_path.resolve()
        assert "is the directory of run 'one'; serving the runs directory that holds it" in capsys.readouterr().out
        series = deepscope.open(tmp_path).run("one").series("loss")
        assert repr(series) == "Series(key='loss', 1 values, steps 0–0, last 1)"
    finally:
        prepared.sock.close()
