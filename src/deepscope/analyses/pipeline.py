"""``deepscope.analyze``: activations first, then the analyses that read them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .activations import Activations, ActivationsConfig
from .confusion import ConfusionMatrix
from .feature_maps import analyze_maps
from .layer_choice import expand_layers
from .projection import PCAConfig, PCAProjection
from .reader import AnalysisReader


def analyze(
    model: Any,
    data: Any,
    run_dir: str | os.PathLike[str],
    *,
    layers: Sequence[str] | str | Callable[[str, Any], bool] | None = None,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    metadata: Any = None,
    batch_size: int = 256,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    sequence_pooling: str = "mean",
    mask: str | tuple[str, str] | bool | None = None,
    projection: bool = True,
    full_maps: Any = "auto",
    resume: bool = True,
    progress: bool = True,
    previews: bool = True,
    scores: str = "softmax",
    text_column: str | bool | None = None,
) -> AnalysisReader:
    """Run the default analyses into ``run_dir`` and return a reader of them."""
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
        scores=scores,
    )
    Activations(config, labels=labels, class_names=class_names, metadata=metadata, collate_fn=collate_fn,
                text_column=text_column).run(run_dir, model, data)  # fmt: skip
    ConfusionMatrix().run(run_dir)
    analyze_maps(run_dir, model, data, full_maps, collate_fn, batch_size)
    if projection:
        PCAProjection(PCAConfig()).run(run_dir)
    return AnalysisReader(run_dir)
