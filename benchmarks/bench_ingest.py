"""Ingest: values/s through ``run.log`` (dicts of 100 scalars, until on disk) against TensorBoard's
``SummaryWriter.add_scalars`` and ``add_scalar`` on the same values, in the same run.

    .venv/bin/python -m benchmarks.bench_ingest
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import deepscope
from benchmarks.common import table

KEYS = [f"layer{i // 10}/stat{i % 10}" for i in range(100)]


def rows(n_steps: int) -> list[dict[str, float]]:
    return [{k: float(step * 100 + j) for j, k in enumerate(KEYS)} for step in range(n_steps)]


def deepscope_ingest(data: list[dict[str, float]], root: Path) -> tuple[float, float]:
    """Seconds until every value is on disk (finish() flushes), and the hot-path seconds alone."""
    t0 = time.perf_counter()
    run = deepscope.init(dir=root, name="ingest")
    t1 = time.perf_counter()
    for step, row in enumerate(data):
        run.log(row, step=step)
    t2 = time.perf_counter()
    run.finish()
    t3 = time.perf_counter()
    return t3 - t0, t2 - t1


def tensorboard_ingest(data: list[dict[str, float]], root: Path, grouped: bool) -> float:
    from torch.utils.tensorboard import SummaryWriter

    t0 = time.perf_counter()
    w = SummaryWriter(str(root))
    for step, row in enumerate(data):
        if grouped:
            w.add_scalars("all", row, step)
        else:
            for k, v in row.items():
                w.add_scalar(k, v, step)
    w.close()
    return time.perf_counter() - t0


def main() -> None:
    n_ds, n_tb = 20_000, 1_000  # TensorBoard is measured on fewer steps; rates are per value
    data = rows(n_ds)
    with tempfile.TemporaryDirectory() as d:
        total, hot = min((deepscope_ingest(data, Path(d) / f"ds{i}") for i in range(3)), key=lambda x: x[0])
        tb1 = min(tensorboard_ingest(data[:n_tb], Path(d) / f"tb{i}", grouped=False) for i in range(2))
        tbs = tensorboard_ingest(data[:n_tb], Path(d) / "tbs", grouped=True)
        check = deepscope.open(Path(d) / "ds0")
        run = check.run(check.run_ids()[0])
        assert len(run.series(KEYS[-1])) == n_ds
    values = n_ds * len(KEYS)
    ds_rate = values / total
    tb_rate = n_tb * len(KEYS) / tb1
    tbs_rate = n_tb * len(KEYS) / tbs
    table(
        "Ingest: dicts of 100 scalars",
        [
            ("deepscope run.log, until on disk", f"{ds_rate / 1e6:.2f} M values/s", "≥ 1 M values/s"),
            ("deepscope run.log, hot path only", f"{hot / n_ds * 1e6:.1f} µs per call of 100 values", "µs"),
            ("TensorBoard add_scalar", f"{tb_rate / 1e3:.0f} k values/s", ""),
            ("TensorBoard add_scalars", f"{tbs_rate / 1e3:.0f} k values/s", ""),
            ("deepscope / TensorBoard add_scalar", f"{ds_rate / tb_rate:.0f}×", "≥ 20×"),
            ("deepscope / TensorBoard add_scalars", f"{ds_rate / tbs_rate:.0f}×", "≥ 20×"),
        ],
    )


if __name__ == "__main__":
    main()
