"""The global gradient norm before clipping.

A watch reads gradients just before the optimizer's step — what the step uses, after any clipping —, so a run
clipped at ``max_norm=1.0`` shows a global norm pinned at 1.0 from the first clipped step on. The norm before
clipping is the one ``torch.nn.utils.clip_grad_norm_`` computes anyway and returns: while a model is watched that
function is wrapped, and the tensor it returns (no device sync: the writer thread reads it) and its ``max_norm``
are kept for the watch whose model owns the parameters, recorded at that step as ``watch/grad_norm`` and
``watch/grad_clip``. The wrapper passes every argument through and returns what torch returns; it is installed
with the first watch and put back with the last (unless something wrapped it again since, then it stays, inert).
Hugging Face's Trainer (through Accelerate) and Lightning call ``torch.nn.utils.clip_grad_norm_`` by that name;
a reference imported before the first watch (``from torch.nn.utils import clip_grad_norm_``) is not wrapped, and
then the chart shows the norm after clipping only.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import torch

_watchers: weakref.WeakSet[Any] = weakref.WeakSet()


def _wrapped(original: Any) -> Any:
    """``original`` (torch's ``clip_grad_norm_``, or what stands in its place), telling the watches what it
    returned."""

    @functools.wraps(original)
    def clip_grad_norm_(parameters: Any, max_norm: Any, norm_type: Any = 2.0, *args: Any, **kwargs: Any) -> Any:
        watchers = list(_watchers)
        if not watchers:
            return original(parameters, max_norm, norm_type, *args, **kwargs)
        params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)  # a generator: read once
        total = original(params, max_norm, norm_type, *args, **kwargs)
        for w in watchers:
            w.clipped(params, total, max_norm, norm_type)  # guarded: never raises
        return total

    clip_grad_norm_.deepscope_wrapper = True  # type: ignore[attr-defined]
    return clip_grad_norm_


def wrap_clipping(watcher: Any) -> Any:
    """Tell ``watcher`` the norms ``clip_grad_norm_`` returns until the handle's ``remove()``."""
    current = torch.nn.utils.clip_grad_norm_
    if not getattr(current, "deepscope_wrapper", False):
        torch.nn.utils.clip_grad_norm_ = _wrapped(current)
    _watchers.add(watcher)
    return _Handle(watcher)


class _Handle:
    def __init__(self, watcher: Any) -> None:
        self._watcher = weakref.ref(watcher)

    def remove(self) -> None:
        w = self._watcher()
        if w is not None:
            _watchers.discard(w)
        current = torch.nn.utils.clip_grad_norm_
        if not _watchers and getattr(current, "deepscope_wrapper", False):
            torch.nn.utils.clip_grad_norm_ = current.__wrapped__
