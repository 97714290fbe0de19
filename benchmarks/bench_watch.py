"""Watch overhead: per-step training time with ``run.watch(model)`` (all layers, every step) against plain
training, TensorBoard ``add_histogram`` for every parameter and gradient every step, and
``wandb.watch(model, log="all", log_freq=1)`` offline — on the demo CNN, a 12-layer MLP and a small GPT-2;
then the process's resident memory over 10k watched steps of a tiny MLP.

    .venv/bin/python -m benchmarks.bench_watch [--quick] [--threads N]

Every variant trains its own copy of the same initial weights on the same batches with the same optimizer.
Variants run in short blocks, interleaved in rounds whose order rotates (so machine drift, and any
background work one variant leaves behind, falls on all of them alike); figures are medians of per-step
times and ratios to plain training measured in the same run. A step is forward, loss, backward,
optimizer step and the variant's logging call; background threads (deepscope's writer, TensorBoard's
event writer, wandb's service process) share the machine's cores with training, so their cost shows up
in the step times.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import deepscope
from benchmarks.common import table
from deepscope.demo.models import SmallCNN


# ---- workloads -------------------------------------------------------------------------------------
@dataclass
class Workload:
    """A model, its batches, its loss and its optimizer factory."""

    name: str
    model: nn.Module
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]


def _xent(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def cnn() -> Workload:
    torch.manual_seed(0)
    batches = [(torch.randn(64, 1, 28, 28), torch.randint(10, (64,))) for _ in range(8)]
    return Workload("demo CNN (batch 64 × 1×28×28)", SmallCNN(), batches, _xent, _sgd)


def mlp12() -> Workload:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(12):
        layers += [nn.Linear(512, 512), nn.ReLU()]  # (B, 512) -> (B, 512)
    model = nn.Sequential(*layers, nn.Linear(512, 10))
    batches = [(torch.randn(128, 512), torch.randint(10, (128,))) for _ in range(8)]
    return Workload("12-layer MLP (width 512, batch 128)", model, batches, _xent, _sgd)


def gpt2() -> Workload:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=128,
        n_head=4,
        vocab_size=1000,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",  # attention maps as tensors
    )
    model = GPT2LMHeadModel(config)  # random weights, no download
    batches = [(ids, ids) for ids in (torch.randint(1000, (8, 64)) for _ in range(8))]

    def lm_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return m(input_ids=x, labels=y).loss

    def adam(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(m.parameters(), lr=1e-4)

    return Workload("GPT-2 (2 layers, d 128, seq 64, batch 8)", model, batches, lm_loss, adam)


# ---- variants --------------------------------------------------------------------------------------
class Variant:
    """One way of training: its own model copy and optimizer; ``step(i)`` returns the step's seconds."""

    name = "plain"

    def __init__(self, w: Workload, root: Path) -> None:
        self.w = w
        self.model = copy.deepcopy(w.model).train()
        self.opt = w.optimizer(self.model)
        self.n = 0
        # the training thread's own CPU time per step: blind to other processes' load, and to the work of
        # background threads (deepscope's writer thread), which shows in the step times only
        self.cpu: list[float] = []

    def step(self) -> float:
        x, y = self.w.batches[self.n % len(self.w.batches)]
        t, cpu = time.perf_counter(), time.thread_time()
        loss = self.w.loss(self.model, x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.log(loss)
        dt = time.perf_counter() - t
        self.cpu.append(time.thread_time() - cpu)
        self.n += 1
        return dt

    def log(self, loss: torch.Tensor) -> None:
        pass

    def close(self) -> None:
        pass


class Deepscope(Variant):
    name = "deepscope"

    def __init__(self, w: Workload, root: Path) -> None:
        super().__init__(w, root)
        self.run = deepscope.init(dir=root / "deepscope", name=w.name)
        self.run.watch(self.model, optimizer=self.opt, print_findings=False)  # every step, histograms every 100

    def log(self, loss: torch.Tensor) -> None:
        self.run.log({"loss": loss})

    def close(self) -> None:
        self.run.finish()


class TensorBoard(Variant):
    name = "tensorboard"

    def __init__(self, w: Workload, root: Path) -> None:
        super().__init__(w, root)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(root / "tensorboard"))

    def log(self, loss: torch.Tensor) -> None:
        self.writer.add_scalar("loss", loss.item(), self.n)
        for name, p in self.model.named_parameters():
            self.writer.add_histogram(name, p, self.n)
            if p.grad is not None:
                self.writer.add_histogram(f"{name}/grad", p.grad, self.n)

    def close(self) -> None:
        self.writer.close()


class Wandb(Variant):
    name = "wandb"

    def __init__(self, w: Workload, root: Path) -> None:
        super().__init__(w, root)
        import wandb

        self.wandb = wandb
        d = root / "wandb"
        d.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project="bench-watch", dir=str(d), name=w.name, mode="offline")
        wandb.watch(self.model, log="all", log_freq=1)

    def log(self, loss: torch.Tensor) -> None:
        self.run.log({"loss": loss.item()})  # commits the step: wandb's hooks' histograms go out with it

    def close(self) -> None:
        self.run.finish()


