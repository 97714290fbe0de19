"""Inputs at the edges of what ``deepscope.analyze`` reads: samplers, batches made by the dataset, wrapped models,
float labels, half-precision sequences — each against a plain forward pass of the same instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

import deepscope
from deepscope.analyses.layer_outputs import pool


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def data(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def analyze(model, d, run, **kw):
    run.mkdir(parents=True, exist_ok=True)
    return deepscope.analyze(model, d, run=run, progress=False, full_maps=False, projection=False, **kw)


def test_a_half_precision_masked_mean_does_not_overflow():
    x = torch.full((2, 600, 4), 200.0, dtype=torch.float16)  # its sum over 600 tokens is past float16's 65504
    mask = torch.ones(2, 600, dtype=torch.bool)
    mask[1, 300:] = False
    pooled = pool(x, mask, False)
    assert pooled.dtype == torch.float16
    expected = (x.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(pooled.float(), expected)


def test_a_shuffling_batch_sampler_is_refused(tmp_path):
    torch.manual_seed(0)
    x, y = data()
    ds = TensorDataset(x, y)
    with pytest.raises(ValueError, match="the DataLoader shuffles"):
        analyze(MLP(), DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds), 32, False)), tmp_path / "a")
    assert not any((tmp_path / "a").iterdir())  # refused before any work
    model = MLP().eval()
    r = analyze(model, DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 32, False)), tmp_path / "b",
                layers=["fc1"])  # fmt: skip
    np.testing.assert_allclose(r.matrix("fc1"), model.fc1(x).detach().numpy(), atol=1e-6)


def test_a_batch_sampler_of_its_own_is_warned_of(tmp_path):
    x, y = data()

    class Halves:  # no sampler deepscope knows: its order is taken as it comes
        def __iter__(self):
            yield from (list(range(0, 50)), list(range(50, 100)))

        def __len__(self):
            return 2

    model = MLP().eval()
    with pytest.warns(RuntimeWarning, match="no sampler deepscope knows"):
        r = analyze(model, DataLoader(TensorDataset(x, y), batch_sampler=Halves()), tmp_path, layers=["fc1"])
    np.testing.assert_allclose(r.matrix("fc1"), model.fc1(x).detach().numpy(), atol=1e-6)


def test_a_loader_of_batches_made_by_the_dataset(tmp_path):
    x, y = data()

    class Shards(Dataset):  # each item is already a batch of 10 instances
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return x[i * 10 : (i + 1) * 10], y[i * 10 : (i + 1) * 10]

    model = MLP().eval()
    loader = DataLoader(Shards(), batch_size=None)
    r = analyze(model, loader, tmp_path / "a", layers=["fc1"])
    assert len(r) == 100
    np.testing.assert_allclose(r.matrix("fc1"), model.fc1(x).detach().numpy(), atol=1e-6)
    r = analyze(model, loader, tmp_path / "b", layers=["fc1"], labels=(y + 1) % 3)
    np.testing.assert_array_equal(r.instances().column("label").to_numpy(), ((y + 1) % 3).numpy())


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch.compile's own
@pytest.mark.parametrize("wrap", [torch.compile, nn.DataParallel], ids=["compile", "DataParallel"])
def test_a_wrapped_model_is_named_as_the_model_inside(tmp_path, wrap):
    torch._dynamo.reset()
    x, y = data()
    model = MLP().eval()
    r = analyze(wrap(model), (x, y), tmp_path / "a", layers=["fc1"])
    assert r.layers == ["fc1"]
    np.testing.assert_allclose(r.matrix("fc1"), model.fc1(x).detach().numpy(), atol=1e-5)
    torch._dynamo.reset()
    r = analyze(wrap(model), (x, y), tmp_path / "b", layers="fc*")
    assert r.layers == ["fc1", "fc2"]
    torch._dynamo.reset()
    r = analyze(wrap(model), (x, y), tmp_path / "c")
    assert r.layers == ["fc1", "act", "fc2"]
    np.testing.assert_allclose(r.matrix("fc2"), model(x).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda x, y: TensorDataset(x, y.float()),
        lambda x, y: (x, y.float()),
        lambda x, y: TensorDataset(x, y.float()[:, None]),  # BCEWithLogitsLoss's (B, 1) targets
        lambda x, y: [{"x": x[i : i + 25], "label": y[i : i + 25].double()} for i in range(0, 100, 25)],
    ],
    ids=["TensorDataset", "tuple", "column", "dicts"],
)
def test_float_labels_of_whole_numbers_are_classes(tmp_path, make):
    x, y = data()
    model = MLP().eval()
    if isinstance(make(x, y), list):
        model = Kw(model)
    r = analyze(model, make(x, y), tmp_path)
    np.testing.assert_array_equal(r.instances().column("label").to_numpy(), y.numpy())
    expected = (MLP.forward(model.inner if isinstance(model, Kw) else model, x).argmax(1) == y).float().mean()
    assert r.accuracy == pytest.approx(float(expected))


class Kw(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_float_labels_with_gaps_are_unlabelled_where_nan(tmp_path):
    x, y = data()
    gaps = y.float()
    gaps[::7] = float("nan")
    expected = np.where(np.arange(100) % 7 == 0, np.nan, y.numpy())  # unlabelled: no label in the table
    r = analyze(MLP().eval(), (x, gaps), tmp_path / "a")
    np.testing.assert_array_equal(r.instances().column("label").to_numpy(), expected)
    r = analyze(MLP().eval(), x, tmp_path / "b", labels=gaps.numpy())  # labels= as data (X, y) reads them
    np.testing.assert_array_equal(r.instances().column("label").to_numpy(), expected)
    pd = pytest.importorskip("pandas")
    column = pd.Series(y.numpy(), dtype="Int64").mask(np.arange(100) % 7 == 0)  # a nullable column with gaps
    r = analyze(MLP().eval(), x, tmp_path / "c", labels=column)
    np.testing.assert_array_equal(r.instances().column("label").to_numpy(), expected)


def test_float_labels_with_fractions_are_no_classes(tmp_path):
    x, _ = data()
    r = analyze(MLP().eval(), (x, torch.rand(100)), tmp_path)  # a regression target
    assert r.accuracy is None


def test_a_list_of_inputs_and_labels_says_to_pass_a_tuple(tmp_path):
    x, y = data()
    with pytest.raises(TypeError, match=r"as a tuple \(X, y\)"):
        analyze(MLP(), [x, y], tmp_path)
    assert not any(tmp_path.iterdir())
