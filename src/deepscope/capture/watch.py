"""``run.watch(model)``: per-layer statistics of activations, gradients and weights at every step.

Each hook copies a fixed sample of its tensor into its row of a preallocated staging matrix on the
tensor's device (one gather); nothing in a hook synchronizes with the device. At the step boundary one
batched reduction turns every row into moments, extremes and histograms (``reducers.reduce_rows``), the
accumulators are copied to the host in a few non-blocking copies and handed to the writer thread, which
turns them into ``layerstats`` rows, histograms and diagnoses. A *step* is an optimizer step when the
optimizer is given, otherwise a training-mode forward pass of the model; passes in eval mode or under
``no_grad`` are not recorded.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..store import format as fmt
from ..store import runmeta
from . import reducers as R
from .diagnose import Diagnoser, Finding, Thresholds, console_printer
from .layers import Layer, LayerFilter, first_tensor, is_float_tensor, select_layers
from .scope import HookScope
from .tables import layerstats_batch, watch_histograms_batch

if TYPE_CHECKING:
    from ..run import Run


@dataclass(frozen=True)
class WatchConfig:
    every: int = 1  # record every n-th step
    start_step: int = 0  # the index of the first step (a resumed training continues its count)
    histograms_every: int = 100  # histograms on every n-th step (0: never)
    sample: int = 4096  # elements per tensor the statistics are computed from
    dead_window: int = 100  # steps over which a ReLU unit must never fire to count as dead
    diagnose: bool = True
    print_findings: bool = True


class _Buffers:
    """One step's statistics on one device: accumulated moments, minima, maxima, histograms, and the
    staging matrix the hooks copy their samples into.

    A hook does one copy (its sample into its row of ``stage``); ``reduce`` then computes every row's
    statistics at once at the step's end. Rows of all four kinds live in one matrix, ``act`` first:
    ``acc[kind]`` and the other per-kind tables are views into it.
    """

    def __init__(self, n_layers: int, n_params: int, device: torch.device, hist: bool, sample: int, sat: list) -> None:
        self.start: dict[str, int] = {}
        total = 0
        for kind, n in _rows(n_layers, n_params).items():
            self.start[kind] = total
            total += n
        self.device = device
        self.n_params = n_params
        self.acc_all = torch.zeros(total, R.MOMENTS, device=device)
        self.mn_all = torch.zeros(total, device=device)
        self.mx_all = torch.zeros(total, device=device)
        self.hist_all = torch.zeros(total, R.HIST_BINS, device=device) if hist else None
        self.acc = self._views(self.acc_all)
        self.mn = self._views(self.mn_all)
        self.mx = self._views(self.mx_all)
        self.hist = self._views(self.hist_all) if hist else {}
        self.update = torch.zeros(n_params, 2, device=device)  # per parameter: Σ Δ², Σ w² over the sample
        # staging: row r holds lengths[r] sampled values (0: nothing staged this step)
        self.stage = torch.full((total, sample), float("nan"), device=device)
        self.work = torch.empty(2, total, sample, device=device)  # scratch space of reduce_rows
        self.rows = list(self.stage.unbind(0))
        self.lengths = [0] * total
        self.normsq = torch.zeros(n_params, device=device)  # exact ‖param grad‖²
        self.norms = list(self.normsq.unbind(0))
        self.before = torch.zeros(n_params, sample, device=device)  # weight samples before the optimizer step
        self.before_rows = list(self.before.unbind(0))
        self.before_len = [0] * n_params
        self.has_update = [False] * n_params
        a = self.start["act"]
        self.sat = R.Saturation.of([a + i for i, b in enumerate(sat) if b], [b for b in sat if b], device)
        self._valid: tuple[tuple[int, ...], torch.Tensor] | None = None
        self.reset()

    def _views(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        ends = [*list(self.start.values())[1:], t.shape[0]]
        return {k: t[s:e] for (k, s), e in zip(self.start.items(), ends)}

    def staged(self, kind: str, i: int) -> bool:
        return self.lengths[self.start[kind] + i] > 0

    def reduce(self, hist: bool) -> None:
        """Fold every staged row into the accumulators (the step's end; no device sync)."""
        if not any(self.lengths):
            return
        dev = self.device
        n = torch.tensor(self.lengths, dtype=torch.float32).to(dev, non_blocking=True)
        row, mn, mx, h = R.reduce_rows(self.stage, n, self.sat, hist and self.hist_all is not None, self.work)
        pg, w = self.start["param_grad"], self.start["weight"]
        row[pg:w, R.NORMSQ] = self.normsq  # exact squared norms; moments() leaves the column 0
        staged = n > 0
        self.acc_all += torch.where(staged[:, None], row, 0.0)  # a row left from an earlier step is stale
        torch.where(staged, torch.minimum(self.mn_all, mn), self.mn_all, out=self.mn_all)
        torch.where(staged, torch.maximum(self.mx_all, mx), self.mx_all, out=self.mx_all)
        if h is not None:
            self.hist_all += torch.where(staged[:, None], h, 0.0)
        if any(self.has_update):
            self._reduce_update(w)

    def _reduce_update(self, w: int) -> None:
        k = tuple(self.lengths[w : w + self.n_params])  # where has_update: the before samples' sizes too
        if self._valid is None or self._valid[0] != k:
            lengths = torch.tensor(k, device=self.device)
            width = self.before.shape[1]
            self._valid = k, torch.arange(width, device=self.device) < lengths[:, None]
        valid = self._valid[1]  # (P, S) True on sampled positions
        after = self.stage[w : w + self.n_params]
        d = torch.where(valid, after - self.before, 0.0)  # (P, S); padding -> 0, a NaN weight stays NaN
        b = torch.where(valid, self.before, 0.0)
        upd = torch.stack([(d * d).sum(1), (b * b).sum(1)], dim=1)  # (P, 2)
        has = torch.tensor(self.has_update, device=self.device)[:, None]
        torch.where(has, upd, self.update, out=self.update)

    def to_host(self, hist: bool) -> dict[str, Any]:
        copy = lambda t: t.to("cpu", non_blocking=True, copy=True)  # noqa: E731
        acc, mn, mx = copy(self.acc_all), copy(self.mn_all), copy(self.mx_all)
        return {
            "acc_all": acc,
            "mn_all": mn,
            "mx_all": mx,
            "acc": self._views(acc),
            "mn": self._views(mn),
            "mx": self._views(mx),
            "hist": self._views(copy(self.hist_all)) if hist and self.hist_all is not None else {},
            "update": copy(self.update),
        }

    def reset(self, hist: bool = True) -> None:
        self.acc_all.zero_()
        self.mn_all.fill_(float("inf"))
        self.mx_all.fill_(float("-inf"))
        if hist and self.hist_all is not None:
            self.hist_all.zero_()
        self.update.fill_(float("nan"))
        self.normsq.zero_()
        self.lengths = [0] * len(self.lengths)
        self.has_update = [False] * self.n_params


def _rows(n_layers: int, n_params: int) -> dict[str, int]:
    return {"act": n_layers, "grad": n_layers, "param_grad": n_params, "weight": n_params}


class Watcher:
    """The hooks and per-step state of one ``run.watch(model)``; ``close()`` removes every hook."""

    def __init__(
        self,
        run: Run,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        layers: LayerFilter = None,
        config: WatchConfig | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"deepscope.watch: model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"deepscope.watch: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.config = cfg = config or WatchConfig()
        for name in ("every", "sample", "dead_window"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
                raise ValueError(f"deepscope.watch: {name} must be a positive int, got {getattr(cfg, name)!r}")
        if not isinstance(cfg.start_step, int) or cfg.start_step < 0:
            raise ValueError(f"deepscope.watch: start_step must be an int >= 0, got {cfg.start_step!r}")
        if not isinstance(cfg.histograms_every, int) or cfg.histograms_every < 0:
            raise ValueError(f"deepscope.watch: histograms_every must be an int >= 0, got {cfg.histograms_every!r}")
        self.run = run
        self.model = model
        self.optimizer = optimizer
        selected = select_layers(model, layers)
        self.layers: list[Layer] = [la for la, _ in selected]
        self._params: list[tuple[str, nn.Parameter]] = []
        seen: set[int] = set()
        for layer, module in selected:
            for name, p in zip(layer.params, module.parameters(recurse=False)):
                if id(p) not in seen and p.requires_grad:
                    seen.add(id(p))
                    self._params.append((name, p))
        self.param_names = [n for n, _ in self._params]
        self._sampler = R.Sampler(cfg.sample)
        self._sat = [R.saturation_bounds(la.role) for la in self.layers]
        self._buffers: dict[torch.device, _Buffers] = {}
        self._units: dict[int, torch.Tensor] = {}  # layer index -> firing counts over the dead window
        self._warned: set[str] = set()
        self._broken: set[str] = set()
        self.step = cfg.start_step
        self._has_data = False
        self._in_step = False
        self._last_end = time.perf_counter()
        self._set_flags()

        writer = run._writer
        self._diagnoser = None
        if cfg.diagnose:
            printer = console_printer(run.name) if cfg.print_findings else None
            table = [la.to_json() for la in self.layers]
            self._diagnoser = Diagnoser(table, self.param_names, self._emit_finding(printer), thresholds)
            writer.on_scalars(self._diagnoser.observe_scalars)
        self._write_manifest()

        self.scope = HookScope()
        try:
            for layer, module in selected:
                self.scope.add(module.register_forward_hook(self._forward_hook(layer.index, module)))
            for j, (_, p) in enumerate(self._params):
                self.scope.add(p.register_post_accumulate_grad_hook(self._param_hook(j)))
            if optimizer is not None:
                self.scope.add(optimizer.register_step_pre_hook(self._guard("optimizer", self._before_optimizer_step)))
                self.scope.add(optimizer.register_step_post_hook(self._guard("optimizer", self._after_optimizer_step)))
            else:
                self.scope.add(model.register_forward_pre_hook(self._guard("model", self._before_forward)))
        except BaseException:
            self.scope.close()
            raise

    # ---- step boundaries ---------------------------------------------------------------------------
    def _set_flags(self) -> None:
        cfg = self.config
        self._recording = self.step % cfg.every == 0
        self._hist_step = self._recording and cfg.histograms_every > 0 and self.step % cfg.histograms_every == 0
        self._dead_step = (self.step + 1) % cfg.dead_window == 0

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # evaluation passes are neither recorded nor counted as steps
        if self._in_step:
            self._weights_stats()
            self.end_step()
        self._in_step = True

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._recording:
            for j, (_, p) in enumerate(self._params):
                b = self._bufs(p.device)
                b.before_len[j] = self._sampler.into(p, b.before_rows[j]) or -1  # -1: empty, never matches

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._weights_stats()
        self.end_step()

    def _weights_stats(self) -> None:
        if not self._recording:
            return
        with torch.no_grad():
            for j, (_, p) in enumerate(self._params):
                b = self._bufs(p.device)
                k = self._stage(b, "weight", j, p, None, add=False)
                b.has_update[j] = k == b.before_len[j]  # the sample before the step had the same size
                b.before_len[j] = 0

    def end_step(self) -> None:
        """Close the current step: hand its statistics to the writer thread, reset, count the step."""
        now = time.perf_counter()
        if self._recording and self._has_data:
            for b in self._buffers.values():
                b.reduce(self._hist_step)
            payload = [(dev, b.to_host(self._hist_step)) for dev, b in self._buffers.items()]
            units = None
            if self._dead_step and self._units:
                units = {i: c.to("cpu", non_blocking=True, copy=True) for i, c in self._units.items()}
                for c in self._units.values():
                    c.zero_()
            event = torch.cuda.Event() if any(d.type == "cuda" for d in self._buffers) else None
            if event is not None:
                event.record()
            step, hist, wall = self.step, self._hist_step, time.time()
            self.run._writer.add_job(lambda: self._convert(step, wall, payload, units, hist, event))
            for b in self._buffers.values():
                b.reset(self._hist_step)
        self.run._writer.add_scalars((self.step, time.time(), {"sys/step_time": now - self._last_end}, False), 1)
        self._last_end = now
        self._has_data = False
        self.step += 1
        self._set_flags()

    # ---- hooks (training thread; no device sync) -------------------------------------------------
    def _forward_hook(self, i: int, module: nn.Module) -> Any:
        where = f"layer {self.layers[i].path}"
        relu = self.layers[i].role == "relu"
        grad_hook = self._grad_hook(i, where)

        def hook(mod: nn.Module, args: Any, output: Any) -> None:
            if not self._recording or not mod.training or not torch.is_grad_enabled() or where in self._broken:
                return
            try:
                t = self._usable(first_tensor(output), where, "output")
                if t is None:
                    return
                # no torch.no_grad() needed (it costs a few µs per call): every op here reads a detached view
                self._stage(self._bufs(t.device), "act", i, t, self._sat[i])
                if relu and t.ndim >= 1:
                    self._count_units(i, R.active_units(t))
                if t.requires_grad:
                    t.register_hook(grad_hook)
                self._has_data = True
            except Exception as e:  # never crash training
                self._break(where, e)

        return hook

    def _grad_hook(self, i: int, where: str) -> Any:
        def hook(g: torch.Tensor) -> None:
            if where in self._broken or not is_float_tensor(g):
                return
            try:
                self._stage(self._bufs(g.device), "grad", i, g, None)
            except Exception as e:
                self._break(where, e)

        return hook

    def _param_hook(self, j: int) -> Any:
        where = f"parameter {self.param_names[j]}"

        def hook(p: torch.Tensor) -> None:
            if not self._recording or where in self._broken or p.grad is None or p.grad.is_sparse:
                return
            try:
                g = p.grad.detach()
                b = self._bufs(g.device)
                # the accumulated gradient so far: the last call of a step is the full gradient
                if self._stage(b, "param_grad", j, g, None, add=False):
                    flat = (g if g.dtype == torch.float32 else g.to(torch.float32)).reshape(-1)
                    torch.dot(flat, flat, out=b.norms[j])  # ‖g‖²: one BLAS pass, faster than vector_norm
                self._has_data = True
            except Exception as e:
                self._break(where, e)

        return hook

    def _stage(self, b: _Buffers, kind: str, i: int, t: torch.Tensor, sat: Any, add: bool = True) -> int:
        """Copy the sample of ``t`` into its staging row; returns its size (0: reduced at once instead).

        A second call of an accumulating row in one step (a shared module, a recurrent cell, gradient
        accumulation) finds the row taken and is reduced at once, the slower way.
        """
        r = b.start[kind] + i
        if (add and b.lengths[r]) or t.numel() == 0:
            self._accumulate(b, kind, i, self._sampler(t), sat, add)
            return 0
        k = b.lengths[r] = self._sampler.into(t, b.rows[r])
        return k

    def _accumulate(self, b: _Buffers, kind: str, i: int, s: torch.Tensor, sat: Any, add: bool = True) -> None:
        row, mn, mx = R.moments(s, sat)
        if add:
            b.acc[kind][i] += row
            b.mn[kind][i] = torch.minimum(b.mn[kind][i], mn)
            b.mx[kind][i] = torch.maximum(b.mx[kind][i], mx)
        else:
            b.acc[kind][i] = row
            b.mn[kind][i], b.mx[kind][i] = mn, mx
        if self._hist_step and kind in b.hist:
            h = R.histogram(s)
            if add:
                b.hist[kind][i] += h
            else:
                b.hist[kind][i] = h

    def _count_units(self, i: int, active: torch.Tensor) -> None:
        counts = self._units.get(i)
        if counts is None or counts.shape != active.shape or counts.device != active.device:
            counts = self._units[i] = torch.zeros(active.shape, device=active.device)
        counts += active

    def _bufs(self, device: torch.device) -> _Buffers:
        b = self._buffers.get(device)
        if b is None:  # first use, or the model moved to another device
            cfg = self.config
            b = self._buffers[device] = _Buffers(
                len(self.layers), len(self._params), device, cfg.histograms_every > 0, cfg.sample, self._sat
            )
        return b

    def _usable(self, t: Any, where: str, what: str) -> torch.Tensor | None:
        if t is None:
            self._warn_once(where, f"deepscope.watch: {where} returned no tensor; its {what} is not recorded")
            return None
        if t.is_sparse or t.is_complex() or not t.is_floating_point():
            self._warn_once(where, f"deepscope.watch: {where} returned a {t.dtype} {t.layout} tensor; skipped")
            return None
        return t

    def _guard(self, where: str, fn: Any) -> Any:
        def guarded(*args: Any) -> None:
            if where in self._broken:
                return
            try:
                fn(*args)
            except Exception as e:
                self._break(where, e)

        return guarded

    def _break(self, where: str, e: Exception) -> None:
        self._broken.add(where)
        self._warn_once(where, f"deepscope.watch: stopped recording {where} after an error: {type(e).__name__}: {e}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # ---- writer thread -----------------------------------------------------------------------------
    def _convert(self, step: int, wall: float, payload: list, units: dict | None, hist: bool, event: Any) -> list:
        if event is not None:
            event.synchronize()  # blocks the writer thread only
        stats = _combine(payload, len(self.layers), len(self._params), self._params)
        if units is not None:
            dead = np.full(len(self.layers), np.nan)
            for i, c in units.items():
                dead[i] = float((c.numpy() == 0).mean()) if c.numel() else np.nan
            stats["act"]["dead_frac"] = dead
        if self._diagnoser is not None:
            self._diagnoser.observe(step, stats)
        out = [("layerstats", layerstats_batch(step, wall, [la.path for la in self.layers], self.param_names, stats))]
        if hist:
            out.append(("histograms", watch_histograms_batch(step, wall, self.layers, self.param_names, payload)))
        return out

    def _emit_finding(self, printer: Any) -> Any:
        def emit(f: Finding) -> None:
            self.run._writer.add_event(f.step, time.time(), f"diagnosis/{f.rule}", f.severity, f.text, f.layer)
            if printer is not None:
                printer(f)

        return emit

    def _write_manifest(self) -> None:
        manifest = {
            "format_version": fmt.FORMAT_VERSION,
            "layers": [la.to_json() for la in self.layers],
            "params": self.param_names,
            "step_unit": "optimizer step" if self.optimizer is not None else "training forward pass",
            "every": self.config.every,
            "histograms_every": self.config.histograms_every,
            "sample": self.config.sample,
            "dead_window": self.config.dead_window,
            "histogram_edges": R.HIST_EDGES.tolist(),
        }
        runmeta.write_json_atomic(self.run._stream_dir / "watch.json", manifest)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Record the last step if it has data, then remove every hook."""
        try:
            if not self.scope.closed and (self._has_data or self._in_step):
                if self.optimizer is None:
                    self._weights_stats()
                self.end_step()
        finally:
            self.scope.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _combine(payload: list, n_layers: int, n_params: int, params: list) -> dict[str, dict[str, np.ndarray]]:
    """Sum the per-device accumulators (a model split over devices) and finalize the statistics."""
    one = len(payload) == 1
    acc = _fold(np.add, [p["acc_all"] for _, p in payload], one)
    mn = _fold(np.minimum, [p["mn_all"] for _, p in payload], one)
    mx = _fold(np.maximum, [p["mx_all"] for _, p in payload], one)
    rows = _rows(n_layers, n_params)
    numel = np.concatenate([np.ones(len(acc) - n_params), [p.numel() for _, p in params]])
    every = R.finalize(acc, mn, mx, numel)  # all four kinds at once; "norm" is kept for weights only
    out: dict[str, dict[str, np.ndarray]] = {}
    start = 0
    for kind, n in rows.items():
        stats = {k: v[start : start + n] for k, v in every.items() if k != "norm" or kind == "weight"}
        if kind == "param_grad":
            a = acc[start : start + n]
            stats["norm"] = np.where(a[:, R.N] > 0, np.sqrt(a[:, R.NORMSQ]), np.nan)
        if kind == "weight":
            upd = np.nansum([p["update"].numpy().astype(np.float64) for _, p in payload], axis=0)
            has = np.any([~np.isnan(p["update"].numpy()[:, 0]) for _, p in payload], axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats["update_ratio"] = np.where(has, np.sqrt(upd[:, 0] / upd[:, 1]), np.nan)
        out[kind] = stats
        start += n
    return out


def _fold(op: Any, tensors: list[torch.Tensor], one: bool) -> np.ndarray:
    """Per-device host tensors -> one float64 array, combined with ``op`` (a NumPy ufunc)."""
    if one:
        return tensors[0].numpy().astype(np.float64)
    return op.reduce([t.numpy().astype(np.float64) for t in tensors])
