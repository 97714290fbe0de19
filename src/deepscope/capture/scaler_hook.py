"""A GradScaler's ``step`` routed through ``watch``: GradScaler has no hooks, and a step it skips (non-finite
gradients) never reaches the optimizer's hooks, which is how ``watch`` would otherwise see a step end."""

from __future__ import annotations

from typing import Any


class ScalerStepHook:
    """``scaler.step`` of one GradScaler instance routed through ``fn(step, optimizer, ...)``; ``remove()`` puts the
    instance back as it was (a handle for ``HookScope``). GradScaler has no hooks of its own."""

    def __init__(self, scaler: Any, fn: Any) -> None:
        self.scaler = scaler
        self._own = vars(scaler).get("step")  # an instance attribute already there (another wrapper), if any
        step = scaler.step

        def wrapped(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            return fn(step, optimizer, *args, **kwargs)

        scaler.step = wrapped

    def remove(self) -> None:
        if self._own is not None:
            self.scaler.step = self._own
        else:
            vars(self.scaler).pop("step", None)
