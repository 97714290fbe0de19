"""The parameter side of ``watch``: weights and their gradients, staged into ``StepBuffers`` rows.

With an optimizer every gradient is read just before its step — after clipping, a GradScaler's unscaling and
DDP's averaging, i.e. the gradient the step uses —: exact norms in one batched ``_foreach_norm`` and no hook per
parameter. (Reading large ones in their hooks while in cache was 4–5 % of an MLP step cheaper, but saw raw
gradients: 65536× too large under AMP.) On CPU large gradients are read in a second thread while the optimizer
steps, which reads them too; an optimizer that changes them in place meanwhile is caught by their versions.
Parameters of at most ``sample`` elements (biases, norms, small kernels) are taken whole — all of them in one copy
per step and kind — and their exact norms come from that copy. A large weight keeps its sample positions across
steps, so its sample after one optimizer step is its sample before the next.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn

from .sampling import Sampler
from .step_buffers import StepBuffers

# Large gradients are read in a second thread while the optimizer steps (CPU) from this many bytes on: a cold
# `_foreach_norm` over 13 MB took 1.15 ms on the 12-layer MLP; handing a job to a thread costs tens of µs.
SIDE_MIN_BYTES = 4 << 20


class ParamStager:
    """Stages the watched parameters' weights (before and after the optimizer step) and gradients.

    ``bufs(device)``: the step's buffers on a device. Without an optimizer, the large parameters' gradients come
    from their own hooks (``hooked``); the watcher registers those.
    """

    def __init__(
        self,
        params: list[tuple[str, nn.Parameter]],
        sampler: Sampler,
        bufs: Callable[[torch.device], StepBuffers],
        with_optimizer: bool,
    ) -> None:
        self.params = params
        self.sampler = sampler
        self.bufs = bufs
        self.numels = [p.numel() for _, p in params]
        small = [j for j, n in enumerate(self.numels) if n <= sampler.sample] if with_optimizer else []
        self.small = small
        self.large = [j for j in range(len(params)) if j not in set(small)]
        self.hooked = [] if with_optimizer else self.large
        self._starts = [0] * len(params)  # this step's sample positions of each weight
        self._after: list[tuple[int, int] | None] = [None] * len(params)  # (version, address) when sampled
        self._side: ThreadPoolExecutor | None = None
        self._side_job: tuple[Future, list[int], list[torch.Tensor], list[int]] | None = None
        self._side_unsafe = False  # the optimizer changed gradients in place during its step: read them before

    def before_step(self, side: bool = True, grads: bool = True) -> bool:
        """Weights and gradients just before the optimizer's step; whether any gradient was staged. ``side``: large
        gradients may be read in the side thread during the step (not when the step rewrites them in place without a
        version bump, as a fused optimizer unscaling them does). ``grads``: False for a step given a closure (LBFGS),
        whose gradients its closure computes during the step: ``grads_after_step`` reads them."""
        sampler, params, staged = self.sampler, self.params, False
        for j in self.large:
            p = params[j][1]
            b = self.bufs(p.device)
            if b.before_len[j] and self._after[j] == (p._version, p.data_ptr()):
                continue  # carried over: the previous step's sample after its update, and nothing changed since
            start = self._starts[j] = sampler.start(self.numels[j])
            b.before_len[j] = sampler.into(p.detach(), b.before_rows[j], start) or -1  # -1: never matches
        with torch.no_grad():
            if self.small:
                self._stage_small("before", self.small)
            if not grads:
                return False
            if self.small:
                staged = self._stage_small("param_grad", [j for j in self.small if _dense_grad(params[j][1])]) > 0
            large = [j for j in self.large if _dense_grad(params[j][1])]
            if large:
                self.join()
                tensors = [params[j][1].grad for j in large]
                if side and self._side_worth(large):
                    # While the optimizer steps, on the other core: most optimizers only read the gradients. One that
                    # changes them in place (Nesterov momentum) bumps their versions, one that replaces or frees
                    # them (set to None) leaves these ones unchanged and unread by it: see `join`.
                    job = self._side_pool().submit(self._stage_large_grads, large, tensors)
                    self._side_job = (job, large, tensors, [g._version for g in tensors])
                else:  # an accelerator queues the kernels without waiting anyway
                    self._stage_large_grads(large, tensors)
                staged = True
        return staged

    def grads_after_step(self) -> bool:
        """The gradients as a step given a closure left them (its last evaluation's); whether any was staged."""
        params = self.params
        with torch.no_grad():
            staged = (
                bool(self.small)
                and self._stage_small("param_grad", [j for j in self.small if _dense_grad(params[j][1])]) > 0
            )
            large = [j for j in self.large if _dense_grad(params[j][1])]
            if large:
                self._stage_large_grads(large, [params[j][1].grad for j in large])
        return staged or bool(large)

    def after_step(self) -> None:
        """The weights after the optimizer's step (or at the end of a step without one)."""
        for j in self.large:
            p = self.params[j][1]
            b = self.bufs(p.device)
            self._after[j] = (p._version, p.data_ptr())  # a later in-place change or a move voids the carry
            start = self._starts[j] if b.before_len[j] else None  # the positions sampled before the step
            k = b.stage_row(b.start["weight"] + j, p.detach(), start)
            b.has_update[j] = k == b.before_len[j]  # the sample before the step had the same size
            b.before_len[j] = 0
        if self.small:
            with torch.no_grad():
                self._stage_small("weight", self.small)

    def join(self) -> None:
        """Wait for the gradient norms and samples taken during the optimizer's step (their errors surface here).

        Gradients the step changed in place meanwhile may have been read half changed: this step drops their
        statistics, and from now on they are read before the step, in the training thread."""
        side, self._side_job = self._side_job, None
        if side is None:
            return
        job, js, tensors, versions = side
        job.result()
        changed = [j for j, g, v in zip(js, tensors, versions) if g._version != v]
        if changed:
            self._side_unsafe = True
            b = self.bufs(tensors[0].device)
            pg = b.start["param_grad"]
            for j in changed:
                b.lengths[pg + j] = 0
                b.normsq[j] = float("nan")

    def close(self) -> None:
        """Wait for the side thread's last job and stop it."""
        try:
            self.join()
        finally:
            if self._side is not None:
                self._side.shutdown(wait=True)
                self._side = None

    def _side_worth(self, js: list[int]) -> bool:
        """Whether gradients ``js`` are read in the side thread: on CPU, unless the optimizer changes them in place,
        and when they are large enough (``SIDE_MIN_BYTES``) for the norm to cost more than handing it over."""
        if self._side_unsafe or sum(self.numels[j] for j in js) * 4 < SIDE_MIN_BYTES:
            return False
        return all(self.params[j][1].grad.device.type == "cpu" for j in js)

    def _side_pool(self) -> ThreadPoolExecutor:
        if self._side is None:
            self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepscope-watch")
        return self._side

    def _stage_large_grads(self, js: list[int], tensors: list[torch.Tensor]) -> None:
        """Samples and exact norms of gradients ``tensors`` of parameters ``js`` (one ``_foreach_norm`` per device):
        the tensors taken before the step, not ``p.grad`` read again — the step may have set that to None."""
        grad_of = dict(zip(js, tensors))
        with torch.no_grad():  # per thread: this may run in the side thread (a create_graph backward's gradients)
            for dev, group in self._by_device(js).items():
                b = self.bufs(dev)
                grads = [grad_of[j].detach() for j in group]
                b.set_norms(group, torch._foreach_norm(grads))
                pg = b.start["param_grad"]
                for j, g in zip(group, grads):
                    b.stage_row(pg + j, g)

    def _stage_small(self, kind: str, js: list[int]) -> int:
        """Copy the small parameters ``js`` (or their gradients) whole into their rows, one copy per device."""
        for dev, group in self._by_device(js).items():
            self.bufs(dev).stage_whole(kind, group, [self.params[j][1] for j in group])
        return len(js)

    def _by_device(self, js: list[int]) -> dict[torch.device, list[int]]:
        by_device: dict[torch.device, list[int]] = {}
        for j in js:
            by_device.setdefault(self.params[j][1].device, []).append(j)
        return by_device


def _dense_grad(p: torch.Tensor) -> bool:
    return p.grad is not None and not p.grad.is_sparse
