"""An analysed run for the analysis views' browser tests: a small CNN trained briefly on real MNIST digits.

Written with the real ``deepscope.analyze``: activations of three layers, previews of the digit images, a
metadata table with text (hostile strings included), PCA; plus a run without any analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from browser_helpers import XSS

import deepscope
from deepscope.demo.data import load_mnist
from deepscope.demo.models import SmallCNN

N = 1000
# words, not digits: views must show class names as text, never parse them as numbers
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LAYERS = ["features.4", "features.10", "classifier"]  # conv2 (32 channels), hidden (128), logits (10)


@dataclass(frozen=True)
class Analysed:
    root: Path
    run: str  # the analysed run
    plain: str  # a run without analysis
    labels: np.ndarray
    notes: list[str]


def write_analysed(root: Path) -> Analysed:
    torch.manual_seed(0)
    digits = load_mnist(val_size=N)
    model = SmallCNN(channels=(8, 32), hidden=128)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with deepscope.init(project="browser", name="analysed-cnn", dir=root) as run:
        for step in range(60):  # ~85 % accuracy: both correct and misclassified instances of every class
            i = torch.randint(0, len(digits.train_x), (64,))
            loss = torch.nn.functional.cross_entropy(model(digits.train_x[i]), digits.train_y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss.item()}, step=step)
        model.eval()
        notes = [XSS if i % 97 == 0 else f"How is digit {int(y)} written?" if i % 3 == 0 else f"sample {i}"
                 for i, y in enumerate(digits.val_y)]  # fmt: skip
        data = torch.utils.data.TensorDataset(digits.val_x, digits.val_y)
        ink = digits.val_x.flatten(1).mean(1).numpy().round(4)  # a numeric column: the mean pixel value
        metadata = {"note": notes, "odd": [bool(i % 2) for i in range(N)], "ink": ink}
        deepscope.analyze(model, data, layers=LAYERS, labels=digits.val_y, class_names=CLASS_NAMES, metadata=metadata,
                          run=run, progress=False)  # fmt: skip
        analysed = run.id
    with deepscope.init(project="browser", name="not-analysed", dir=root) as run:
        run.log({"train/loss": 1.0}, step=0)
        plain = run.id
    return Analysed(root, analysed, plain, digits.val_y.numpy(), notes)
