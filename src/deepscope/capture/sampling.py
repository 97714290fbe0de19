"""Which elements of a tensor ``watch`` computes its statistics from: a systematic sample, new every step.

A tensor of at most ``sample`` elements is taken whole (its statistics are exact). A larger one is read as
``clusters`` runs of ``width`` adjacent elements (one 64-byte cache line of float32 each), spaced by a
prime stride, from a random start drawn anew at every step: one strided copy that touches ``clusters``
cache lines, where a random gather touches ``sample`` of them. Over steps every element is equally likely
to be seen (the start is uniform), and within a step the sample spans the whole tensor: every sample of a
batch, every channel. The stride is prime so that it shares no period with the tensor's dimensions (a
stride of 4 × 28 × 28 would see the same pixel of every feature map). Tensors only a little larger than
``sample`` (too small for clusters spaced apart) use a random subset, gathered with one ``index_select``,
rotated by a random offset at every call: a fixed subset made every step's sample — and every tensor of the same
size — read the same positions (the LayerNorm outputs of a transformer showed one shared, made-up pattern).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import torch

WIDTH = 16  # elements per cluster: one 64-byte cache line of float32


def largest_prime_at_most(m: int) -> int:
    """The largest prime ≤ ``m`` (``m`` ≥ 2), by trial division (called once per tensor size)."""
    for c in range(m, 1, -1):
        if c < 4 or (c % 2 and all(c % d for d in range(3, int(c**0.5) + 1, 2))):
            return c
    return 2


INDEX_SIZES_KEPT = 64  # tensor sizes whose gather positions are kept


class Sampler:
    """Copies a sample of a tensor into a staging row; ``plan`` and the random starts are per size.

    >>> k = Sampler(4096).into(activation, stage_row)   # stage_row[:k] holds the sample
    """

    def __init__(self, sample: int, seed: int = 0) -> None:
        self.sample = sample
        self.width = WIDTH if sample % WIDTH == 0 and sample >= 16 * WIDTH else 1
        self.clusters = sample // self.width
        self.seed = seed
        self._random = random.Random(seed).random
        self._plans: dict[int, tuple[int, int]] = {}  # numel -> (stride, highest start); stride 0: index
        # positions per (size, device), the sizes seen last (shapes that vary — sequence lengths, last batches —
        # would fill it without bound: 64 KiB a size, on the device)
        self._index: OrderedDict[tuple[int, torch.device], torch.Tensor] = OrderedDict()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (any shape) -> a new 1-D float32 tensor holding its sample."""
        out = torch.empty(self.sample, dtype=torch.float32, device=x.device)
        return out[: self.into(x.detach(), out)]

    def plan(self, n: int) -> tuple[int, int]:
        """``(stride, highest start)`` of the clusters of an ``n``-element tensor (``n`` > ``sample``)."""
        p = self._plans.get(n)
        if p is None:
            room = (n - self.width) // self.clusters  # the stride's upper bound: room for a random start
            stride = largest_prime_at_most(room) if room >= 2 * self.width else 0
            p = self._plans[n] = (stride, n - (self.clusters - 1) * stride - self.width)
        return p

    def start(self, n: int) -> int:
        """A random start for an ``n``-element tensor's clusters (the weights' before/after pairs share one)."""
        stride, high = self.plan(n)
        return int(self._random() * (high + 1)) if stride else 0

    def into(self, x: torch.Tensor, out: torch.Tensor, start: int | None = None, out2d: Any = None) -> int:
        """Copy the sample of ``x`` into ``out[:k]`` (1-D, ``sample`` long) and return ``k``.

        ``out[k:]`` is left as it is: the reduction knows each row's length. Values are converted to
        ``out``'s dtype in the same copy. ``out2d``: ``out`` viewed as ``(clusters, width)``, if at hand.
        """
        n = x.numel()
        if n <= self.sample:
            out[:n].copy_(x.reshape(n))
            return n
        stride, high = self.plan(n)
        base = x if x.is_contiguous() or _dense(x) else x.contiguous()  # a permuted layout: sample its storage
        if stride:
            o = int(self._random() * (high + 1)) if start is None else start
            # (clusters, width): `width` adjacent elements every `stride`, from `o`
            view = base.as_strided((self.clusters, self.width), (stride, 1), base.storage_offset() + o)
            (out.view(self.clusters, self.width) if out2d is None else out2d).copy_(view)
        else:
            flat = base.as_strided((n,), (1,), base.storage_offset())
            out.copy_(flat.index_select(0, self._idx(n, flat.device, start)))
        return self.sample

    def _idx(self, n: int, device: torch.device, start: int | None = None) -> torch.Tensor:
        """The positions to gather: a random subset (sorted: gathered in memory order), rotated by ``start`` —
        a random one when None; 0 keeps a weight's positions between the samples before and after its update."""
        key = (n, device)
        idx = self._index.get(key)
        if idx is None:
            g = torch.Generator().manual_seed(self.seed + n)
            idx = torch.randperm(n, generator=g)[: self.sample].sort().values
            idx = self._index[key] = idx.to(device)
            if len(self._index) > INDEX_SIZES_KEPT:
                self._index.popitem(last=False)
        else:
            self._index.move_to_end(key)
        shift = int(self._random() * n) if start is None else start
        if not shift:
            return idx
        # a new tensor each call: the training thread and the side thread may sample tensors of one size at once
        return torch.remainder(idx + shift, n)


_DENSE: dict[tuple[tuple[int, ...], tuple[int, ...]], bool] = {}


def _dense(x: torch.Tensor) -> bool:
    """Whether ``x``'s elements fill ``numel`` consecutive storage slots (contiguous, or permuted)."""
    if x.is_contiguous():
        return True
    key = (tuple(x.shape), x.stride())
    d = _DENSE.get(key)
    if d is None:
        expected = 1
        d = True
        for size, stride in sorted(zip(x.shape, x.stride()), key=lambda s: s[1]):
            if size > 1 and stride != expected:
                d = False
                break
            expected *= size
        if len(_DENSE) < 4096:
            _DENSE[key] = d
    return d
