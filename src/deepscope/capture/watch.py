"""``run.watch(model)``: per-layer statistics of activations, gradients and weights at every step.

One forward hook per watched module copies a sample of its output into its row of a preallocated staging
matrix (``step_buffers``) and registers the hook that does the same for the output's gradient. Parameter
gradients are staged, with their exact norms, just before the optimizer's step when it is given (the gradients
it steps with; on CPU in a second thread while the optimizer steps), otherwise by one hook per parameter while
each gradient is still in cache.
Nothing in a hook synchronizes with the device. At the step boundary one batched reduction turns every
row into moments and extremes; the results (and, on histogram steps, the samples themselves) go to the
writer thread, which finalizes them (``step_stats``) into ``layerstats`` rows, histograms and diagnoses.
A *step* is an optimizer step when the optimizer is given, otherwise a training-mode forward pass of the
model; passes in eval mode or under ``no_grad`` are not recorded.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..notices import notice
from . import reducers as R
from .call_order import record_call_order
from .clip_norm import wrap_clipping
from .dead_units import DeadUnits
from .diagnose import Diagnoser, Finding, Thresholds, console_printer
from .layers import (
    Layer,
    LayerFilter,
    eager,
    first_tensor,
    is_float_tensor,
    select_layers,
    uncompiled,
    unwrapped,
    watched_parameters,
)
from .manifest import write_manifest
from .param_stats import ParamStager
from .sampling import Sampler
from .scaler_hook import ScalerStepHook
from .scope import HookScope
from .step_buffers import BufferPool, StepBuffers
from .step_stats import combine, histograms
from .tables import layerstats_batch, watch_histograms_batch

if TYPE_CHECKING:
    from ..run import Run


MAX_PENDING = 256  # recorded steps waiting for the writer thread before the training thread waits for it
# On CPU a step's samples are reduced in the writer thread after steps at least this long (seconds); after
# shorter ones (small models) in the training thread: handing them over saves little there, and such steps
# outrun the writer thread, which then held hundreds of staging matrices at once.
OFFLOAD_AFTER_STEP_TIME = 0.005
# Dead units: every k-th recorded step, each ReLU-like unit's maximum over the first 4·k inputs of the batch —
# the evidence of checking 4 inputs every step, at 1/k of the ops; k ≤ DEAD_EVERY, and small enough for a
# check in every quarter of the dead window (``dead_units.PARTS``).
DEAD_EVERY = 5
# A large weight keeps its sample positions for this many steps: its sample after one optimizer step is then
# its sample before the next (one copy for all weights instead of one strided read each).
WEIGHT_POSITIONS_STEPS = 16


# With an optimizer, this many training forward passes in one step draw a warning: it seems never to step.
STALLED_PASSES = 1000
# Steps of another optimizer of the model in a row, without one of the watched optimizer, after which watch follows
# it (a new optimizer after unfreezing layers). Two optimizers stepping one model in turn are left as they are.
FOLLOW_AFTER = 2


def histogram_step(step: int, every: int) -> bool:
    """Whether ``step`` records histograms: every ``every``-th step, and, before the first of them, steps 1, 2, 5,
    10, 20, 50 … — early training, where distributions move fastest, and a short run, get more than one.

    >>> [s for s in range(300) if histogram_step(s, 100)]
    [0, 1, 2, 5, 10, 20, 50, 100, 200]
    """
    if every <= 0:
        return False
    if step % every == 0:
        return True
    if step >= every or step <= 0:
        return False
    decade = 10 ** (len(str(step)) - 1)
    return step in (decade, 2 * decade, 5 * decade)


@dataclass(frozen=True)
class WatchConfig:
    every: int = 1  # record every n-th step
    start_step: int = 0  # the index of the first step (a resumed training continues its count)
    histograms_every: int = 100  # histograms on every n-th step, and before it at 1, 2, 5, 10, 20, 50 … (0: never)
    sample: int = 4096  # elements per tensor the statistics are computed from
    dead_window: int = 100  # steps over which a ReLU unit must never fire to count as dead
    diagnose: bool = True
    print_findings: bool = True


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
        scaler: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"deepscope.watch: model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"deepscope.watch: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if scaler is not None and not callable(getattr(scaler, "get_scale", None)):
            raise TypeError(f"deepscope.watch: scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
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
        self.scaler = scaler
        self._inv_scale: torch.Tensor | None = None  # 1 / the loss scale of this step's backward pass
        # this step's optimizer step was skipped (its gradients were not finite); or, for an optimizer that skips by
        # itself (fused Adam under a GradScaler), the scaler's found-inf tensor, read in the writer thread (no sync)
        self._skipped: bool | torch.Tensor = False
        self._grad_scale: torch.Tensor | None = None  # the scale the stepped gradients still carry (fused steps)
        self.on_skipped_step: list[Any] = []  # called when a skipped optimizer step is closed
        inner = unwrapped(model)  # layer paths without torch.compile's "_orig_mod." or DDP's "module." prefix
        if uncompiled(model) is not model:
            notice(
                "deepscope.watch: the model is compiled (torch.compile): watch's hooks run between compiled graphs, "
                "so the graph breaks at every watched module and steps run closer to eager speed; watch fewer "
                "layers (layers=...) to keep more of it compiled",
                stacklevel=3,
            )
        self._params, selected = watched_parameters(inner, layers, select_layers(inner, layers))
        self.layers: list[Layer] = [la for la, _ in selected]
        self.param_names = [n for n, _ in self._params]
        self._sampler = Sampler(cfg.sample)
        self._sat = [R.saturation_bounds(la.role) for la in self.layers]
        self._buffers: dict[torch.device, StepBuffers] = {}
        self._dead = DeadUnits(cfg.dead_window, cfg.start_step, cfg.every)  # ReLU units' activity over a sliding window
        self._dead_every = min(DEAD_EVERY, max(1, cfg.dead_window // cfg.every // 4))  # recorded steps per check
        self._p = ParamStager(self._params, self._sampler, self._bufs, optimizer is not None)
        self._numels = self._p.numels
        self._large = self._p.large
        self._optimizer_steps = 0
        self._pending: deque = deque()  # recorded steps the writer thread has not converted yet
        self._job_queued = False
        self._pool = BufferPool()
        self._warned: set[str] = set()
        self._broken: set[str] = set()
        self.step = cfg.start_step
        self._has_data = False
        self._in_step = False
        self._passes = 0  # training forward passes of the model in this step (with an optimizer)
        # Once a step was taken after passes in eval mode with gradients only (a model trained in eval mode, to
        # freeze its BatchNorm statistics), every pass with gradients is a training pass.
        self._trains_in_eval = False
        self._eval_grad_passes = 0  # forward passes in eval mode with gradients in this step
        # another optimizer that steps this model (a replaced one): followed once it keeps stepping alone
        self.follow: Callable[[torch.optim.Optimizer], None] | None = None  # set by Run.watch
        self.watch_kwargs: dict[str, Any] = {}  # what run.watch was given, for a watch that follows a new optimizer
        self._model_params = {id(p) for p in model.parameters()}
        self._trains_model: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._foreign_steps = 0
        # parameter groups the watched optimizer had (one added later — unfrozen layers — means a new watch)
        self._groups = len(getattr(optimizer, "param_groups", ()))
        self._regrouped = False
        self.opened_after_step = False  # made by following a new optimizer right after its step: a loss logged
        # before the next forward pass is that step's
        self._on_other_step = self._guard("follow", self._other_optimizer_step)
        self._clip: tuple[torch.Tensor, float] | None = None  # this step's norm before clipping, and max_norm
        self._closure_step = False  # this optimizer step was given a closure
        self._writer_behind = False  # the writer thread stalled: steps are dropped, not waited for
        self._last_end = time.perf_counter()
        self._set_flags()

        self.call_order: list[str] | None = None  # the layers' paths in the order they run (first training pass)
        self._write_manifest()  # first: it refuses a run that recorded other layers
        writer = run._writer
        self._diagnoser = None
        if cfg.diagnose:
            where = run.name if run.world_size <= 1 else f"{run.name} rank {run.rank}"  # each rank prints its own
            printer = console_printer(where) if cfg.print_findings else None
            table = [la.to_json() for la in self.layers]
            emit = self._emit_finding(printer)
            self._diagnoser = Diagnoser(table, self.param_names, emit, thresholds, cfg.dead_window)
            writer.on_scalars(self._diagnoser.observe_scalars)

        self.scope = HookScope()
        try:
            for layer, module in selected:
                self.scope.add(module.register_forward_hook(eager(self._forward_hook(layer.index, module))))
            record_call_order(model, selected, self.scope, self._guard("call order", self._ordered))
            self.scope.add(wrap_clipping(self))
            for j in self._p.hooked:
                self.scope.add(self._params[j][1].register_post_accumulate_grad_hook(eager(self._param_hook(j))))
            if optimizer is not None:
                self.scope.add(optimizer.register_step_pre_hook(self._guard("optimizer", self._before_optimizer_step)))
                self.scope.add(optimizer.register_step_post_hook(self._optimizer_step_done))
                if scaler is not None:
                    self.scope.add(ScalerStepHook(scaler, self._scaler_step))
                self.scope.add(model.register_forward_pre_hook(eager(self._guard("passes", self._count_pass))))
                _follow_steps(self)
            else:
                self.scope.add(model.register_forward_pre_hook(eager(self._guard("model", self._before_forward))))
        except BaseException:
            self.scope.close()
            if self._diagnoser is not None:
                writer.remove_on_scalars(self._diagnoser.observe_scalars)
            raise

    # ---- step boundaries ---------------------------------------------------------------------------
    def log_step(self) -> int | None:
        """The step a value logged now without one belongs to: that of the latest training forward pass (its loss);
        before the first, the first step (an evaluation before training). None once closed."""
        if self.scope.closed:
            return None
        if self.optimizer is not None and not self._passes:  # after an optimizer step
            return max(self.step - 1, self.config.start_step - self.opened_after_step)
        return self.step

    def _set_flags(self) -> None:
        cfg = self.config
        self._recording = self.step % cfg.every == 0
        self._hist_step = self._recording and histogram_step(self.step, cfg.histograms_every)
        self._dead_step = self._dead.due(self.step)
        self._dead_check = self._recording and (self.step // cfg.every) % self._dead_every == 0

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # evaluation passes are neither recorded nor counted as steps
        if self._in_step:
            self._weights_stats()
            self.end_step()
        self._in_step = True

    def _scaler_step(self, step: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """``scaler.step(optimizer)``: when it skips the optimizer's step (non-finite gradients), that iteration is
        closed as a step of its own — steps keep counting the training loop's iterations."""
        before = self._optimizer_steps
        result = step(optimizer, *args, **kwargs)
        if optimizer is self.optimizer and self._optimizer_steps == before and "optimizer" not in self._broken:
            try:
                self._skipped = True
                self.end_step()
                for f in self.on_skipped_step:
                    f()
            except Exception as e:  # never crash training
                self._break("optimizer", e)
        return result

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        found_inf = getattr(optimizer, "found_inf", None)
        if isinstance(found_inf, torch.Tensor):
            # A GradScaler steps an optimizer that unscales and skips by itself (fused Adam, SGD): the gradients still
            # carry the loss scale (``grad_scale``; None when the user unscaled them), and the step always runs.
            self._skipped = found_inf
            grad_scale = getattr(optimizer, "grad_scale", None)
            self._grad_scale = grad_scale if isinstance(grad_scale, torch.Tensor) else None
        # a step given a closure (LBFGS) computes its gradients during the step: read after it
        positional = args[1:] if args and args[0] is optimizer else args  # torch passes the optimizer first
        self._closure_step = (positional[0] if positional else kwargs.get("closure")) is not None
        if not self._recording:
            return
        # a fused step unscales the gradients in place, without a version bump: read them before it, not during it
        if self._p.before_step(side=not isinstance(found_inf, torch.Tensor), grads=not self._closure_step):
            self._has_data = True

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_steps += 1
        self._foreign_steps = 0
        if len(optimizer.param_groups) != self._groups:
            self._regrouped = True  # the watch is renewed by the global hook, once the optimizer's own hooks ran
        if not self._passes and self._eval_grad_passes and not self._trains_in_eval:
            self._trains_in_eval = True  # a step after passes in eval mode only: the model trains in eval mode
            self._warn_once(
                "eval training",
                "deepscope.watch: the model is trained in eval mode (model.eval(), e.g. to freeze BatchNorm): its "
                f"forward passes with gradients are recorded as training passes from step {self.step + 1} on (run "
                "evaluations under torch.no_grad() to keep them out)",
            )
        self._eval_grad_passes = 0
        if self._closure_step and self._recording and self._p.grads_after_step():
            self._has_data = True
        self._weights_stats()  # other rows than the side thread's: it is waited for in end_step
        self.end_step()

    def _optimizer_step_done(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """The watched optimizer stepped. After an error in its statistics (one warning) its steps still count:
        the layer statistics go on, and a loss logged without a step still lands at its own step."""
        try:
            if "optimizer" not in self._broken:
                return self._after_optimizer_step(optimizer, args, kwargs)
        except Exception as e:
            self._break("optimizer", e)
        try:
            self.end_step()
        except Exception:  # never the user's: the step is counted without its statistics
            try:
                for b in self._buffers.values():
                    b.reset()
            finally:
                self._has_data = self._skipped = False
                self._passes = 0
                self.step += 1
                self._set_flags()

    def _weights_stats(self) -> None:
        if self._recording:
            self._p.after_step()

    def end_step(self) -> None:
        """Close the current step: hand its statistics to the writer thread, reset, count the step."""
        self._p.join()
        if self._grad_scale is not None:
            self._unscale_param_grads(self._grad_scale)
        now = time.perf_counter()
        if self._recording and self._has_data:
            hist = self._hist_step
            offload = now - self._last_end >= OFFLOAD_AFTER_STEP_TIME
            payload = [(dev, self._collect(dev, b, hist, offload)) for dev, b in list(self._buffers.items())]
            # the first recorded step at or after a part's end closes it: the dead share over the last window
            units = self._dead.close_part(self.step) if self._dead_step else None
            event = torch.cuda.Event() if any(d.type == "cuda" for d in self._buffers) else None
            if event is not None:
                event.record()
            self._pending.append((self.step, time.time(), payload, units, hist, event, self._skipped, self._lr()))
            if not self._job_queued:  # one job converts every step recorded until it runs
                self._job_queued = True
                self.run._writer.add_job(self._convert_pending)
            self._wait_for_writer()
        values: dict[str, Any] = {"sys/step_time": now - self._last_end}
        if self._clip is not None:  # the tensor clip_grad_norm_ returned: read in the writer thread
            values["watch/grad_norm"], values["watch/grad_clip"] = self._clip
            self._clip = None
        self.run._writer.add_scalars((self.step, time.time(), values, len(values) > 1), len(values))
        self._last_end = now
        self._has_data = self._skipped = False
        self._inv_scale = self._grad_scale = None
        self._passes = 0
        self.step += 1
        self._set_flags()

    def clipped(self, params: list[Any], total: Any, max_norm: Any, norm_type: Any) -> None:
        """``torch.nn.utils.clip_grad_norm_`` returned ``total``, the 2-norm of ``params``' gradients before it
        clipped them to ``max_norm``: kept for this step when they are this model's (``clip_norm.py``)."""
        try:
            if (
                isinstance(total, torch.Tensor)
                and total.numel() == 1
                and float(norm_type) == 2.0
                and id(params[0]) in self._model_params
                and not self.scope.closed
            ):
                self._clip = (total.detach(), float(max_norm))
        except Exception as e:  # never the user's
            self._warn_once("clip", f"deepscope.watch: the gradient norm before clipping is not recorded: {e}")

    def _unscale_param_grads(self, grad_scale: torch.Tensor) -> None:
        """Divide this step's parameter-gradient samples and norms by the loss scale they were read with."""
        for b in self._buffers.values():
            inv = grad_scale.to(b.device, torch.float64).reciprocal()
            pg = b.start["param_grad"]
            b.stage[pg : pg + b.n_params].mul_(inv.float())
            b.normsq.mul_(inv.square().float())

    def _lr(self) -> float | None:
        """The optimizer's (first group's) learning rate, when it is a plain number (a tensor one would need a sync)."""
        groups = getattr(self.optimizer, "param_groups", None)
        lr = groups[0].get("lr") if groups else None
        return float(lr) if isinstance(lr, (int, float)) else None

    def _wait_for_writer(self) -> None:
        """Backpressure: a model whose steps take less time than their conversion (a tiny one) waits for the
        writer thread past ``MAX_PENDING`` steps, so memory stays bounded — never more than 5 s. A writer that
        did not catch up in 5 s has stalled (a hung file system): until it does, the oldest waiting steps'
        statistics are dropped instead (one warning), and training goes on at its own pace."""
        n = len(self._pending)
        if n <= MAX_PENDING // 2:
            self._writer_behind = False
        if n <= MAX_PENDING:
            return
        if not self._writer_behind:
            self.run._writer.add_job(self._convert_pending)  # in case none is queued (one interrupted in between)
            deadline = time.monotonic() + 5.0
            while len(self._pending) > MAX_PENDING // 2 and time.monotonic() < deadline:
                time.sleep(0.002)
            if len(self._pending) <= MAX_PENDING // 2:
                return
            self._writer_behind = True
            self._warn_once(
                "writer behind",
                "deepscope.watch: the writer thread has not kept up for 5 s (a slow or stalled disk?): while it is "
                "behind, the layer statistics of the oldest waiting steps are dropped rather than holding training up",
            )
        while len(self._pending) > MAX_PENDING:
            try:
                payload = self._pending.popleft()[2]
            except IndexError:  # the writer thread took them meanwhile
                break
            for _, p in payload:
                b = p.pop("buffers", None)
                if b is not None:
                    self._pool.give_back(b)

    def _collect(self, dev: torch.device, b: StepBuffers, hist: bool, offload: bool) -> dict[str, Any]:
        """The step's statistics of one device; stages the next step into clean buffers."""
        out = b.collect(hist)
        nxt = b
        if "buffers" in out:  # CPU: reduced in the writer thread while the next step is staged elsewhere
            swapped = self._pool.swap(b) if offload else None
            if swapped is None:  # a short step (a small model), or too much handed over already: reduce here
                del out["buffers"]
                b.reduce_on_host(out, hist)
                b.reset()
            else:
                nxt = self._buffers[dev] = swapped
        else:
            b.reset()
        if self._carry_weights():
            nxt.carry_weights(b, self._large, out["lengths"])
        return out

    def _carry_weights(self) -> bool:
        """Whether the next step (recorded, positions unchanged) takes this step's weight samples as its before."""
        nxt = self.step + 1
        return (self.optimizer is not None and bool(self._large) and self.config.every == 1
                and nxt % WEIGHT_POSITIONS_STEPS != 0)  # fmt: skip

    # ---- hooks (training thread; no device sync) -------------------------------------------------
    def _forward_hook(self, i: int, module: nn.Module) -> Any:
        where = f"layer {self.layers[i].path}"
        relu = self.layers[i].role == "relu"
        grad_hook = eager(self._grad_hook(i, where))
        sat = self._sat[i]
        broken = self._broken
        model = self.model

        def hook(mod: nn.Module, args: Any, output: Any) -> None:
            # a layer kept in eval mode inside a model that trains (a frozen BatchNorm while fine-tuning) is recorded
            training = mod.training or model.training or self._trains_in_eval
            if not (self._recording and training) or where in broken or not torch.is_grad_enabled():
                return
            try:
                t = output if type(output) is torch.Tensor else first_tensor(output)
                t = self._usable(t, where, "output")
                if t is None:
                    return
                # no torch.no_grad() needed (it costs a few µs per call): every op here reads a detached view
                d = t.detach()
                self._stage(self._bufs(t.device), "act", i, d, sat)
                if relu and self._dead_check and d.ndim >= 1:
                    self._count_units(i, d)
                # a non-leaf only: a leaf output (a module returning its own parameter) lives across steps, and a
                # hook on it would stay, one more each step; its gradient is recorded as the parameter's
                if t.requires_grad and t.grad_fn is not None:
                    t.register_hook(grad_hook)
                self._has_data = True
            except Exception as e:  # never crash training
                self._break(where, e)

        return hook

    def _grad_hook(self, i: int, where: str) -> Any:
        broken = self._broken

        def hook(g: torch.Tensor) -> None:
            if where in broken or not is_float_tensor(g):
                return
            try:
                scale = self._unscale() if self.scaler is not None else None
                # detached: the gradient requires grad after a create_graph=True backward
                self._stage(self._bufs(g.device), "grad", i, g.detach(), None, scale)
            except Exception as e:
                self._break(where, e)

        return hook

    def _unscale(self) -> torch.Tensor | None:
        """1 / the GradScaler's current scale, as a tensor on its device (no sync); None when it does not scale.
        Output gradients come from the scaled loss: recorded unscaled, as the parameter gradients the step uses."""
        if self._inv_scale is None:
            scale = getattr(self.scaler, "_scale", None)  # the scale tensor scale() multiplied the loss by
            if isinstance(scale, torch.Tensor) and self.scaler.is_enabled():
                self._inv_scale = scale.double().reciprocal().float()
        return self._inv_scale

    def _param_hook(self, j: int) -> Any:
        where = f"parameter {self.param_names[j]}"
        broken = self._broken

        def hook(p: torch.Tensor) -> None:
            g = p.grad
            if not self._recording or where in broken or g is None or g.is_sparse:
                return
            try:
                g = g.detach()
                b = self._bufs(g.device)
                # the accumulated gradient so far: the last call of a step is the full gradient
                if b.stage_row(b.start["param_grad"] + j, g):
                    flat = (g if g.dtype == torch.float32 else g.to(torch.float32)).reshape(-1)
                    torch.dot(flat, flat, out=b.norms[j])  # ‖g‖² while g is in cache: one BLAS pass
                self._has_data = True
            except Exception as e:
                self._break(where, e)

        return hook

    def _stage(self, b: StepBuffers, kind: str, i: int, t: torch.Tensor, sat: Any, scale: Any = None) -> int:
        """Copy the sample of ``t`` (times ``scale``, if given) into its staging row; returns its size (0: reduced
        at once instead).

        A second call of a row in one step (a shared module, a recurrent cell, gradient accumulation)
        finds the row taken and is reduced at once, the slower way.
        """
        r = b.start[kind] + i
        if b.lengths[r]:
            sample = self._sampler(t)
            b.accumulate(r, sample if scale is None else sample.mul_(scale), sat, self._hist_step)
            return 0
        k = b.stage_row(r, t)
        if k and scale is not None:
            b.rows[r][:k].mul_(scale)
        return k

    def _other_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Any optimizer's step (a global hook): one that trains this model's parameters — all those the watched one
        trained, and maybe more (unfrozen since) —, stepping while the watched one does not, replaces it. Its steps
        close this watch's steps, and a new watch follows it (``follow``), with the parameters that train now."""
        if self.follow is None or self.scope.closed:
            return
        if optimizer is self.optimizer:
            if self._regrouped:
                self.follow(optimizer)  # the same optimizer, with the parameters it trains now
            return
        trains = self._trains_model.get(optimizer)
        if trains is None:  # it trains what the watched one trained, and this model: it replaces it (another
            # optimizer of other parameters — a GAN's discriminator, a critic stepping more often — does not)
            ids = lambda o: {id(p) for g in getattr(o, "param_groups", []) for p in g.get("params", [])}  # noqa: E731
            theirs = ids(optimizer)
            trains = bool(theirs & self._model_params) and ids(self.optimizer) <= theirs
            self._trains_model[optimizer] = trains
        if not trains:
            return
        if self._passes:  # it ends training passes the watched one did not: closed at once, as its own step would be
            # (one that steps right after the watched one — both training this model — closes nothing)
            self._weights_stats()
            self.end_step()
            for f in self.on_skipped_step:  # the step timer's
                f()
            self._foreign_steps += 1
        if self._foreign_steps < FOLLOW_AFTER:
            return
        self._foreign_steps = 0
        self.follow(optimizer)  # this watch closes; the new one starts at the next step

    def _count_pass(self, module: nn.Module, args: Any) -> None:
        """A training forward pass of the model (with an optimizer); warns once when the optimizer never seems to
        step. Counted on every step, recorded or not."""
        grad = torch.is_grad_enabled()
        if grad and not module.training and not self._trains_in_eval:
            self._eval_grad_passes += 1
        if not (grad and (module.training or self._trains_in_eval)):
            return
        self._passes += 1
        if self._passes == STALLED_PASSES:
            self._warn_once(
                "stalled",
                f"deepscope.watch: {STALLED_PASSES} training forward passes without a step of the optimizer given to "
                "watch: their statistics are pooled into one step, written when it steps. Is it the optimizer that "
                "trains the model? (A torch optimizer of all its parameters that steps instead is followed by "
                "itself.) A wrapper that does not call torch.optim.Optimizer.__init__ runs no step hooks: pass the "
                "optimizer inside it; updates written by hand need watch without an optimizer.",
            )

    def _count_units(self, i: int, t: torch.Tensor) -> None:
        """Add each unit's maximum over the first inputs of the batch (ReLU outputs: > 0 iff it fired)."""
        x = t[: 4 * self._dead_every] if t.ndim >= 2 else t  # (B, …) -> (≤4k, …)
        d = R.unit_dim(x.ndim) if x.ndim >= 2 else 0
        dims = [k for k in range(x.ndim) if k != d]
        self._dead.add(i, x.amax(dim=dims) if dims else x)

    def _bufs(self, device: torch.device) -> StepBuffers:
        b = self._buffers.get(device)
        if b is None:  # first use, or the model moved to another device
            n_layers, n_params = len(self.layers), len(self._params)
            b = self._buffers[device] = StepBuffers(n_layers, n_params, device, self._sampler, self._sat)
        return b

    def _usable(self, t: Any, where: str, what: str) -> torch.Tensor | None:
        if t is None:
            self._warn_once(where, f"deepscope.watch: {where} returned no tensor; its {what} is not recorded")
            return None
        if t.is_sparse or t.is_complex() or not t.is_floating_point():
            kind = "a sparse" if t.is_sparse else "a complex" if t.is_complex() else "an integer or boolean"
            self._warn_once(
                where, f"deepscope.watch: {where} returned {kind} tensor ({t.dtype}); its {what} is not recorded"
            )
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
            notice(message, stacklevel=None)  # at the user's line that ran the hook (model(x), backward())

    # ---- writer thread -----------------------------------------------------------------------------
    def _convert_pending(self) -> list:
        self._job_queued = False  # before taking: a step added from now on queues a new job
        out: list = []
        # Diverged values (inf, NaN, beyond float32) are data to record, not numpy warnings: overflows in sums and
        # casts are expected here (errstate is per thread: the training thread's settings are untouched).
        with np.errstate(all="ignore"):
            while True:
                try:
                    item = self._pending.popleft()
                except IndexError:  # empty (the training thread may drop steps when this thread stalled)
                    break
                out += self._convert(*item)
        return out

    def _convert(
        self,
        step: int,
        wall: float,
        payload: list,
        units: dict | None,
        hist: bool,
        event: Any,
        skipped: Any,
        lr: float | None,
    ) -> list:
        if event is not None:
            event.synchronize()  # blocks the writer thread only
        if isinstance(skipped, torch.Tensor):  # a fused optimizer's step, skipped by itself when this is > 0
            skipped = bool(skipped.item())
        for _, p in payload:
            b = p.pop("buffers", None)
            if b is not None:
                try:
                    b.reduce_on_host(p, hist)
                finally:
                    self._pool.give_back(b)
        stats = combine(payload, len(self.layers), len(self._params), self._numels)
        if units is not None:
            dead = np.full(len(self.layers), np.nan)
            for i, c in units.items():
                dead[i] = float((c.numpy() == 0).mean()) if c.numel() else np.nan
            stats["act"]["dead_frac"] = dead
        if self._diagnoser is not None:
            self._diagnoser.observe(step, stats, skipped, lr)
        out = [("layerstats", layerstats_batch(step, wall, [la.path for la in self.layers], self.param_names, stats))]
        if hist:
            counts = histograms(payload)
            out.append(("histograms", watch_histograms_batch(step, wall, self.layers, self.param_names, counts)))
        return out

    def _emit_finding(self, printer: Any) -> Any:
        def emit(f: Finding) -> None:
            self.run._writer.add_event(f.step, time.time(), f"diagnosis/{f.rule}", f.severity, f.text, f.layer)
            if printer is not None:
                printer(f)

        return emit

    def _write_manifest(self) -> None:
        inner = unwrapped(self.model)
        model_layers = [la for la, _ in select_layers(inner)]
        model_params = [n for n, _ in inner.named_parameters()]
        write_manifest(self.run, self.layers, self.param_names, self.optimizer is not None, self.config,
                       model_layers, model_params, self.call_order)  # fmt: skip

    def _ordered(self, paths: list[str]) -> None:
        """The layers' order of calls is known (first training pass): the manifest says it, written by the writer
        thread."""
        self.call_order = paths

        def job() -> list:
            self._guard("call order", self._write_manifest)()
            return []

        self.run._writer.add_job(job)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Record the last step if it has data, then remove every hook.

        With an optimizer, passes after its last step (a training-mode forward to measure accuracy) are not a step:
        no optimizer step closed them."""
        _followers.discard(self)
        try:
            self._p.close()
            if not self.scope.closed and self.optimizer is None and (self._has_data or self._in_step):
                self._weights_stats()
                self.end_step()
        except Exception as e:  # the last step's statistics are lost, never the user's training or finish()
            self._break("the last step", e)
        finally:
            self.scope.close()
            if self._diagnoser is not None:  # a watch that ended reports nothing more, and is not kept alive —
                # once the values logged before its end were judged (a loss spike just before finish())
                try:
                    self.run._writer.flush(timeout=5.0)
                finally:
                    self.run._writer.remove_on_scalars(self._diagnoser.observe_scalars)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Every optimizer's steps reach the watches that have an optimizer through one global hook, registered once: a
# watch that follows a new optimizer is made inside it, where adding or removing a global hook would change the
# hooks torch is iterating over.
_followers: weakref.WeakSet[Watcher] = weakref.WeakSet()
_global_hook: Any = None


def _follow_steps(watcher: Watcher) -> None:
    global _global_hook
    if _global_hook is None:
        _global_hook = register_optimizer_step_post_hook(_any_optimizer_step)
    _followers.add(watcher)


def _any_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    for watcher in list(_followers):
        watcher._on_other_step(optimizer, args, kwargs)
