"""What the framework adapters share: the run they record into, its rank, and which values can be logged."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ...notices import notice
from ...run import Run
from ...store import format as fmt

# run.watch keywords an adapter passes through; the model and the optimizer come from the framework
WATCH_KEYWORDS = frozenset(inspect.signature(Run.watch).parameters) - {"self", "model", "optimizer"}
_SET_BY_ADAPTER = ("rank", "world_size")
INIT_KEYWORDS = frozenset(inspect.signature(Run.__init__).parameters) - {"self", *_SET_BY_ADAPTER}


# runs an adapter created whose training ended, kept open for the evaluations after it
_ENDED_TRAININGS: weakref.WeakSet[Run] = weakref.WeakSet()


def watch_keywords(watch: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """``True`` → watch with the defaults, ``False`` → don't watch, a dict → keywords for ``run.watch``."""
    if watch is True:
        return {}
    if watch is False or watch is None:
        return None
    if not isinstance(watch, Mapping):
        raise TypeError(f"deepscope: watch must be True, False or a dict of run.watch keywords, got {watch!r}")
    unknown = sorted(set(watch) - WATCH_KEYWORDS)
    if unknown:
        raise TypeError(f"deepscope: unknown run.watch keywords {unknown}; known: {sorted(WATCH_KEYWORDS)}")
    return dict(watch)


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer that steps: wrappers (Accelerate, Lightning) keep it as ``.optimizer``.

    Step hooks registered on a wrapper that does not call ``Optimizer.__init__`` never fire, so ``watch``
    must see the optimizer inside.
    """
    for _ in range(4):  # wrappers of wrappers, but never a cycle
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def is_number(value: Any) -> bool:
    """Whether ``run.log`` takes ``value``: a real number, a NumPy scalar or a one-element real tensor."""
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return not isinstance(value, np.complexfloating)
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.is_complex()
    return False


class RunBinding:
    """The deepscope run an adapter records into: one it creates for a training, or one the user gives.

    When the training ends its hooks are removed and the run stays open, as the peers' runs do: an evaluation or a
    test after it (``trainer.evaluate()``, ``trainer.test()``) and the user's own ``callback.run.log(...)`` land in
    it. A run the adapter created is finished by the next training of the same callback, by ``run.finish()``, or at
    exit; a given run is the user's to finish.

    Every rank records into its own stream of the same run.
    Logging and events never raise into the training loop: a failure warns once and is skipped.
    """

    def __init__(
        self,
        framework: str,
        run: Run | None,
        watch: bool | Mapping[str, Any],
        init_kwargs: Mapping[str, Any],
    ) -> None:
        if run is not None and not isinstance(run, Run):
            raise TypeError(f"deepscope: run must be a deepscope Run (deepscope.init()), got {type(run).__name__}")
        if run is not None and init_kwargs:
            raise TypeError(f"deepscope: pass a run or deepscope.init keywords, not both (got {sorted(init_kwargs)})")
        for key in _SET_BY_ADAPTER:
            if key in init_kwargs:
                raise TypeError(f"deepscope: {key} comes from the {framework} trainer; do not pass it")
        unknown = sorted(set(init_kwargs) - INIT_KEYWORDS - set(_SET_BY_ADAPTER))
        if unknown:
            raise TypeError(f"deepscope: unknown deepscope.init keywords {unknown}; known: {sorted(INIT_KEYWORDS)}")
        self.framework = framework
        self.watch_kwargs = watch_keywords(watch)
        self.init_kwargs = dict(init_kwargs)
        self.given = run
        self.run: Run | None = None
        self.last: Run | None = None  # the run of the last training, once it ended
        self.watcher: Any = None
        self.trained = False  # the training ended (its run stays open for what comes after it)
        self._warned: set[str] = set()

    @property
    def active(self) -> bool:
        return self.run is not None and not self.run.finished

    def start(self, rank: int, world_size: int, config: Mapping[str, Any], name: str | None = None) -> Run:
        """Create the run (or take the given one). Under ``torch.distributed`` every rank calls this, and
        ``Run`` gives them all rank 0's id: each rank writes its own stream of one run. ``name``: the framework's
        name for this training, used unless the user gave ``name=``."""
        if not self.active:
            self.run = self.given if self.given is not None else self._new_run(rank, world_size, config, name)
        self.trained = False
        self.run.training_ended = False  # training again: an exception from here on is a crash
        return self.run

    def _new_run(self, rank: int, world_size: int, config: Mapping[str, Any], name: str | None) -> Run:
        kwargs = dict(self.init_kwargs)
        # One run kept open after its training at a time, as W&B's init finishes the run before it: a sweep of
        # trainings in one process would otherwise hold a writer thread and open files per trial until it exits.
        for ended in [r for r in _ENDED_TRAININGS if not r.finished]:
            self._guard("finish the ended training's run", ended.finish)
        if name:
            kwargs.setdefault("name", name)
        merged = {**config, **(kwargs.pop("config", None) or {})}  # the user's config wins
        return Run(config=merged, rank=rank, world_size=world_size, **kwargs)

    def watch(self, model: Any, optimizer: Any, scaler: Any = None, step: int | None = None) -> None:
        """Watch ``model``; ``scaler``: the framework's GradScaler under mixed precision; ``step``: the trainer's count
        of optimizer steps taken (a training resumed from a checkpoint). The user's own keywords win."""
        if not self.active or self.watch_kwargs is None or self.watcher is not None or self.run._watchers:
            return  # not asked for, or the run is watched already (by its owner, who gave it)
        kwargs = dict(self.watch_kwargs)
        if scaler is not None and callable(getattr(scaler, "get_scale", None)):
            kwargs.setdefault("scaler", scaler)
        if step is not None:
            kwargs.setdefault("start_step", int(step))
        self.watcher = self.run.watch(model, optimizer=unwrap_optimizer(optimizer), **kwargs)

    def log(self, values: Mapping[str, Any], step: int) -> None:
        """Log the numbers in ``values`` at ``step``; other values (strings, lists) are skipped."""
        if not self.active:
            self._warn_if_finished_meanwhile()
            return
        data = {}
        for key, value in values.items():
            if is_number(value) and self._valid_key(key):
                data[key] = value
        if data:
            self._guard("log metrics", self.run.log, data, step=max(int(step), 0))

    def event(self, kind: str, text: str, step: int | None = None, severity: str = "info") -> None:
        if self.active:
            self._guard(f"record the {kind} event", self.run.event, kind, text, step=step, severity=severity)

    def _warn_if_finished_meanwhile(self) -> None:
        """Metrics after the training whose run was finished since — by another training's run, or by the user."""
        if self.run is not None and self.run.finished and self.run is not self.given:
            self.warn_once(
                "finished meanwhile",
                f"deepscope: run {self.run.id!r} was finished after its training (another training started a run, "
                "or run.finish() was called); these metrics are not recorded — pass run= (a deepscope.init run) to "
                "the callback to keep one run open across trainings",
            )

    def training_ended(self) -> None:
        """Remove the watch's hooks; the run stays open for what is logged after the training."""
        watcher, self.watcher = self.watcher, None
        self.trained = True
        if watcher is not None and self.run is not None:  # the watch this binding started (and its step timer)
            self._guard("remove its hooks", self.run.unwatch)
        if self.run is not None:
            self.last = self.run
            if self.run is not self.given:
                _ENDED_TRAININGS.add(self.run)
                self.run.training_ended = True  # an exception after it (a failing test, at exit) is no crash
            self._guard("write what the training logged", self.run.flush)  # on disk, whatever ends the process

    def end(self, status: str = "finished", reason: str | None = None) -> None:
        """Finish a run the adapter created; for a given run, only remove the adapter's hooks."""
        run, watcher = self.run, self.watcher
        self.run, self.watcher = None, None
        self.last = run or self.last
        if run is None or run.finished:
            return
        if run is self.given:
            if watcher is not None:
                self._guard("remove its hooks", run.unwatch)
            return
        self._guard("finish the run", run.finish, status, reason)

    def _valid_key(self, key: Any) -> bool:
        try:
            fmt.validate_key(key)
        except (TypeError, ValueError) as e:
            self.warn_once(f"key {key!r}", f"deepscope: {self.framework} metric skipped: {e}")
            return False
        return True

    def _guard(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # the training run never dies because of deepscope
            self.warn_once(what, f"deepscope: {self.framework} integration could not {what}: {e}; training goes on")

    def warn_once(self, key: str, message: str) -> None:
        """One warning per ``key`` for this binding's lifetime, at the user's line."""
        if key not in self._warned:
            self._warned.add(key)
            notice(message, stacklevel=None)


def exit_reason(exception: BaseException) -> str:
    """``"ValueError: message"``, as ``Run.__exit__`` writes it."""
    return f"{type(exception).__name__}: {exception}"
