"""The demo's two networks. Each has ``features`` (input → top hidden layer) and ``classifier``."""

from __future__ import annotations

import math

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv → BatchNorm → ReLU → max-pool blocks and a ReLU hidden layer: the healthy network."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c1, 28, 28) -> (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c2, 14, 14) -> (B, c2, 7, 7)
            nn.Flatten(),  # (B, c2, 7, 7) -> (B, c2 * 49)
            nn.Linear(c2 * 49, hidden),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DeepSigmoidMLP(nn.Module):
    """``depth`` sigmoid layers of ``hidden`` units with the "standard" initialisation W ~ U[−1/√n, 1/√n].

    Glorot & Bengio (2010, "Understanding the difficulty of training deep feedforward neural networks")
    showed that with this initialisation the top hidden layer of such a network saturates near 0 early
    in training and escapes only slowly: the pathological network beside the healthy CNN.
    """

    def __init__(self, depth: int = 4, hidden: int = 1000, classes: int = 10, inputs: int = 28 * 28) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, 1, 28, 28) -> (B, 784)
        for fan_in in [inputs] + [hidden] * (depth - 1):
            layers += [nn.Linear(fan_in, hidden), nn.Sigmoid()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(hidden, classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                naive_init_(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def naive_init_(layer: nn.Linear) -> None:
    """W ~ U[−1/√n, 1/√n] with n the fan-in, biases 0 (Glorot & Bengio's "standard" initialisation)."""
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
