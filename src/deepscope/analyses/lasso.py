"""A lasso drawn on a projection as a subset filter: which points lie inside a polygon.

The polygon's vertices are in the projection's own coordinates (what ``projection/<layer>/<method>.npy`` holds), so
the filter means the same wherever it is read, and a link that holds it selects the same instances again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_VERTICES = 1000  # a hand-drawn lasso, simplified by the dashboard to a few hundred


def lasso_polygon(spec: Any) -> tuple[str, str, np.ndarray]:
    """``{"layer": …, "method": …, "polygon": [[x, y], …]}`` checked: the layer, the method and an (n, 2) float64
    array of at least 3 finite vertices."""
    from .projection import METHODS

    if not isinstance(spec, dict) or not {"layer", "method", "polygon"} <= spec.keys():
        raise ValueError('deepscope: a lasso is {"layer": …, "method": …, "polygon": [[x, y], …]}')
    layer, method = spec["layer"], spec["method"]
    if not isinstance(layer, str) or method not in METHODS:
        raise ValueError(f"deepscope: a lasso needs a layer name and a method among {', '.join(METHODS)}")
    try:
        polygon = np.asarray(spec["polygon"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("deepscope: a lasso's polygon is a list of [x, y] pairs of numbers") from None
    if polygon.ndim != 2 or polygon.shape[1] != 2 or not 3 <= len(polygon) <= MAX_VERTICES:
        raise ValueError(f"deepscope: a lasso's polygon is 3 to {MAX_VERTICES} [x, y] vertices")
    if not np.isfinite(polygon).all():
        raise ValueError("deepscope: a lasso's polygon has a vertex that is not a finite number")
    return layer, method, polygon


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Whether each (x, y) point lies inside the closed polygon (even–odd rule, as a canvas fills it); points that
    are not finite never do.

    >>> inside_polygon(np.array([[0.5, 0.5], [2, 2]]), np.array([[0, 0], [1, 0], [1, 1], [0, 1]]))
    array([ True, False])
    """
    points = np.asarray(points).reshape(len(points), -1)
    px = points[:, 0].astype(np.float64)
    # a projection of one component (a one-neuron layer) is drawn against a zero axis: y is 0
    py = points[:, 1].astype(np.float64) if points.shape[1] > 1 else np.zeros(len(points))
    lo, hi = polygon.min(0), polygon.max(0)
    near = np.flatnonzero((px >= lo[0]) & (px <= hi[0]) & (py >= lo[1]) & (py <= hi[1]))  # NaN: never
    x, y = px[near], py[near]
    inside = np.zeros(len(near), dtype=bool)
    x1, y1 = polygon[-1]
    for x2, y2 in polygon:  # each edge, closing one first: a ray to the right crosses it?
        if y1 != y2:
            crosses = (y1 > y) != (y2 > y)
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (x < at)
        x1, y1 = x2, y2
    out = np.zeros(len(points), dtype=bool)
    out[near] = inside
    return out
