"""Diagnoses from per-step layer statistics, off the hot path (in the writer thread).

Each rule looks at one step's statistics (and a little memory of earlier steps) and reports a finding at
most once per (rule, layer): saturated units, dead units, vanishing or exploding gradients across depth,
update-to-weight ratios far from ~1e-3, NaN/Inf, loss spikes, and a loss that does not fall.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    saturated_frac: float = 0.5  # share of a bounded activation's outputs within 5% of its limits
    dead_frac: float = 0.5  # share of ReLU units that never fired over the window
    vanishing_ratio: float = 1e-2  # bottom-layer / top-layer weight-gradient norm
    exploding_ratio: float = 1e2
    update_low: float = 1e-5  # median update-to-weight ratio
    update_high: float = 1e-1
    patience: int = 10  # recorded steps a condition must hold before it is reported
    early_steps: int = 500  # "learning rate too low" is only judged before this step
    spike_factor: float = 10.0  # loss above median + factor × MAD of the recent window …
    spike_min_share: float = 0.05  # … and above it by at least this share of the loss's early scale
    norm_jump: float = 1e2  # the weight-gradient norm above this many times its recent median: diverging, at once
    diverging_update: float = 1.0  # a median update/weight ratio above this: each step rewrites the weights
    plateau_values: int = 200  # loss values logged before a loss that has not fallen is reported …
    plateau_share: float = 0.02  # … having fallen by less than this share of its start since
    plateau_until: int = 1000  # loss values after which a loss still falling is no longer judged


SPIKE_HISTORY = 20  # loss values before one is judged a spike against them
SPIKE_LOOKBACK = 5  # values before the one judged that may be the spike's peak


@dataclass(frozen=True)
class Finding:
    step: int
    # saturation, dead_units, vanishing/exploding_gradients, zero_gradients, update_ratio_low/high, nonfinite,
    # loss_spike, loss_plateau, skipped_step
    rule: str
    severity: str
    layer: str | None
    text: str


Emit = Callable[[Finding], None]


class Diagnoser:
    """Feed it each recorded step (``observe``) and each scalar batch (``observe_scalars``)."""

    def __init__(self, layers: list[dict], params: list[str], emit: Emit, thresholds: Thresholds | None = None,
                 dead_window: int = 100) -> None:  # fmt: skip
        self.layers = layers
        self.params = params
        self.dead_window = dead_window
        self._lr: tuple[float, float] | None = None  # the learning rate at the last step, and the largest so far
        self._lr_recent: deque[tuple[int, float]] = deque(maxlen=LR_WINDOW)  # (step, rate) of recent steps
        self.emit = emit
        self.t = thresholds or Thresholds()
        self._reported: set[tuple[str, str | None]] = set()
        self._streak: dict[tuple[str, str | None], int] = {}
        self._losses: dict[str, deque[float]] = {}
        self._last_spike: dict[str, int] = {}
        self._recent_losses: dict[str, deque[tuple[int, float]]] = {}
        self._loss_scale: dict[str, float] = {}  # the largest |loss| of the first full window
        self._loss_start: dict[str, tuple[int, float]] = {}  # the first step and the median of the first window
        self._loss_count: dict[str, int] = {}  # finite values seen, until the loss fell or was reported not to
        self._norms: deque[float] = deque(maxlen=50)  # the total weight-gradient norm of recent healthy steps
        self._zero_streak = np.zeros(0, np.int64)  # per depth weight: recorded steps its gradient has been exactly 0
        self._loss_blamed = False  # NaN/Inf gradients of a finite forward pass were found: the loss's, not growth's
        self._depth = depth_axis(layers, params)
        self._like = like_layers([params[i] for i in self._depth])
        # said where kinds of layer were compared apart (a plain stack is one kind: its head merely left out)
        self._like_note = "" if len(self._like) == 1 else ", each kind of layer of the repeated blocks against itself"

    def observe(
        self, step: int, stats: dict[str, dict[str, np.ndarray]], skipped: bool = False, lr: float | None = None
    ) -> None:
        """One recorded step; ``skipped``: its optimizer step did not happen (a GradScaler found its gradients
        non-finite and skipped it: the scaler's own remedy, so no NaN/Inf finding for the gradients); ``lr``: the
        optimizer's learning rate at the step, when known (a warm-up or a decayed schedule is no finding)."""
        steady_lr = self._steady_lr(lr)
        if lr is not None and np.isfinite(lr) and lr > 0:
            self._lr_recent.append((step, float(lr)))
        act, grad, pgrad, weight = (stats.get(k, {}) for k in ("act", "grad", "param_grad", "weight"))
        if skipped:
            self._report(step, "skipped_step", None, "info",
                         f"optimizer step skipped at step {step} (non-finite gradients, as a GradScaler skips "
                         "steps that overflowed); later skips are recorded without a finding")  # fmt: skip
        for i, layer in enumerate(self.layers):
            role, path = layer["role"], layer["path"]
            if role in ("sigmoid", "tanh") and "sat_frac" in act:
                sat, mean = act["sat_frac"][i], act["mean"][i]
                self._sustained(
                    step, "saturation", path, bool(sat >= self.t.saturated_frac),
                    f"layer {path} ({layer['type']}): {sat:.0%} of outputs saturated at the {role}'s limits "
                    f"(mean activation {mean:.3f}): pre-activations too large — weights initialised too large, a "
                    "learning rate too high, inputs not normalised? (Xavier/Glorot initialisation, a normalisation "
                    "layer before it, or a ReLU-family activation avoid it)",
                )  # fmt: skip
            if role == "relu" and "dead_frac" in act and np.isfinite(act["dead_frac"][i]):
                dead = act["dead_frac"][i]
                if dead >= self.t.dead_frac:
                    text = (f"layer {path} ({layer['type']}): {dead:.0%} of its units never fired in the last "
                            f"{self.dead_window} steps: a learning rate too high, or a bad initialisation? (a lower "
                            "rate, He initialisation or a LeakyReLU/GELU keep units alive)")  # fmt: skip
                    self._report(step, "dead_units", path, "warning", text)
        kinds = (("activations", act), ("output gradients", grad), ("parameter gradients", pgrad))
        forward_finite = not (np.nan_to_num(act.get("nonfinite_frac", np.zeros(0)), nan=0.0) > 0).any()
        for kind, s in kinds[:1] if skipped else kinds:
            bad = np.flatnonzero(np.nan_to_num(s.get("nonfinite_frac", np.zeros(0)), nan=0.0) > 0)
            if bad.size:
                names = self.params if kind == "parameter gradients" else [la["path"] for la in self.layers]
                where = "parameter" if kind == "parameter gradients" else "layer"
                if kind == "activations":
                    first = names[bad[0]]  # the forward pass runs in model order
                    text = (f"NaN/Inf in activations, first at layer {first} (step {step}): an overflow in the "
                            "forward pass — a learning rate too high, inputs with NaN, half precision without a "
                            "GradScaler?")  # fmt: skip
                else:
                    first = names[bad[-1]]  # gradients flow backward: the one nearest the output is where it began
                    self._loss_blamed |= forward_finite  # the weights it leaves NaN are the loss's doing too
                    text = f"NaN/Inf in {kind} from {where} {first} backward (step {step})"
                    text += (" while every activation is finite: the loss (or its gradient) is NaN/Inf — a log or a "
                             "division of 0, a NaN target?" if forward_finite else
                             ", after NaN/Inf in the activations")  # fmt: skip
                self._report(step, "nonfinite", first, "error", text, once=("nonfinite", None))
        zero = False  # every weight gradient is exactly 0 this step: then updates are momentum's, decaying
        if "norm" in pgrad and self._depth and not skipped:
            norms = pgrad["norm"][self._depth].astype(np.float64)
            zero = bool((norms == 0).all())
            self._sustained(
                step, "zero_gradients", None, zero,
                "every weight matrix's gradient is exactly 0 (biases aside): the network's weights no longer learn "
                "(every unit of a layer dead? a detached graph?)",
            )  # fmt: skip
            # one layer's weights that no longer learn: streaks kept as an array (thousands of layers, every step)
            held = (norms == 0) & (not zero)
            streak = self._zero_streak if self._zero_streak.shape == held.shape else np.zeros(held.shape, np.int64)
            self._zero_streak = np.where(held, streak + 1, 0)
            for k in np.flatnonzero(self._zero_streak == self.t.patience).tolist():
                name = self.params[self._depth[k]]
                self._report(step, "zero_gradient", name, "warning",
                             f"the gradient of {name} is exactly 0: its layer no longer learns (the units it feeds, "
                             "or those after them, dead? a detached branch?)")  # fmt: skip
            bad = np.nan_to_num(pgrad.get("nonfinite_frac", np.zeros(len(self.params)))[self._depth], nan=0.0) > 0
            # non-finite gradients of a finite forward pass come from the loss (the NaN/Inf finding says so), not
            # from gradients grown too large
            self._watch_norm(step, norms, bool(bad.any()), blame_growth=not (bad.any() and forward_finite))
        vanishing = False  # this step: then small updates are the gradients', not the learning rate's
        if "norm" in pgrad and len(self._depth) >= 2:
            ratio = depth_ratio(pgrad["norm"][self._depth], self._like)
            if ratio is not None:
                vanishing = ratio < self.t.vanishing_ratio
                self._sustained(
                    step, "vanishing_gradients", None, ratio < self.t.vanishing_ratio,
                    f"gradients vanish toward the input: bottom-layer weight gradients are {ratio:.1e}× the top's"
                    f"{self._like_note} (saturating activations, or a deep stack without residual connections or "
                    "normalisation?)",
                )  # fmt: skip
                self._sustained(
                    step, "exploding_gradients", None, ratio > self.t.exploding_ratio,
                    f"gradients explode toward the input: bottom-layer weight gradients are {ratio:.1e}× the top's"
                    f"{self._like_note} (a learning rate too high, weights initialised too large, no gradient "
                    "clipping?)",
                )  # fmt: skip
        if "update_ratio" in weight and self._depth:
            r = weight["update_ratio"][self._depth]
            r = r[np.isfinite(r)]
            if r.size:
                med = float(np.median(r))
                if med > self.t.diverging_update and not skipped:
                    self._report(step, "update_ratio_high", None, "error",
                                 f"updates are larger than the weights themselves (median update/weight ratio "
                                 f"{med:.1e}; healthy is about 1e-3): training is diverging — learning rate far "
                                 "too high?", once=("diverging_update", None))  # fmt: skip
                self._sustained(  # (not again once the same ratio was reported as diverging)
                    step, "update_ratio_high", None,
                    med > self.t.update_high and ("diverging_update", None) not in self._reported,
                    f"median update/weight ratio is {med:.1e} (healthy is about 1e-3): learning rate too high?",
                )  # fmt: skip
                # Too small only early on, and not while the learning rate warms up or has decayed: a schedule that
                # anneals to 0 at the end is not a finding. Small updates with zero gradients (momentum decaying) are
                # that finding's, small ones while gradients vanish are the vanishing's, and after a divergence or
                # updates found too large (dead units, tiny gradients follow) the learning rate was too high, not too
                # low.
                too_high = {("diverging_update", None), ("gradient_norm_jump", None), ("update_ratio_high", None),
                            ("zero_gradients", None)} & self._reported  # fmt: skip
                self._sustained(
                    step, "update_ratio_low", None,
                    0 < med < self.t.update_low and step < self.t.early_steps and steady_lr and not vanishing
                    and not zero and not too_high,
                    f"median update/weight ratio is {med:.1e} (healthy is about 1e-3): learning rate too low?",
                )  # fmt: skip

    def observe_scalars(self, step: np.ndarray, keys: list[str], key_ids: np.ndarray, values: np.ndarray) -> None:
        for kid in np.unique(key_ids):
            key = keys[kid]
            if not key.rsplit("/", 1)[-1].endswith("loss"):
                continue
            if key not in self._losses and _is_training_loss(key):
                self._loss_count[key] = 0  # judged until it falls, or is reported not to
            window = self._losses.setdefault(key, deque(maxlen=200))
            recent = self._recent_losses.setdefault(key, deque(maxlen=SPIKE_LOOKBACK))  # (step, value)
            sel = np.flatnonzero(key_ids == kid)
            for v, s in zip(values[sel].tolist(), step[sel].tolist()):
                if len(window) >= SPIKE_HISTORY and np.isfinite(v):
                    arr = np.fromiter(window, float)
                    med = float(np.median(arr))
                    mad = float(np.median(np.abs(arr - med))) or 1e-12
                    # relative to the loss's own scale too: 0.002 → 0.02 late in training is noise, not a spike
                    scale = self._loss_scale.setdefault(key, float(np.max(np.abs(arr))))

                    def spiked(x: float, med: float = med, mad: float = mad, scale: float = scale) -> bool:
                        return (x > med + self.t.spike_factor * mad and x > 1.5 * abs(med)
                                and x - med > self.t.spike_min_share * scale)  # fmt: skip

                    if spiked(v) and s - self._last_spike.get(key, -(10**9)) > 500:
                        # the peak, not the first value judged after it: a spike just before the history was long
                        # enough (or its tail) is reported at its own step and value
                        peak_s, peak_v = max([*recent, (s, v)], key=lambda sv: sv[1] if spiked(sv[1]) else -np.inf)
                        self._last_spike[key] = peak_s
                        note = "; " + self._lr_note() if self._lr_note() else ""
                        text = (f"{key} spiked to {peak_v:.4g} (recent median {med:.4g}){note}: a bad batch, or a "
                                "learning rate too high for this point of training?")  # fmt: skip
                        self.emit(Finding(peak_s, "loss_spike", "warning", key, text))
                if np.isfinite(v):
                    window.append(v)
                    recent.append((s, v))
                    if key in self._loss_count:
                        self._judge_progress(key, s, window)
                elif ("loss_nonfinite", key) not in self._reported:
                    self._report(s, "loss_nonfinite", key, "error",
                                 f"{key} is {v} from step {s}: a log or a division of 0 in the loss, a NaN in the "
                                 "inputs or targets — or the model's outputs overflowed (see the layers' "
                                 "findings)")  # fmt: skip

    def _judge_progress(self, key: str, step: int, window: deque[float]) -> None:
        """A loss that does not learn, reported once between ``plateau_values`` and ``plateau_until`` values: one
        that has not fallen
        (its latest values' median within ``plateau_share`` of its first values'), or one that fell a little at
        first and then stopped — by less than half of its start, and flat over its last ``plateau_values`` (a
        classifier that learned its classes' frequencies and no more: cross-entropy at chance). A learning rate far
        too low, a network stuck (saturated or dead units, Glorot & Bengio's plateau), inputs that do not match
        their labels. Not judged while the learning rate still rises (a warm-up), nor again once the loss fell."""
        n = self._loss_count[key] = self._loss_count[key] + 1
        if n == SPIKE_HISTORY:
            self._loss_start[key] = (step - n + 1, float(np.median(np.fromiter(window, float))))
        if n < self.t.plateau_values:
            return
        first, start = self._loss_start[key]
        half = len(window) // 2
        earlier = float(np.median(np.fromiter(itertools.islice(window, 0, half), float)))
        latest = float(np.median(np.fromiter(itertools.islice(window, half, None), float)))
        scale = abs(start) or 1.0
        not_fallen = start - latest < self.t.plateau_share * scale
        stopped = start - latest < 0.5 * scale and earlier - latest < 0.25 * self.t.plateau_share * scale
        if not (not_fallen or stopped):
            if start - latest >= 0.5 * scale or n >= self.t.plateau_until:
                del self._loss_count[key]  # it fell far, or for long: learning
            return
        recent_lr = self._lr_recent
        if len(recent_lr) >= 2 and recent_lr[-1][1] > 1.01 * recent_lr[0][1]:
            return  # a warm-up: judged again when the rate holds
        del self._loss_count[key]
        how = "has not fallen" if not_fallen else "stopped falling early"
        self._report(step, "loss_plateau", key, "warning",
                     f"{key} {how}: over {n} values (steps {first}–{step}) from {start:.4g} to a median of "
                     f"{latest:.4g} lately — a learning rate too low, units saturated or dead (see the layers' "
                     "findings), or inputs that do not match their labels?")  # fmt: skip

    def _watch_norm(self, step: int, norms: np.ndarray, nonfinite: bool, blame_growth: bool = True) -> None:
        """A sudden jump of the total weight-gradient norm (or its overflow: an infinite norm, non-finite values in
        the gradients) is reported at once, not after ``patience`` steps: a diverging training may have no ten steps
        left before everything is NaN. A NaN norm alone may only mean no gradient at this step (an unused head)."""
        finite = np.isfinite(norms)
        overflow = nonfinite or bool(np.isinf(norms).any())
        if not (overflow or finite.any()):
            return
        total = np.inf if overflow else float(np.sqrt(np.sum(np.square(norms[finite]))))
        history = self._norms
        if len(history) >= 10:
            med = float(np.median(np.fromiter(history, float)))
            if not np.isfinite(total) and (not blame_growth or self._loss_blamed):
                return
            if not np.isfinite(total) or (med > 0 and total > self.t.norm_jump * med):
                what = "overflowed (inf/NaN)" if not np.isfinite(total) else f"jumped to {total:.2e}"
                self._report(step, "exploding_gradients", None, "error",
                             f"the weight-gradient norm {what} (its recent median: {med:.2e}): training is "
                             "diverging (learning rate too high? no gradient clipping?)",
                             once=("gradient_norm_jump", None))  # fmt: skip
                return
        if np.isfinite(total):
            history.append(total)

    def _steady_lr(self, lr: float | None) -> bool:
        """Whether the learning rate holds (unknown counts as holding): not rising (a warm-up), not below half its
        peak (a decay)."""
        if lr is None or not np.isfinite(lr):
            return True
        last, peak = self._lr if self._lr is not None else (lr, lr)
        self._lr = (lr, max(peak, lr))
        return lr <= last * (1 + 1e-9) and lr >= 0.5 * max(peak, lr)

    def _sustained(self, step: int, rule: str, layer: str | None, cond: bool, text: str) -> None:
        key = (rule, layer)
        self._streak[key] = self._streak.get(key, 0) + 1 if cond else 0
        if self._streak[key] >= self.t.patience:
            self._report(step, rule, layer, "warning", text)

    def _report(self, step: int, rule: str, layer: str | None, severity: str, text: str,
                once: tuple[str, str | None] | None = None) -> None:  # fmt: skip
        """Emit a finding unless one with the same ``once`` key (default: rule and layer) was emitted."""
        key = once or (rule, layer)
        if key in self._reported:
            return
        self._reported.add(key)
        if rule in _SIGNS_OF_A_HIGH_RATE and (note := self._lr_note()):  # a sentence of its own after the question
            text += f" {note[0].upper()}{note[1:]}."
        self.emit(Finding(step, rule, severity, layer, text))

    def _lr_note(self) -> str:
        """When the learning rate grew far within the last ``LR_WINDOW`` recorded steps (a schedule gone wrong, a
        learning-rate range test), a finding that follows from a rate too high says so: the cause users look for
        last. A warm-up from near 0 multiplies the rate by thousands from its first step, but by less than 10 over
        any window of 100 steps past its first 110; within the first window, only a rate growing faster than a line
        is named (a range test's exponential: half-way through its growth it is still far below its end, where a
        linear warm-up is at half of it)."""
        recent = self._lr_recent
        if len(recent) < LR_EARLY:
            return ""
        (s0, lr0), (s1, lr) = recent[0], recent[-1]
        if not lr >= LR_GROWTH_NOTED * lr0:
            return ""
        if len(recent) < LR_WINDOW and not recent[len(recent) // 2][1] <= LR_CONVEX * lr:
            return ""
        return f"the learning rate grew {lr / lr0:,.0f}× over the last {s1 - s0} steps ({lr0:.3g} → {lr:.3g})"


# Findings a learning rate far too high leads to, and how far it must have grown to be named in them.
_SIGNS_OF_A_HIGH_RATE = {
    "dead_units",
    "zero_gradients",
    "zero_gradient",
    "nonfinite",
    "exploding_gradients",
    "update_ratio_high",
}
LR_GROWTH_NOTED = 10.0
LR_WINDOW = 100  # recorded steps
LR_EARLY = 20  # recorded steps before which no growth is named
LR_CONVEX = 0.35  # within the first window: the rate half-way through, at most this share of the last one

# Layers whose weights are no step of depth: a norm's gains sit near 1 and an embedding's rows are read a few at a
# time, so their gradients are orders of magnitude off the matrices' beside them (a transformer's gradient-flow line
# zigzagged between them, and a vanishing-gradient ratio read them as depth).
_NOT_DEPTH = ("Norm", "Embedding")


def _is_training_loss(key: str) -> bool:
    """The objective itself (``loss``, ``train/loss``, ``train_loss``, ``total_loss``), not a part of it that may
    rightly stay flat or rise (a policy's loss, a regulariser's, a validation loss logged now and then)."""
    last = key.rsplit("/", 1)[-1].lower()
    return last in ("loss", "train_loss", "training_loss", "total_loss")


def _is_weight(param: str) -> bool:
    """``weight``, an attention's ``in_proj_weight``, a recurrent layer's ``weight_ih_l0`` or
    ``weight_hh_l1_reverse``."""
    name = param.rsplit(".", 1)[-1]
    return name.endswith("weight") or name.startswith("weight_")


def depth_axis(layers: list[dict], params: list[str]) -> list[int]:
    """The weights, in model order, that make the depth axis of gradient flow: the weight matrices and kernels of
    linear, convolutional, recurrent and attention layers (every weight when fewer than two of those). A weight
    several layers share (an embedding tied to the output head) has no one depth — its gradient is mostly the head's,
    its place in model order the embedding's — and is left out."""
    owners: dict[str, list[str]] = {}
    for la in layers:
        for p in la.get("params", ()):
            owners.setdefault(p, []).append(la.get("type", ""))
    weights = [i for i, p in enumerate(params) if _is_weight(p)]
    matrices = [
        i
        for i in weights
        if len(owners.get(params[i], ())) <= 1 and not any(t in "".join(owners.get(params[i], ())) for t in _NOT_DEPTH)
    ]
    return matrices if len(matrices) >= 2 else weights


def like_layers(depth: list[str]) -> list[list[int]]:
    """Positions on the depth axis grouped by the kind of layer they are: the paths with their numbers taken out
    (``encoder.layer.#.attention.self.query.weight``). A transformer's query and key projections have gradients
    orders of magnitude below its value and output projections' at initialisation (attention near uniform), and a
    pooler's or classifier's lie above them all: comparing the bottom third of the weights with the top third then
    measured which kinds of layer sat where, not depth. So where blocks repeat, each kind is compared with itself
    across depth, and the layers that do not repeat (a head, a stem) are left out; without repeated blocks (an MLP
    of ``fc1``, ``fc2``…), the whole axis is one group."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(depth):
        role = ".".join("#" if part.isdigit() else part for part in path.split("."))
        groups.setdefault(role, []).append(i)
    repeated = [g for g in groups.values() if len(g) >= 2]
    return repeated or [list(range(len(depth)))]


def depth_ratio(norms: np.ndarray, like: list[list[int]]) -> float | None:
    """The bottom third's median weight-gradient norm over the top third's, within each group of like layers; the
    groups' geometric median (None: no group with two usable norms)."""
    logs = []
    for g in like:
        n = norms[g].astype(np.float64)
        n = n[np.isfinite(n) & (n > 0)]
        if len(n) >= 2:
            third = max(1, len(n) // 3)
            logs.append(np.log(np.median(n[:third]) / np.median(n[-third:])))
    return float(np.exp(np.median(logs))) if logs else None


def console_printer(run_name: str = "", stream=None) -> Emit:  # noqa: ANN001
    """Print each finding once to the training console (stderr), naming the run."""
    where = f" {run_name}" if run_name else ""

    def emit(f: Finding) -> None:
        out = stream or sys.stderr
        print(f"deepscope [{f.severity}]{where} step {f.step}: {f.text}", file=out, flush=True)

    return emit
