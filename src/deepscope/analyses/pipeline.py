"""``deepscope.analyze``: activations first, then the analyses that read them.

The arguments are checked (:func:`plan_analysis`) before any run is made or written to: a mistake in them is an
error at the call, not an empty run left in the runs list (:mod:`.own_run`).
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .activations import Activations, ActivationsConfig
from .confusion import ConfusionMatrix
from .feature_maps import analyze_maps
from .layer_choice import expand_layers
from .model_outputs import OutputChoice
from .own_run import NewRun, analysis_target, end_after_failure, say_where
from .projection import PCAConfig, PCAProjection
from .reader import AnalysisReader


@dataclass(frozen=True)
class AnalysisPlan:
    """What :func:`analyze` will do, its arguments checked: the activations analysis, then the others'."""

    activations: Activations
    full_maps: Any
    projection: bool
    collate_fn: Callable[[list[Any]], Any] | None
    batch_size: int


def plan_analysis(
    model: Any,
    data: Any,
    *,
    layers: Sequence[str] | str | Callable[[str, Any], bool] | None = None,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    metadata: Any = None,
    output: OutputChoice = None,
    batch_size: int = 256,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    sequence_pooling: str = "mean",
    mask: str | tuple[str, str] | bool | None = None,
    projection: bool = True,
    full_maps: Any = "auto",
    resume: bool = True,
    progress: bool = True,
    previews: bool = True,
    image_shape: Sequence[int] | None = None,
    scores: str = "softmax",
    text_column: str | bool | None = None,
) -> AnalysisPlan:
    """The analyses of ``model`` on ``data``, every argument checked that can be without a forward pass."""
    if (isinstance(full_maps, str) and full_maps != "auto") or isinstance(full_maps, float):  # before the work
        raise ValueError(f"deepscope.analyze: full_maps is 'auto', False, a number of instances or a list of indices, "
                         f"not {full_maps!r}")  # fmt: skip
    layers = expand_layers(model, layers)
    config = ActivationsConfig(
        layers=None if layers is None else tuple(layers),
        batch_size=batch_size,
        sequence_pooling=sequence_pooling,
        mask=mask,
        resume=resume,
        progress=progress,
        previews=previews,
        image_shape=image_shape,
        scores=scores,
        output=output,
    )
    activations = Activations(config, labels=labels, class_names=class_names, metadata=metadata,
                              collate_fn=collate_fn, text_column=text_column)  # fmt: skip
    return AnalysisPlan(activations, full_maps, projection, collate_fn, batch_size)


def check_before_run(plan: AnalysisPlan, model: Any, data: Any) -> None:
    """What the activations check before their first batch — layers, counts of labels and metadata rows, class
    names —, checked before a run is made for them. Its warnings (a DataLoader that drops a partial batch) are
    given by the analysis itself, once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan.activations.check(model, data)


def carry_out(plan: AnalysisPlan, model: Any, data: Any, run_dir: str | os.PathLike[str]) -> AnalysisReader:
    """Run the planned analyses into ``run_dir`` and return a reader of them."""
    plan.activations.run(run_dir, model, data)
    ConfusionMatrix().run(run_dir)
    analyze_maps(run_dir, model, data, plan.full_maps, plan.collate_fn, plan.batch_size)
    if plan.projection:
        PCAProjection(PCAConfig()).run(run_dir)
    return AnalysisReader(run_dir)


def analyze(model: Any, data: Any, run_dir: str | os.PathLike[str], **options: Any) -> AnalysisReader:
    """Run the default analyses into ``run_dir`` and return a reader of them (``options``: :func:`plan_analysis`'s)."""
    refuse_unknown(options)
    return carry_out(plan_analysis(model, data, **options), model, data, run_dir)


def analyze_in_run(model: Any, data: Any, *, run: Any = None, project: str | None = None, name: str | None = None,
                   dir: Any = None, **options: Any) -> AnalysisReader:  # noqa: A002 - as deepscope.init's  # fmt: skip
    """``deepscope.analyze``: into ``run``, else the current run, else a run of its own (``project``, ``name``,
    ``dir``), started once the arguments are checked and finished when the analysis ends (:mod:`.own_run`)."""
    refuse_unknown(options, also=KEYWORDS)
    plan = plan_analysis(model, data, **options)
    target = analysis_target(run, project, name, dir)
    if not isinstance(target, NewRun):
        return carry_out(plan, model, data, target)
    check_before_run(plan, model, data)
    own = target.start(model)
    try:
        reader = carry_out(plan, model, data, own.dir)
    except BaseException as e:
        end_after_failure(own, e)
        raise
    own.finish()
    say_where(own)
    return reader


KEYWORDS = ("run", "project", "name", "dir")  # deepscope.analyze's own, beside plan_analysis's
# what other tools call them (TensorBoard's log_dir, a run's directory), suggested when a spelling is not close
ALIASES = {"directory": "dir", "root": "dir", "log_dir": "dir", "logdir": "dir", "runs_dir": "dir", "run_dir": "run",
           "run_id": "run", "id": "run", "classes": "class_names", "label_names": "class_names"}  # fmt: skip


def refuse_unknown(options: dict[str, Any], also: Sequence[str] = ()) -> None:
    """A ``TypeError`` naming keywords ``deepscope.analyze`` does not take (a misspelt one would otherwise be lost,
    or fail far from its cause), with the nearest known ones."""
    known = [p for p in inspect.signature(plan_analysis).parameters if p not in ("model", "data")] + list(also)
    unknown = [k for k in options if k not in known]
    if not unknown:
        return
    hints = [f"{k!r} (did you mean {near!r}?)" if (near := nearest_keyword(k, known)) else repr(k) for k in unknown]
    raise TypeError(f"deepscope.analyze() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(hints)}; it takes {', '.join(known)}")  # fmt: skip


def nearest_keyword(key: str, known: list[str]) -> str | None:
    """The keyword ``key`` was probably meant as: a close spelling, else what other tools call it."""
    close = difflib.get_close_matches(key, known, 1)
    alias = ALIASES.get(key)
    return close[0] if close else alias if alias in known else None
