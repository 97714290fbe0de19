"""The built-in analyses, by name. Explicit: adding one is a line here. What ``deepscope.analyze`` runs, and in
which order, is ``pipeline.py``."""

from __future__ import annotations

from .activations import Activations
from .confusion import ConfusionMatrix
from .neighbors import ExactNeighbors
from .projection import PCAProjection
from .tsne_projection import TSNEProjection
from .umap_projection import UMAPProjection

ANALYSES: dict[str, type] = {
    "activations": Activations,
    "projection": PCAProjection,
    "umap": UMAPProjection,
    "tsne": TSNEProjection,
    "confusion": ConfusionMatrix,
    "neighbors": ExactNeighbors,
}
