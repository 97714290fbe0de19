"""The batched-reduction path of ``watch``: one step's staged samples on one device.

Hooks copy a sample of their tensor into a row of ``StepBuffers.stage`` (``stage_row``); rows are grouped
by kind, ``act`` first (``rows_per_kind``). At the step's end ``collect`` hands over what the writer
thread finalizes (``step_stats.combine``):

- on an accelerator, the statistics of every row from one batched reduction on the device
  (``reducers.reduce_rows``), copied to the host without a sync, and on histogram steps the samples;
- on the CPU, the staged samples themselves: the training thread's core is the device, so the
  reduction runs in the writer thread (``reducers.reduce_rows_host``, in NumPy, which releases the GIL)
  and the training thread only swaps in a spare set of buffers (``BufferPool``).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from . import reducers as R
from .sampling import Sampler


def rows_per_kind(n_layers: int, n_params: int) -> dict[str, int]:
    return {"act": n_layers, "grad": n_layers, "param_grad": n_params, "weight": n_params}


NORM_INDEX_KEPT = 32  # subsets of parameters with gradients whose index tensors are kept


class StepBuffers:
    """One step's staged samples on one device, and the rarer second calls of a row (``accumulate``)."""

    def __init__(self, n_layers: int, n_params: int, device: torch.device, sampler: Sampler, sat: list) -> None:
        self.start: dict[str, int] = {}
        total = 0
        for kind, n in rows_per_kind(n_layers, n_params).items():
            self.start[kind] = total
            total += n
        self.device = device
        self.n_params = n_params
        self.sampler = sampler
        width = sampler.sample
        self.stage = torch.zeros(total, width, device=device)  # row r: lengths[r] values, then stale ones
        self.rows = list(self.stage.unbind(0))
        self.rows2d = [r.view(sampler.clusters, sampler.width) for r in self.rows]
        self.lengths = [0] * total
        self.normsq = torch.zeros(n_params, device=device)  # exact ‖param grad‖², valid where staged
        self.norms = list(self.normsq.unbind(0))
        self.before = torch.zeros(n_params, width, device=device)  # weight samples before the optimizer step
        self.before_rows = list(self.before.unbind(0))
        self.before_len = [0] * n_params
        self.has_update = [False] * n_params
        a = self.start["act"]
        self.sat = R.Saturation.of([a + i for i, b in enumerate(sat) if b], [b for b in sat if b])
        self.extra: dict[str, torch.Tensor] | None = None  # second calls of a row this step
        self.nbytes = (self.stage.numel() + self.before.numel()) * 4
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}
        self._norm_index: dict[tuple[int, ...], torch.Tensor] = {}
        self._whole: dict[tuple, torch.Tensor] = {}  # row prefixes shaped like the parameters taken whole
        self.whole_grad = np.zeros(n_params, bool)  # gradients taken whole: their norm is the sample's

    def stage_row(self, r: int, x: torch.Tensor, start: int | None = None) -> int:
        """Copy the sample of ``x`` into row ``r``; returns its size (0 for an empty tensor)."""
        k = self.lengths[r] = self.sampler.into(x, self.rows[r], start, self.rows2d[r])
        return k

    def stage_whole(self, kind: str, js: list[int], params: list[torch.Tensor]) -> None:
        """Copy whole parameters (``kind`` "weight" or "before") or their gradients ("param_grad") into
        the rows of parameters ``js``, in one copy; they must fit a row."""
        start = self.start["weight" if kind == "before" else kind]
        src = [p.grad if kind == "param_grad" else p for p in params]
        dst = []
        for j, t in zip(js, src):
            key = (kind, j, t.shape)
            view = self._whole.get(key)
            if view is None:
                row = self.before_rows[j] if kind == "before" else self.rows[start + j]
                view = self._whole[key] = row[: t.numel()].view(t.shape)
            dst.append(view)
        torch._foreach_copy_(dst, src)
        lengths = self.before_len if kind == "before" else self.lengths
        for j, t in zip(js, src):
            lengths[j if kind == "before" else start + j] = t.numel()
        if kind == "weight":
            for j in js:
                self.has_update[j] = self.before_len[j] == self.lengths[start + j]
                self.before_len[j] = 0
        elif kind == "param_grad":
            self.whole_grad[js] = True

    def carry_weights(self, prev: StepBuffers, js: list[int], lengths: np.ndarray) -> None:
        """Take ``prev``'s weight samples (``lengths``: its row lengths) of parameters ``js`` as this step's samples
        before the optimizer step, in one copy; ``prev`` may be this set itself (its rows are still in place)."""
        w = prev.start["weight"]
        self.before.copy_(prev.stage[w : w + self.n_params])
        for j in js:
            self.before_len[j] = int(lengths[w + j])

    def set_norms(self, js: list[int], norms: list[torch.Tensor]) -> None:
        """Exact gradient norms of parameters ``js`` (0-d tensors, as ``torch._foreach_norm`` returns them)."""
        key = tuple(js)
        idx = self._norm_index.get(key)
        if idx is None:
            if len(self._norm_index) >= NORM_INDEX_KEPT:  # a routed model's experts: another subset each step
                self._norm_index.clear()
            idx = self._norm_index[key] = torch.tensor(js, device=self.device)
        self.normsq.index_copy_(0, idx, torch.stack(norms).to(torch.float32).square_())

    def accumulate(self, r: int, s: torch.Tensor, sat: Any, hist: bool) -> None:
        """Add the moments of sample ``s`` (1-D float32) of a row's second call in this step."""
        if s.numel() == 0:
            return
        e = self.extra
        if e is None:
            rows = self.stage.shape[0]
            e = self.extra = {
                "acc": torch.zeros(rows, R.MOMENTS, device=self.device),
                "mn": torch.full((rows,), float("inf"), device=self.device),
                "mx": torch.full((rows,), float("-inf"), device=self.device),
                "hist": torch.zeros(rows, R.HIST_BINS, device=self.device),
            }
        row, mn, mx = R.moments(s, sat)
        e["acc"][r] += row
        e["mn"][r] = torch.minimum(e["mn"][r], mn)
        e["mx"][r] = torch.maximum(e["mx"][r], mx)
        if hist:
            e["hist"][r] += R.histogram(s)

    def collect(self, hist: bool) -> dict[str, Any]:
        """What the writer thread needs to finalize this step (see the module's docstring)."""
        out: dict[str, Any] = {"lengths": np.array(self.lengths), "has_update": np.array(self.has_update)}
        if self.extra is not None:
            out["extra"] = {k: _host(v) for k, v in self.extra.items() if hist or k != "hist"}
        pg, w = self.start["param_grad"], self.start["weight"]
        if self.device.type == "cpu":
            out["buffers"] = self  # reduced by the writer thread, then handed back to the pool
            return out
        valid = self._valid()
        rows = R.reduce_rows(self.stage, valid, self.sat)
        rows[pg:w, R.NORMSQ] = self.normsq  # exact squared norms; reduce_rows leaves the column 0
        if self.whole_grad.any():
            whole = torch.from_numpy(np.flatnonzero(self.whole_grad) + pg).to(self.device)
            rows[whole, R.NORMSQ] = rows[whole, R.SUMSQ]
        out["rows"] = _host(rows)
        if any(self.has_update):
            v = valid[w : w + self.n_params]
            d = torch.where(v, self.stage[w : w + self.n_params] - self.before, 0.0)  # a NaN weight stays NaN
            b = torch.where(v, self.before, 0.0)
            out["update"] = _host(torch.stack([(d * d).sum(1), (b * b).sum(1)], dim=1))
        if hist:
            out["samples"] = _host(self.stage)
        return out

    def reduce_on_host(self, out: dict[str, Any], hist: bool) -> None:
        """The CPU's reduction (writer thread): fills ``out`` as ``collect`` does on an accelerator."""
        x = self.stage.numpy()
        lengths = out["lengths"]
        rows = R.reduce_rows_host(x, lengths, self.sat)
        pg, w = self.start["param_grad"], self.start["weight"]
        rows[pg:w, R.NORMSQ] = np.where(self.whole_grad, rows[pg:w, R.SUMSQ], self.normsq.numpy())
        out["rows"] = rows
        if out["has_update"].any():
            out["update"] = R.update_sums_host(x[w : w + self.n_params], self.before.numpy(), lengths[w:])
        if hist:
            out["histograms"] = R.histogram_rows(x, lengths)

    def _valid(self) -> torch.Tensor:
        """(R, S) bool: the sampled positions of each row (cached: lengths rarely change)."""
        key = tuple(self.lengths)
        m = self._masks.get(key)
        if m is None:
            if len(self._masks) > 16:
                self._masks.clear()
            n = torch.tensor(key, device=self.device)
            m = self._masks[key] = torch.arange(self.stage.shape[1], device=self.device) < n[:, None]
        return m

    def reset(self) -> None:
        self.lengths = [0] * len(self.lengths)
        self.has_update = [False] * self.n_params
        self.before_len = [0] * self.n_params
        self.whole_grad[:] = False
        self.extra = None


