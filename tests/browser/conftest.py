"""Browser tests: the real server over a store written with the real writer, driven in headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, LONG_STEPS, SHORT_STEPS, XSS, Console

import deepscope
from deepscope.server.launch import BackgroundServer
from deepscope.server.static_site import STATIC_DIR


def write_run(root: Path, name: str, steps: int, *, config=None, tags=(), seed: float = 0.0, status="finished"):
    run = deepscope.init(project="browser", name=name, config=config or {}, dir=root, tags=list(tags))
    for s in range(steps):
        values = {"train/loss": 2.0 / (1 + s / 300) + seed, "train/acc": 1 - 1 / (1 + s / 200)}
        if s % 100 == 0:
            values["val/loss"] = 2.2 / (1 + s / 300) + seed
        run.log(values, step=s)
    run.event("note", f"{name} reached step {steps - 1}", step=steps - 1)
    run.finish(status=status, exit_reason="diverged" if status == "crashed" else None)
    return run


@pytest.fixture(scope="session")
def built_app() -> Path:
    if not (STATIC_DIR / "index.html").is_file():
        pytest.fail("the web app is not built: run `make web` (or `cd web && npm ci && npm run build`)")
    return STATIC_DIR


@pytest.fixture(scope="module")
def browser():
    # module scope: Playwright's sync API runs an event loop in this thread while it lives, which would
    # break asyncio.run() in the tests that follow
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: run `make chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """Three finished runs, one of which carries hostile strings in every user-controlled field."""
    root = tmp_path_factory.mktemp("runs")
    long = write_run(
        root, "baseline", LONG_STEPS, config={"lr": 0.001, "optimizer": "adam", "n_params": 3798010}, tags=["sweep"]
    )
    short = write_run(root, "short-sgd", SHORT_STEPS, config={"lr": 0.01, "optimizer": "sgd"}, seed=0.3)
    hostile = deepscope.init(project="browser", name=XSS, config={"note": XSS, "lr": 0.1}, dir=root, tags=[XSS])
    for s in range(50):
        hostile.log({f"val/{XSS}": float(s), "train/loss": 1.0 / (s + 1), "sys/step_time": 0.01, "lr": 0.1}, step=s)
    hostile.event("alert", XSS, severity="error", step=3)
    hostile.finish(status="crashed", exit_reason=XSS)
    return {"root": root, "long": long.id, "short": short.id, "hostile": hostile.id}


@pytest.fixture
def serve(built_app) -> Iterator[Callable[..., BackgroundServer]]:
    servers: list[BackgroundServer] = []

    def start(root: Path, token: str | None = None) -> BackgroundServer:
        server = BackgroundServer(root, port=0, token=token).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def server(store, built_app) -> Iterator[str]:
    """The base URL of a server over ``store`` (shared by a module's tests)."""
    s = BackgroundServer(store["root"], port=0).start()
    yield s.url
    s.stop()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    """A page whose console must stay free of errors for the whole test."""
    p = context.new_page()
    console = Console(p)
    p.console = console
    yield p
    assert console.errors == [], console.errors
