"""Hugging Face Transformers: ``DeepscopeCallback`` records ``Trainer.train`` into a deepscope run.

>>> trainer = Trainer(model, args, train_dataset=data, callbacks=[DeepscopeCallback(project="bert")])

Steps are optimizer steps counted from 0, as ``run.watch`` counts them. The Trainer counts
``state.global_step`` after the step (the first step is 1), so what it logs at ``global_step`` N goes
at step N - 1: the loss of the first step and the layer statistics of the first step are both at 0.
Keys are renamed as the Trainer's other integrations rename them: ``eval_loss`` → ``eval/loss``,
``test_*`` → ``test/*``, everything else → ``train/*``.

Under ``fp16`` the GradScaler that Accelerate steps through is handed to ``watch`` (output gradients recorded
unscaled; a step it skips stays a step of its own).

When training ends the hooks are removed and the run stays open: ``trainer.evaluate()`` or ``trainer.predict()``
metrics after it, and ``callback.run.log(...)``, land in it. It is finished at exit, by ``callback.run.finish()``,
or by the next ``train()`` with the same callback. The Trainer tells callbacks nothing when training raises: such
a run is marked crashed by the next ``train()`` (or finished at exit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import transformers
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "deepscope's Hugging Face integration needs Transformers: pip install 'deepscope[huggingface]'"
    ) from e

from ...run import Run
from ._common import RunBinding

__all__ = ["DeepscopeCallback"]

_PREFIXES = ("eval", "test")


class DeepscopeCallback(transformers.TrainerCallback):
    """Record a ``Trainer.train``: everything the Trainer logs, per-layer statistics, start/end events.

    ``run``: record into this run (left open at the end) instead of creating one. ``watch``: ``True``
    (default settings), ``False`` (no layer statistics) or a dict of ``run.watch`` keywords
    (``layers``, ``every``, ``histograms_every`` …). Other keywords go to :func:`deepscope.init` (``project``, ``name``,
    ``dir``, ``config``, ``tags`` …); the run's name is ``name``, else ``TrainingArguments.run_name``; its config is
    ``{"training": args.to_dict(), "model": model.config.to_dict()}`` updated with ``config``.

    >>> Trainer(model, args, train_dataset=data, callbacks=[DeepscopeCallback(dir="runs")]).train()
    """

    def __init__(
        self,
        run: Run | None = None,
        *,
        watch: bool | Mapping[str, Any] = True,
        **init_kwargs: Any,
    ) -> None:
        self._binding = RunBinding("Hugging Face", run, watch, init_kwargs)

    @property
    def run(self) -> Run | None:
        """The run being recorded, or after training the run it recorded (``run.id``); ``None`` before training."""
        return self._binding.run or self._binding.last

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._binding.active and self._binding.trained:  # the last training's run, kept open for its evaluations
            self._binding.end("finished")
        elif self._binding.active:  # the last train() raised: on_train_end never came
            self._binding.end("crashed", "training stopped before on_train_end (an exception?)")
        config: dict[str, Any] = {"training": args.to_dict()}
        model_config = getattr(model, "config", None)
        if hasattr(model_config, "to_dict"):
            config["model"] = model_config.to_dict()
        # the name a user gave this training (a hyperparameter search's trial, or TrainingArguments.run_name)
        name = getattr(state, "trial_name", None) or getattr(args, "run_name", None)
        if name is not None and name == getattr(args, "output_dir", None):
            name = None  # transformers 4 fills run_name in with output_dir: no name the user chose
        self._binding.start(args.process_index, args.world_size, config, str(name) if name else None)
        if model is not None:
            optimizer = kwargs.get("optimizer")
            # fp16 on an accelerator: Accelerate's optimizer wrapper steps through its GradScaler
            self._binding.watch(model, optimizer, getattr(optimizer, "scaler", None), state.global_step)
        text = f"training started: {type(model).__name__}, max_steps={state.max_steps}, world_size={args.world_size}"
        self._binding.event("train_start", text, step=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if logs:
            self._binding.log({_key(k): v for k, v in logs.items()}, _last(state))

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any], **kwargs: Any) -> None:
        # trainer.predict() reports its metrics (test_loss, test_runtime …) here, never through on_log
        if metrics:
            self._binding.log({_predict_key(k): v for k, v in metrics.items()}, _last(state))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._binding.event("train_end", f"training ended after {state.global_step} steps", step=_last(state))
        self._binding.training_ended()


def _key(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix + "_"):
            return f"{prefix}/{name[len(prefix) + 1 :]}"
    return f"train/{name}"


def _predict_key(name: str) -> str:
    """``test_loss`` → ``test/loss``: a prediction's metrics carry its ``metric_key_prefix`` (``test`` by default)."""
    prefix, _, rest = name.partition("_")
    return f"{prefix}/{rest}" if rest else f"test/{name}"


def _last(state: Any) -> int:
    return max(state.global_step - 1, 0)  # the Trainer has counted the step it logs after