class BufferPool:
    """Spare CPU buffers: a step's buffers go to the writer thread and come back once it has reduced them.

    At most ``budget`` bytes of buffers exist besides the ones being staged into; past that a step is
    reduced in the training thread itself (a writer that falls behind costs time, never unbounded memory).
    Buffers that come back are kept for reuse, not freed: freeing and allocating megabytes at every burst
    fragments the heap and grows the resident set.
    """

    def __init__(self, budget: int = 32 << 20) -> None:
        self.budget = budget
        self._spare: list[StepBuffers] = []
        self._allocated = 0  # bytes of buffers handed to the writer thread or spare
        self._lock = threading.Lock()

    def swap(self, b: StepBuffers) -> StepBuffers | None:
        """A clean set of buffers like ``b`` to stage the next step into, or None past the budget."""
        with self._lock:
            nxt = self._spare.pop() if self._spare else None
            if nxt is None:
                if self._allocated + b.nbytes > self.budget:
                    return None
                self._allocated += b.nbytes
        if nxt is None or nxt.stage.shape != b.stage.shape or nxt.device != b.device:
            nxt = StepBuffers.__new__(StepBuffers)
            nxt.__dict__.update(b.__dict__)  # same layout and sampler; fresh tensors below
            nxt.stage = torch.zeros_like(b.stage)
            nxt.rows = list(nxt.stage.unbind(0))
            nxt.rows2d = [r.view(b.sampler.clusters, b.sampler.width) for r in nxt.rows]
            nxt.normsq = torch.zeros_like(b.normsq)
            nxt.norms = list(nxt.normsq.unbind(0))
            nxt.before = torch.zeros_like(b.before)
            nxt.before_rows = list(nxt.before.unbind(0))
            nxt._masks = {}
            nxt._whole = {}
            nxt._norm_index = {}
            nxt.whole_grad = np.zeros(b.n_params, bool)
        nxt.reset()
        return nxt

    def give_back(self, b: StepBuffers) -> None:
        with self._lock:
            self._spare.append(b)


def _host(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` on the host: non-blocking from an accelerator (the writer waits for an event)."""
    if t.device.type == "cpu":
        return t.clone()
    return t.to("cpu", non_blocking=True, copy=True)
