"""Small models and datasets built in code for the analysis tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 12)
        self.out = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # (B, 8, H, W)
        h = h.mean((2, 3))  # (B, 8, H, W) -> (B, 8)
        return self.out(torch.relu(self.fc1(h)))


class FailingAt(torch.utils.data.Dataset):
    """Items of ``base``; item ``fail_at`` raises once while ``armed`` (an interruption)."""

    def __init__(self, base: torch.utils.data.Dataset, fail_at: int) -> None:
        self.base, self.fail_at, self.armed = base, fail_at, True

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if self.armed and i == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        return self.base[i]


def image_data(n: int = 300, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g))


class TokenModel(nn.Module):
    """Token embeddings → a per-token layer → masked mean → classifier."""

    def __init__(self, vocab: int, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mix(self.embed(input_ids)))  # (B, T, D)
        m = attention_mask.unsqueeze(-1).float()  # (B, T) -> (B, T, 1)
        return self.head((h * m).sum(1) / m.sum(1))


WORDS = ("How", "What", "Why", "When", "Where")


def questions(n: int = 200, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    topics = ["cats sleep", "rain falls", "stars shine", "bread rises", "tides turn", "ice melts", "birds sing"]
    out = []
    for i in range(n):
        w = WORDS[int(torch.randint(0, len(WORDS), (1,), generator=g))]
        t = topics[int(torch.randint(0, len(topics), (1,), generator=g))]
        extra = " so often" * int(torch.randint(0, 3, (1,), generator=g))
        out.append(f"{w} do {t}{extra}?" if i % 2 else f"{w} {t}{extra}?")
    return out


class TextDataset(torch.utils.data.Dataset):
    """Character-level questions, right-padded to a common length, with an ``attention_mask``."""

    def __init__(self, texts: list[str], labels: list[int]) -> None:
        self.chars = sorted(set("".join(texts)))
        self.length = max(map(len, texts))
        self.texts, self.labels = texts, labels

    @property
    def vocab(self) -> int:
        return len(self.chars) + 1  # 0 is padding

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = [self.chars.index(c) + 1 for c in self.texts[i]]
        pad = self.length - len(ids)
        return {
            "input_ids": torch.tensor(ids + [0] * pad),
            "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
            "labels": torch.tensor(self.labels[i]),
        }
