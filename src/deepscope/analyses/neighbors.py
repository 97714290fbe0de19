"""Exact nearest neighbours of instances in a layer's activation space (cosine or euclidean).

Two exact searches: a blocked NumPy scan (:func:`nearest_neighbors`), and FAISS flat indices (:class:`FlatIndex`:
inner products of unit vectors for cosine, L2 for euclidean) when ``faiss-cpu`` is installed. Both return the same
neighbours; which one the reader uses for a layer depends on its size (``FAISS_MIN_ROWS``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import artifact_dir, provenance, write_provenance

NAME = "neighbors"
METRICS = ("cosine", "euclidean")
# Rows from which the reader answers single queries from a FAISS index (BENCHMARKS.md, "Analyses").
FAISS_MIN_ROWS = 200_000


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def nearest_neighbors(
    x: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    metric: str = "cosine",
    block_rows: int = 65536,
    exclude: np.ndarray | None = None,
    norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``x`` nearest each query: indices and distances, (Q, k) each, nearest first.

    Cosine distance is ``1 - cos``; euclidean is the L2 distance: ``|q|² - 2q·x + |x|²`` in float32, except in a
    block where its rounding could reorder the nearest (activations far from the origin, duplicates), scanned
    again about the queries' mean; the ``k`` found are then measured again in float64. ``x`` is scanned
    ``block_rows`` at a time, so memory stays at ``Q × block_rows`` distances.
    ``exclude``: one row index per query to leave out (itself).

    >>> idx, dist = nearest_neighbors(x, x[[7]], k=5, exclude=np.array([7]))
    """
    if metric not in METRICS:
        raise ValueError(f"deepscope: metric must be one of {METRICS}, not {metric!r}")
    _check_k(k)
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))  # (Q, D)
    n = len(x)
    k = min(k, n - (1 if exclude is not None else 0))
    if metric == "cosine":
        q = _normalize(q)
    else:
        qn = (q * q).sum(1)[:, None]  # (Q, 1)
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for lo in range(0, n, block_rows):
        block = np.asarray(x[lo : lo + block_rows], dtype=np.float32)  # (b, D)
        if metric == "cosine":
            dot = q @ block.T  # (Q, D) @ (D, b) -> (Q, b)
            bn = norms[lo : lo + len(block)] if norms is not None else np.linalg.norm(block, axis=1)
            d = np.maximum(1.0 - dot / np.where(bn == 0, 1, bn)[None], 0)  # rounding: -1e-7 for a duplicate
        else:
            bn2 = (norms[lo : lo + len(block)] ** 2) if norms is not None else (block * block).sum(1)
            d2 = qn - 2 * (q @ block.T) + bn2[None]  # (Q, b)
            # float32 rounds each term by about eps × its size: too much when the distances are far smaller
            nearest = np.partition(d2, min(k, d2.shape[1] - 1), axis=1)[:, min(k, d2.shape[1] - 1)]  # (Q,)
            if (ROUNDING * (qn[:, 0] + bn2.max()) > 1e-3 * nearest).any():
                d2 = _centred_sq_distances(q, block)
            d = np.sqrt(np.maximum(d2, 0))
        if exclude is not None:
            rows = np.asarray(exclude) - lo
            hit = (rows >= 0) & (rows < len(block))
            d[np.flatnonzero(hit), rows[hit]] = np.inf
        cand_d = np.concatenate([best_d, d.astype(np.float32)], 1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, lo + len(block)), d.shape)], 1)
        top = np.argpartition(cand_d, k - 1, axis=1)[:, :k] if cand_d.shape[1] > k else np.argsort(cand_d, 1)
        best_d = np.take_along_axis(cand_d, top, 1)
        best_i = np.take_along_axis(cand_i, top, 1)
    if metric == "euclidean" and best_d.size:  # the k found, measured exactly: (Q, k, D) -> (Q, k)
        diff = np.asarray(x[best_i.ravel()], dtype=np.float64).reshape(*best_i.shape, -1) - q[:, None]
        best_d = np.where(np.isinf(best_d), np.inf, np.sqrt((diff * diff).sum(-1))).astype(np.float32)
    order = np.lexsort((best_i, best_d), axis=1) if best_d.size else np.zeros_like(best_i)
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_d, order, 1)


ROUNDING = 64 * float(np.finfo(np.float32).eps)  # a bound on float32's error in |q|² - 2q·x + |x|², relative


