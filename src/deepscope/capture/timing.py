"""Where each step's time goes, per rank: before the forward pass, in it, and after it.

Under data parallelism every rank waits for the slowest one inside the gradient all-reduce, so total
step times are equal across ranks; the time a rank spends *before reaching* the collective (data loading
plus forward) is what tells a straggler apart. Times are host-side wall clock (``perf_counter``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .layers import eager
from .scope import HookScope

if TYPE_CHECKING:
    from ..store.writer import StreamWriter

from ..types import BACKWARD_TIME as BACKWARD
from ..types import DATA_TIME as DATA
from ..types import FORWARD_TIME as FORWARD


class StepTimer:
    """Records ``sys/data_time``, ``sys/forward_time`` and ``sys/backward_time`` (which includes the
    optimizer step and any wait in collectives) for every step; a step is defined as in ``watch``."""

    def __init__(
        self,
        writer: StreamWriter,
        model: nn.Module,
        optimizer: Any = None,
        scope: HookScope | None = None,
        start_step: int = 0,
    ) -> None:
        self.writer = writer
        self.step = start_step
        self._step_end = time.perf_counter()
        self._fwd_start: float | None = None  # the step's first forward pass began
        self._fwd_end: float | None = None  # its last one ended
        self._pass_start: float | None = None  # the forward pass running now began
        self._fwd_sum = 0.0  # the step's forward passes (several with gradient accumulation)
        self._by_optimizer = optimizer is not None
        self._owns_scope = scope is None
        self.scope = scope if scope is not None else HookScope()  # share a watcher's scope: removed together
        self.scope.add(model.register_forward_pre_hook(eager(self._pre)))
        self.scope.add(model.register_forward_hook(eager(self._post)))
        if optimizer is not None:
            self.scope.add(optimizer.register_step_post_hook(lambda *a: self._end()))

    def _training(self, module: nn.Module) -> bool:
        return module.training and torch.is_grad_enabled()

    def _pre(self, module: nn.Module, args: Any) -> None:
        if not self._training(module):
            return
        now = time.perf_counter()
        if not self._by_optimizer and self._fwd_start is not None:
            self._end(now)
        if self._fwd_start is None:  # gradient accumulation: the step starts at its first forward
            self._fwd_start = now
        self._pass_start = now

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._training(module) and self._pass_start is not None:
            self._fwd_end = time.perf_counter()
            self._fwd_sum += self._fwd_end - self._pass_start
            self._pass_start = None

    def end_step(self) -> None:
        """Close the current step now (an optimizer step that was skipped: no post-step hook comes)."""
        self._end()

    def _end(self, now: float | None = None) -> None:
        now = now or time.perf_counter()
        if self._fwd_start is not None and self._fwd_end is not None:
            data = self._fwd_start - self._step_end
            values = {  # the rest of the step is "backward": with accumulation, the micro-batches between too
                DATA: data,
                FORWARD: self._fwd_sum,
                BACKWARD: now - self._step_end - data - self._fwd_sum,
            }
            try:
                self.writer.add_scalars((self.step, time.time(), values, False), len(values))
            except Exception:  # timing is a nicety: never let it cost the training step
                pass
        self._step_end = now
        self._fwd_start = self._fwd_end = self._pass_start = None
        self._fwd_sum = 0.0
        self.step += 1

    def close(self) -> None:
        if not self.scope.closed and self._fwd_start is not None and not self._by_optimizer:
            self._end()
        if self._owns_scope:
            self.scope.close()
