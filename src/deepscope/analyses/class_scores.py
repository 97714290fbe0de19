"""Class scores from a model's outputs, for (rows, classes) matrices: the softmax, the top class and its score.

NumPy reduces a short row slowly — (4096, 10) costs three times a reduction over whole columns —, so for up to
``NARROW`` classes the row maxima and sums are taken a column at a time.
"""

from __future__ import annotations

import numpy as np

NARROW = 32  # classes up to which row maxima and sums are taken a column at a time


def softmax_rows(logits: np.ndarray) -> None:
    """Softmax of each row, in place (NumPy: for a (rows, classes) matrix, torch's threaded kernel cost more)."""
    if logits.shape[1] > NARROW:
        logits -= logits.max(1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(1, keepdims=True)
        return
    columns = logits.T
    top = columns[0].copy()
    for c in columns[1:]:
        np.maximum(top, c, out=top)
    logits -= top[:, None]
    np.exp(logits, out=logits)
    total = columns[0].copy()
    for c in columns[1:]:
        total += c
    logits /= total[:, None]


def top_class(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's highest-scoring class (the first of equals, as ``argmax``; int64) and its score (float32)."""
    if scores.shape[1] > NARROW or not len(scores):
        pred = scores.argmax(1).astype(np.int64)
        return pred, scores[np.arange(len(scores)), pred].astype(np.float32)
    columns = scores.T
    top = columns[0].copy()
    pred = np.zeros(len(scores), np.int64)
    for j, c in enumerate(columns[1:], 1):
        higher = (c > top) | (np.isnan(c) & ~np.isnan(top))  # NaN wins, as in argmax
        pred[higher] = j
        np.copyto(top, c, where=higher)
    return pred, top.astype(np.float32, copy=False)
