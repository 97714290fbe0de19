"""``deepscope demo``: start the dashboard, then train both networks live in front of it.

The server starts before torch is even imported, so the page is up within seconds; the runs appear on
it as soon as training begins. Ctrl-C stops training (the runs are marked as interrupted) and the server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

DEFAULT_STEPS = 1500


def run_demo(
    runs_dir: str | os.PathLike[str] = "deepscope-runs",
    *,
    steps: int = DEFAULT_STEPS,
    serve: bool = True,
    port: int | None = None,
) -> None:
    """Train the demo (``steps`` per network); with ``serve``, show it live and keep serving afterwards."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if serve:
        from ..server.launch import BackgroundServer

        server = BackgroundServer(runs_dir, port=port).start()
        print(f"deepscope: dashboard at {server.url}", flush=True)
    try:
        # UMAP only while the dashboard stays up to show it; without one, the views compute it on request.
        _train(runs_dir, steps, umap=server is not None)
        if server is not None:
            print("deepscope: training done; the dashboard stays up (Ctrl-C to stop)", flush=True)
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("\ndeepscope: stopped", flush=True)
    finally:
        if server is not None:
            server.stop()


def _train(runs_dir: Path, steps: int, umap: bool) -> None:
    start = time.perf_counter()
    print("deepscope: loading 5,000 MNIST digits and building the networks…", flush=True)
    from .data import load_mnist
    from .train import TrainConfig, train_both

    digits = load_mnist()
    config = TrainConfig(steps=steps, val_every=max(1, min(50, steps // 4)))
    print(f"deepscope: training both networks for {steps} steps each, interleaved, then analysing them", flush=True)
    trainings = train_both(runs_dir, config, digits)
    for training in trainings:
        print(f"deepscope:   {training.run.name}: run {training.run.id}", flush=True)
    print(f"deepscope: trained and analysed in {time.perf_counter() - start:.0f} s; runs in {runs_dir.resolve()}",
          flush=True)  # fmt: skip
    if umap:
        from .analysis import project_in_background

        project_in_background({type(t.model).__name__: Path(t.run.dir) for t in trainings})