def _centred_sq_distances(q: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Squared distances (Q, b) about the queries' mean, which changes no distance and leaves the terms as small as
    the distances (their float32 rounding then as small), a few MiB of rows at a time."""
    centre = q.mean(0)  # (D,)
    qc = q - centre  # (Q, D)
    qn = (qc * qc).sum(1)[:, None]  # (Q, 1)
    out = np.empty((len(q), len(block)), np.float32)
    step = max(1, (8 << 20) // (4 * max(q.shape[1], len(q))))
    for lo in range(0, len(block), step):
        b = block[lo : lo + step] - centre  # (s, D)
        out[:, lo : lo + len(b)] = qn - 2 * (qc @ b.T) + (b * b).sum(1)[None]
    return out


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"deepscope: k, the number of neighbours, must be a whole number of at least 1, not {k!r}")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FlatIndex:
    """An exact FAISS index of the rows of ``x``: built once (a copy of ``x``), then queried many times.

    >>> FlatIndex(x, "cosine").search(x[[7]], 5, exclude=np.array([7]))
    """

    def __init__(self, x: np.ndarray, metric: str = "cosine") -> None:
        import faiss

        if metric not in METRICS:
            raise ValueError(f"deepscope: metric must be one of {METRICS}, not {metric!r}")
        self.metric = metric
        x = np.ascontiguousarray(x, dtype=np.float32)
        if metric == "cosine":
            self.index = faiss.IndexFlatIP(x.shape[1])
            self.index.add(_normalize(x))
        else:  # about the column mean: far from the origin, float32 L2 loses the differences between rows
            self.centre = x.mean(0, dtype=np.float64).astype(np.float32)  # (D,)
            self.index = faiss.IndexFlatL2(x.shape[1])
            self.index.add(x - self.centre)
        self.rows = len(x)

    def search(
        self, queries: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices and distances (Q, k) of the nearest rows, nearest first, as :func:`nearest_neighbors`."""
        _check_k(k)
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.metric == "cosine":
            q = _normalize(q)
        else:
            q = np.ascontiguousarray(q - self.centre)
        k = min(k, self.rows - (1 if exclude is not None else 0))
        extra = 1 if exclude is not None else 0
        found = min(k + extra, self.rows)
        scores, idx = self.index.search(q, found)  # (Q, found) each; inner products or squared L2
        if self.metric == "cosine":
            dist = 1.0 - scores
        else:
            dist = np.sqrt(np.maximum(scores, 0))
        dist = dist.astype(np.float32)
        if exclude is not None:
            drop = idx == np.asarray(exclude)[:, None]
            drop[~drop.any(1), -1] = True  # itself not among the nearest (duplicates): drop the farthest
            keep = ~drop
            idx = idx[keep].reshape(len(q), found - 1)
            dist = dist[keep].reshape(len(q), found - 1)
        order = np.lexsort((idx, dist), axis=1)  # ties: lower index first, as the NumPy search
        return np.take_along_axis(idx, order, 1)[:, :k].astype(np.int64), np.take_along_axis(dist, order, 1)[:, :k]


@dataclass(frozen=True)
class NeighborsConfig:
    layers: tuple[str, ...] | None = None
    k: int = 10
    metric: str = "cosine"
    block_rows: int = 4096


class ExactNeighbors:
    """The k-nearest-neighbour graph of every instance of each layer (``neighbors/<layer>/{indices,distances}.npy``).

    All pairs cost N² × D: meant for up to some ten thousand instances; single queries go through the reader.
    """

    name = NAME

    def __init__(self, config: NeighborsConfig | None = None) -> None:
        self.config = config or NeighborsConfig()

    @classmethod
    def is_compatible(cls, model: Any, data: Any) -> bool:
        return True

    def run(self, run_dir: str | os.PathLike[str], model: Any = None, data: Any = None) -> list[Path]:
        from .reader import AnalysisReader

        reader = AnalysisReader(run_dir)
        cfg = self.config
        written = []
        for layer in cfg.layers or reader.layers:
            x = reader.matrix(layer)
            out = artifact_dir(run_dir, NAME, layer)
            out.mkdir(parents=True, exist_ok=True)
            idx = np.zeros((len(x), min(cfg.k, len(x) - 1)), np.int64)
            dist = np.zeros(idx.shape, np.float32)
            for lo in range(0, len(x), cfg.block_rows):
                rows = np.arange(lo, min(lo + cfg.block_rows, len(x)))
                idx[rows], dist[rows] = nearest_neighbors(x, x[rows], cfg.k, cfg.metric, exclude=rows)
            np.save(out / "indices.npy", idx)
            np.save(out / "distances.npy", dist)
            write_provenance(out, provenance(NAME, asdict(cfg), layer=layer, rows=len(x)))
            written.append(out)
        return written
