"""The batched-reduction path of ``watch``: one step's staging matrix and accumulators on one device.

Hooks copy a sample of their tensor into a row of ``StepBuffers.stage``; at the step's end ``reduce``
computes every row's moments, extremes and histogram in one batched pass (``reducers.reduce_rows``) and
``to_host`` starts the non-blocking copies the writer thread finalizes (``step_stats.combine``).
"""

from __future__ import annotations

from typing import Any

import torch

from . import reducers as R


class StepBuffers:
    """One step's statistics on one device: accumulated moments, minima, maxima, histograms, and the
    staging matrix the hooks copy their samples into.

    A hook does one copy (its sample into its row of ``stage``); ``reduce`` then computes every row's
    statistics at once at the step's end. Rows of all four kinds live in one matrix, ``act`` first:
    ``acc[kind]`` and the other per-kind tables are views into it.
    """

    def __init__(self, n_layers: int, n_params: int, device: torch.device, hist: bool, sample: int, sat: list) -> None:
        self.start: dict[str, int] = {}
        total = 0
        for kind, n in rows_per_kind(n_layers, n_params).items():
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


def rows_per_kind(n_layers: int, n_params: int) -> dict[str, int]:
    return {"act": n_layers, "grad": n_layers, "param_grad": n_params, "weight": n_params}
