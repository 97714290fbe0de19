"""What ``run.watch`` leaves on disk, and how fast a view reads it back: bytes per ``layerstats`` and watch-histogram
row, and the first layer × step matrix of a run — as written (one chunk per kind per flush, ZSTD-compressed) against
the same rows written one uncompressed chunk per step (how they were written before), in the same run.

    .venv/bin/python -m benchmarks.bench_watch_store [--steps 3000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import deepscope
from benchmarks.common import table
from deepscope.store import format as fmt


def train(root: Path, steps: int) -> Path:
    """A 6-layer MLP (13 watched layers, 13 parameters) watched for ``steps`` steps; returns its stream dir."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(6):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 64), torch.randint(10, (32,))
    run = deepscope.init(dir=root, name="store")
    run.watch(model, optimizer=opt, print_findings=False)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"loss": loss})
    run.finish()
    return next(root.glob("*/streams/0"))


def per_step_copy(stream: Path, kind: str) -> None:
    """Rewrite ``kind``'s segment as one uncompressed chunk per step (the rows of a step together)."""
    seg = next(stream.glob(f"{kind}-*.arrows"))
    tables = [c.table for c in fmt.iter_chunks(seg.read_bytes())]
    out = bytearray()
    for t in tables:
        steps = t.column("step").to_numpy()
        bounds = [0, *((steps[1:] != steps[:-1]).nonzero()[0] + 1), len(steps)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            out += fmt.encode_chunk(t.slice(a, b - a).combine_chunks().to_batches()[0])
    seg.write_bytes(bytes(out))


def size(stream: Path, kind: str) -> tuple[int, int, int]:
    """(bytes, rows, chunks) of ``kind``'s segments."""
    total = rows = chunks = 0
    for seg in stream.glob(f"{kind}-*.arrows"):
        data = seg.read_bytes()
        total += len(data)
        for c in fmt.iter_chunks(data):
            rows += c.table.num_rows
            chunks += 1
    return total, rows, chunks


def first_matrix(root: Path) -> float:
    """Seconds to open the run and compute its first layer × step matrix (what the overview asks first)."""
    t = time.perf_counter()
    store = deepscope.open(root)
    store.run(store.runs()[0].id).layer_matrix("act", "mean")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as d:
        new = Path(d) / "new"
        stream = train(new, args.steps)
        old = Path(d) / "old"
        shutil.copytree(new, old)
        old_stream = old / stream.relative_to(new)
        for kind in ("layerstats", "histograms"):
            per_step_copy(old_stream, kind)
        rows = []
        for kind in ("layerstats", "histograms"):
            (nb, n, nc), (ob, _, oc) = size(stream, kind), size(old_stream, kind)
            rows.append((f"{kind}: bytes per row, per flush + ZSTD ({nc} chunks)", f"{nb / n:.0f} B", ""))
            rows.append((f"{kind}: bytes per row, a chunk per step ({oc} chunks)", f"{ob / n:.0f} B", ""))
            rows.append((f"{kind}: smaller by", f"{ob / nb:.1f}×", ""))
        t_new = min(first_matrix(new) for _ in range(3))
        t_old = min(first_matrix(old) for _ in range(3))
        rows.append(("open + first layer × step matrix, per flush + ZSTD", f"{t_new * 1e3:.0f} ms", ""))
        rows.append(("open + first layer × step matrix, a chunk per step", f"{t_old * 1e3:.0f} ms", ""))
        rows.append(("faster by", f"{t_old / t_new:.1f}×", ""))
        table(f"Watch store: 6-layer MLP, {args.steps} steps, every step", rows)


if __name__ == "__main__":
    main()
