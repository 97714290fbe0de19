"""analyze's warnings point at the user's call, not at deepscope's own files: a warning filter or a traceback then
names the line to change."""

from __future__ import annotations

import warnings

import torch
from tests.conftest import new_dir

import deepscope


def caught_during(fn) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if str(w.message).startswith("deepscope")]


def test_a_dropped_partial_batch_and_a_module_called_twice_are_said_at_the_users_line(tmp_path):
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)

    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = shared

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(torch.relu(self.shared(x)))

    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.arange(10) % 4)
    loader = torch.utils.data.DataLoader(data, batch_size=4, drop_last=True)
    found = caught_during(lambda: deepscope.analyze(Twice(), loader, layers=["shared"], run=new_dir(tmp_path / "r"),
                                                    progress=False))  # fmt: skip
    assert any("drops its last" in str(w.message) for w in found)
    assert any("called more than once" in str(w.message) for w in found)
    assert all(w.filename == __file__ for w in found), [(str(w.message)[:60], w.filename) for w in found]