# ---- measurement -----------------------------------------------------------------------------------
def measure(
    w: Workload, variants: list[type[Variant]], rounds: int, steps: dict[str, int], warmup: int
) -> tuple[dict, dict]:
    """Per-variant lists of step seconds and of training-thread CPU seconds, from ``rounds`` interleaved
    blocks after a warm-up."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        vs = [v(w, Path(d)) for v in variants]
        try:
            for v in vs:
                for _ in range(warmup):
                    v.step()
                v.cpu.clear()
            for r in range(rounds):
                order = vs[r % len(vs) :] + vs[: r % len(vs)]  # rotate: nobody always follows the same peer
                for v in order:
                    times[v.name] += [v.step() for _ in range(steps[v.name])]
        finally:
            for v in vs:
                v.close()
                cpu[v.name] = v.cpu
    return times, cpu


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_growth(n_steps: int) -> tuple[float, float, float]:
    """RSS (MiB) after 1k and after ``n_steps`` watched steps of a tiny MLP, each after a flush."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 32), torch.randint(10, (16,))
    marks = {}
    with tempfile.TemporaryDirectory() as d:
        run = deepscope.init(dir=d, name="memory")
        run.watch(model, optimizer=opt, print_findings=False)
        for step in range(1, n_steps + 1):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.log({"loss": loss})
            if step in (1_000, n_steps):
                run.flush()
                marks[step] = rss_bytes() / 2**20
        run.finish()
    return marks[1_000], marks[n_steps], n_steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (a smoke run)")
    # One core is left to the loggers' background work (deepscope's writer thread, TensorBoard's event
    # writer, wandb's service process): with every core given to torch, each wake-up of a background
    # thread stalls OpenMP's barrier, and on 2 cores every variant, plain included, ran 5-8× slower.
    threads = max(1, (os.cpu_count() or 1) - 1)
    parser.add_argument("--threads", type=int, default=threads, help="torch intra-op threads")
    parser.add_argument("--only", default="", help="comma-separated workloads: cnn,mlp12,gpt2")
    parser.add_argument("--peers", default="tensorboard,wandb", help="comma-separated peers to include")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore")
    q = args.quick
    rounds = 4 if q else 10
    per = 10 if q else 20  # plain and deepscope steps per block; the peers, 10× slower, get 3
    steps = {"plain": per, "deepscope": per, "tensorboard": 3, "wandb": 3}
    peers = [p for p in (TensorBoard, Wandb) if p.name in args.peers.split(",")]
    variants = [Variant, Deepscope, *peers]
    workloads = {"cnn": cnn, "mlp12": mlp12, "gpt2": gpt2}
    chosen = args.only.split(",") if args.only else list(workloads)
    t_all = time.perf_counter()
    for key in chosen:
        w = workloads[key]()
        t0 = time.perf_counter()
        times, cpu = measure(w, variants, rounds, steps, warmup=3 if q else 10)
        med = {k: statistics.median(v) for k, v in times.items()}
        mean = {k: statistics.fmean(v) for k, v in times.items()}
        over = {k: med[k] / med["plain"] - 1 for k in med}
        rows = [
            (f"{k}: median step (mean)", f"{med[k] * 1e3:.2f} ms ({mean[k] * 1e3:.2f} ms), n={len(times[k])}", "")
            for k in med
        ]
        rows.append(("deepscope / plain, median", f"{med['deepscope'] / med['plain']:.3f}×", "≤ 1.05×"))
        rows.append(("deepscope / plain, mean", f"{mean['deepscope'] / mean['plain']:.3f}×", "≤ 1.05×"))
        c = {k: statistics.median(cpu[k]) for k in ("plain", "deepscope")}
        rows.append(("deepscope / plain, training-thread CPU time, median", f"{c['deepscope'] / c['plain']:.3f}×", ""))
        for p in peers:
            rows.append((f"{p.name} / plain, median", f"{med[p.name] / med['plain']:.2f}×", ""))
            if over["deepscope"] > 0:
                rows.append(
                    (f"{p.name} overhead / deepscope overhead", f"{over[p.name] / over['deepscope']:.0f}×", "≥ 10×")
                )
            else:  # deepscope's steps were no slower than plain ones in this run: no ratio to speak of
                rows.append((f"{p.name} overhead / deepscope overhead", f"{over[p.name]:.0%} / none measured", "≥ 10×"))
        table(f"Watch overhead: {w.name}, {args.threads} threads ({time.perf_counter() - t0:.0f} s)", rows)
        sys.stdout.flush()
    if not args.only:
        n = 2_000 if q else 10_000
        at1k, atn, n = memory_growth(n)
        table(
            "Watch memory: tiny MLP, resident set size",
            [
                ("RSS after 1k steps", f"{at1k:.1f} MiB", ""),
                (f"RSS after {n // 1000}k steps", f"{atn:.1f} MiB", ""),
                ("growth", f"{round(atn - at1k, 1) + 0.0:+.1f} MiB", "≈ 0"),  # + 0.0: no "-0.0"
            ],
        )
    print(f"\n(total {time.perf_counter() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
