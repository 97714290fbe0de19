"""Lightning: ``DeepscopeCallback`` records ``Trainer.fit`` into a deepscope run.

>>> trainer = Trainer(callbacks=[DeepscopeCallback(project="mnist", watch={"every": 10})])

One callback does it all, with or without Lightning loggers (``logger=False`` included): it owns the run,
watches the module with its optimizer, and logs what Lightning would send to a logger (the metrics of
``self.log``, which ``trainer.logged_metrics`` holds) plus the loss ``training_step`` returned. A separate
``Logger`` would split one run's lifecycle over two objects that must find each other, for no gain.

Steps are optimizer steps counted from 0, as ``run.watch`` counts them and as Lightning's own loggers
do: batches whose optimizers stepped (with several optimizers — a GAN's, manual optimization — one step per batch,
the first optimizer's, which ``watch`` follows; ``global_step`` counts each optimizer's). A step's metrics are logged
once, after its optimizer step (with accumulated batches the loss is the mean of the micro-batches'), and validation
or epoch metrics at the last step taken, so a loss spike and the layer statistics of its step line up. A fit resumed
from a checkpoint watches from its restored step count on.

When the fit ends the hooks are removed and the run stays open: ``trainer.test()`` or ``trainer.validate()`` after
it, and ``callback.run.log(...)``, land in it at the last step. It is finished at exit, by
``callback.run.finish()``, or by the next ``fit`` with the same callback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("deepscope's Lightning integration needs Lightning: pip install 'deepscope[lightning]'") from e

from ...run import Run
from ._common import RunBinding, exit_reason

__all__ = ["DeepscopeCallback"]


class DeepscopeCallback(pl.Callback):
    """Record a ``Trainer.fit``: metrics, the training loss, per-layer statistics, start/end events.

    ``run``: record into this run (left open at the end) instead of creating one. ``watch``: ``True``
    (default settings), ``False`` (no layer statistics) or a dict of ``run.watch`` keywords
    (``layers``, ``every``, ``histograms_every`` …). ``log_loss``: log the returned loss as
    ``train/loss``. ``log_lr``: log each optimizer's learning rate at every step, as Lightning's
    ``LearningRateMonitor`` would to a logger (``train/lr``; ``train/lr/<optimizer>/pg<i>`` for several
    optimizers or parameter groups) — a scheduler's steps in the charts without one. Other keywords
    go to :func:`deepscope.init` (``project``, ``name``, ``dir``, ``config``, ``tags`` …); the run's
    config is ``pl_module.hparams`` updated with ``config``.

    The first optimizer is watched: with several, a step is a step of ``trainer.optimizers[0]``.

    >>> Trainer(max_steps=1000, callbacks=[DeepscopeCallback(project="mnist", dir="runs")]).fit(model, data)
    """

    def __init__(
        self,
        run: Run | None = None,
        *,
        watch: bool | Mapping[str, Any] = True,
        log_loss: bool = True,
        log_lr: bool = True,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._binding = RunBinding("Lightning", run, watch, init_kwargs)
        self.log_loss = log_loss
        self.log_lr = log_lr
        self._lrs: dict[str, float] = {}  # the learning rates when this step's first batch began
        self._step = 0  # the step the current batch feeds
        self._taken = 0  # steps taken (batches whose optimizers stepped)
        self._global_step = 0  # trainer.global_step when the batch began: a change says the batch stepped
        self._watch_step: int | None = None  # the watch's step when the batch began
        self._losses: list[torch.Tensor] = []  # the losses of this step's micro-batches so far
        self._starting = False  # the fit's training started, its first batch not yet
        self._seen: dict[str, Any] = {}  # the metric objects already logged, by key

    @property
    def run(self) -> Run | None:
        """The run being recorded, or after ``fit`` the run it recorded (``run.id``); ``None`` before ``fit``."""
        return self._binding.run or self._binding.last

    # ---- lifecycle ---------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        binding = self._binding
        if binding.active and binding.trained:  # the last fit's run, kept open for its tests
            binding.end("finished")
        # the module's class names the run unless name= was given (it was "run-<time>")
        binding.start(trainer.global_rank, trainer.world_size, dict(pl_module.hparams), type(pl_module).__name__)
        self._seen = dict(trainer.logged_metrics)  # what an earlier fit logged is not this fit's

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not in on_fit_start: a fit resumed from a checkpoint has restored its step count by now. The
        # watch starts at the first batch, where a fit resumed mid-epoch has its count right (see _start_training).
        self._taken = self._step = _steps_taken(trainer)
        self._losses = []
        self._starting = True

    def _start_training(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Watch from the steps taken so far. Lightning's epoch loop, restored mid-epoch, adds the step the checkpoint
        did not count to its batches-that-stepped count only as it starts (after on_train_start): read here, at the
        first batch, a resumed fit's first step is the checkpoint's next one, not its last again."""
        self._starting = False
        binding = self._binding
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # "16-mixed": a GradScaler
        self._taken = _steps_taken(trainer)
        binding.watch(pl_module, trainer.optimizers[0] if trainer.optimizers else None, scaler, self._taken)
        name, world = type(pl_module).__name__, trainer.world_size
        text = f"fit started: {name}, max_steps={trainer.max_steps}, world_size={world}"
        binding.event("train_start", text, step=self._taken)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._binding.event("train_end", f"fit ended after {self._taken} steps", step=self._last(trainer))
        self._binding.training_ended()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._binding.active:  # a fit that stopped without on_fit_end (no-op after it)
            self._binding.training_ended()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._binding.trained:  # in a test() or validate() after the fit, which ended well: the run stays open
            return  # (an exception that ends the process finishes it, naming the exception)
        reason = exit_reason(exception)
        if isinstance(exception, KeyboardInterrupt):  # the user stopped the fit: finished, interrupted
            self._binding.event("train_end", f"fit interrupted ({reason})", step=self._last(trainer))
            self._binding.end("finished", "interrupted (KeyboardInterrupt)")
            return
        self._binding.event("train_exception", reason, step=self._last(trainer), severity="error")
        self._binding.end("crashed", reason)

    # ---- metrics -----------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if self._starting:
            self._start_training(trainer, pl_module)
        self._step = self._taken  # the index of the optimizer step this batch feeds
        if self.log_lr and not self._lrs:  # the rates this step trains with (a scheduler steps after the batch)
            self._lrs = _learning_rates(trainer.optimizers)
        self._global_step = trainer.global_step
        watcher = self._binding.watcher
        self._watch_step = getattr(watcher, "step", None)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self._binding.active:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if self.log_loss and isinstance(loss, torch.Tensor):
            if pl_module.automatic_optimization:  # Lightning divided it by the batches accumulated, for backward
                loss = loss.detach() * trainer.accumulate_grad_batches
            self._losses.append(loss.detach())
        if trainer.global_step == self._global_step:
            return  # gradients accumulate: the step is logged once, after its optimizer step
        self._taken += 1
        if self._watch_step is not None and getattr(self._binding.watcher, "step", None) == self._watch_step:
            self._binding.warn_once(
                "first optimizer",
                "deepscope: trainer.optimizers[0] did not step in a batch where another optimizer did (a critic "
                "stepped more often?): the layer statistics count its steps, the metrics count batches, so they no "
                "longer share step numbers; configure_optimizers() can return the one that steps at every batch first",
            )
        values = self._new_metrics(trainer)
        if self._losses:  # the step's loss: the mean over its micro-batches
            values["train/loss"] = self._losses[0] if len(self._losses) == 1 else torch.stack(self._losses).mean()
            self._losses = []
        values.update(self._lrs)
        self._lrs = {}
        self._binding.log(values, self._step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: the module's own epoch-end hook has logged by now
        if not trainer.sanity_checking:
            self._log_new_metrics(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_new_metrics(trainer)  # the previous epoch's aggregates are computed after its end hooks

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_new_metrics(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_new_metrics(trainer)  # trainer.test() after the fit: at its last step

    def _log_new_metrics(self, trainer: pl.Trainer) -> None:
        if self._binding.active:
            self._binding.log(self._new_metrics(trainer), self._last(trainer))

    def _new_metrics(self, trainer: pl.Trainer) -> dict[str, Any]:
        # Lightning keeps each metric's latest value tensor and hands out a fresh detached view of it on
        # every read, so a value is new when its storage is: comparing storage, not numbers, keeps this
        # free of device synchronization. Holding the last tensor keeps its storage from being reused.
        new = {}
        for key, value in trainer.logged_metrics.items():
            if not _same_value(self._seen.get(key), value):
                self._seen[key] = value
                new[key] = value
        return new

    def _last(self, trainer: pl.Trainer) -> int:
        return max(self._taken - 1, 0)  # the last optimizer step taken


def _learning_rates(optimizers: list[Any]) -> dict[str, float]:
    """Each parameter group's learning rate: ``train/lr`` for one optimizer with one group, else
    ``train/lr/<optimizer class>/pg<i>`` (``<class>-<k>`` where two optimizers are of one class). A learning rate
    that is no Python number — a tensor — is left out: reading it would wait for the device."""
    classes = [type(o).__name__ for o in optimizers]
    out: dict[str, float] = {}
    for k, o in enumerate(optimizers):
        tag = classes[k] if classes.count(classes[k]) == 1 else f"{classes[k]}-{k}"
        for i, g in enumerate(o.param_groups):
            if isinstance(g.get("lr"), (int, float)):
                out[f"train/lr/{tag}/pg{i}"] = float(g["lr"])
    if len(out) == 1 and len(optimizers) == 1 and len(optimizers[0].param_groups) == 1:
        return {"train/lr": next(iter(out.values()))}
    return out


def _steps_taken(trainer: pl.Trainer) -> int:
    """The steps a fit starts from (a fit resumed from a checkpoint: its restored count), as Lightning's loggers count
    them: batches whose optimizers stepped — ``global_step`` with one optimizer."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    stepped = getattr(loop, "_batches_that_stepped", None)
    return stepped if isinstance(stepped, int) else trainer.global_step


def _same_value(old: Any, new: Any) -> bool:
    if old is new:
        return True
    if not isinstance(old, torch.Tensor) or not isinstance(new, torch.Tensor) or new.numel() == 0:
        return False
    return (old.data_ptr(), old.device, old.dtype, old.shape) == (new.data_ptr(), new.device, new.dtype, new.shape)
