"""Dead ReLU units over a sliding window: which units never fired in the last ``window`` steps.

A unit's activity is summed per *part* of the window (a quarter of it); the last ``parts`` parts make the window.
At the end of each part — every ``window / 4`` steps, once a whole window has passed — a layer's dead share is the
share of its units whose sum over the window is 0. A unit that dies at step 10 of a 100-step window is then reported
dead at step 124 (the first part boundary a whole dead window after it), not at step 199 (the end of the first fixed
window wholly after it). Everything stays on the device until a window's sums are copied to the host, without a sync.
"""

from __future__ import annotations

import math
from collections import deque

import torch

PARTS = 4  # parts of a window: the dead share is recorded this many times per window


class DeadUnits:
    """Per-layer unit activity: ``add`` each check's per-unit maxima, ``close_part`` at each part's end (``due``)."""

    def __init__(self, window: int, start_step: int = 0, every: int = 1) -> None:
        self.part = max(every, window // PARTS)  # steps per part: a quarter window, or one recorded step
        self.parts = max(1, math.ceil(window / self.part))  # parts per window: at least `window` steps
        self._counts: dict[int, torch.Tensor] = {}  # layer -> Σ per-unit maxima in the current part
        self._ring: dict[int, deque[torch.Tensor]] = {}  # layer -> the sums of its last parts
        self._seen: set[int] = set()  # layers checked in the current part
        self._part_end = (start_step // self.part + 1) * self.part  # the current part's last step + 1

    def due(self, step: int) -> bool:
        """Whether ``step`` (a recorded one) closes the current part: the first at or after its end."""
        return step + 1 >= self._part_end

    def add(self, i: int, peak: torch.Tensor) -> None:
        counts = self._counts.get(i)
        if counts is None or counts.shape != peak.shape or counts.device != peak.device:
            counts = self._counts[i] = torch.zeros(peak.shape, device=peak.device)
            self._ring[i] = deque(maxlen=self.parts)  # another shape or device: a new history
        counts += peak
        self._seen.add(i)

    def close_part(self, step: int) -> dict[int, torch.Tensor] | None:
        """End the current part at ``step``: each layer checked in it whose history spans a whole window gives its
        units' activity over the window (host tensors, copied without a sync); None when no layer does."""
        out: dict[int, torch.Tensor] = {}
        for i in self._seen:
            ring = self._ring[i]
            ring.append(self._counts[i].clone())
            self._counts[i].zero_()
            if len(ring) == self.parts:
                total = torch.stack(tuple(ring)).sum(0)
                out[i] = total if total.device.type == "cpu" else total.to("cpu", non_blocking=True)
        self._seen = set()
        self._part_end = ((step + 1) // self.part + 1) * self.part
        return out or None
