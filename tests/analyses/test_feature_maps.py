"""Full feature maps against the layer outputs of a manual forward pass with hooks; choosing, appending, staleness,
the data kinds they are read from, and bad requests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.analyses.models import TinyCNN, image_data
from tests.conftest import new_dir

import deepscope
from deepscope.analyses import read
from deepscope.analyses.feature_maps import INDEX, MAX_BYTES, PER_CLASS, choose, maps_dir


def layer_outputs(model, x, names):
    """The oracle: plain forward hooks, the whole dataset in one forward pass, in eval mode."""
    seen, handles = {}, []
    modules = dict(model.named_modules())
    for n in names:
        handles.append(modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.detach())))
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: t.numpy() for n, t in seen.items()}


class BatchNormCNN(TinyCNN):
    """TinyCNN with batch norm and dropout: the maps must come from eval mode, as the oracle's do."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(6)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        h = self.drop(torch.relu(self.bn(self.conv1(x))))
        h = torch.relu(self.conv2(h)).mean((2, 3))  # (B, 8, H, W) -> (B, 8)
        return self.out(torch.relu(self.fc1(h)))


@pytest.fixture
def analysed(tmp_path):
    torch.manual_seed(0)
    model, data = BatchNormCNN(), image_data(200)
    model.bn.running_mean.uniform_(-0.5, 0.5)  # buffers that differ from training-mode statistics
    model.train()
    r = deepscope.analyze(model, data, layers=["conv1", "conv2", "fc1"], run=tmp_path, batch_size=64, progress=False)
    return model, data, r, tmp_path


def test_default_maps_equal_the_layer_outputs_for_a_few_instances_of_each_class(analysed):
    model, data, r, run_dir = analysed
    assert model.training  # analyze leaves the mode as it was
    layers = r.feature_map_layers()
    assert sorted(layers) == ["conv1", "conv2"]  # fc1 outputs vectors, not maps
    x, y = data.tensors
    want = choose(y.numpy(), len(y), None)
    assert len(want) == PER_CLASS * 4 and sorted(np.bincount(y.numpy()[want])) == [PER_CLASS] * 4
    for name, shape in (("conv1", (6, 8, 8)), ("conv2", (8, 8, 8))):
        assert layers[name].shape == shape and layers[name].dtype == "float32"
        assert list(layers[name].indices) == sorted(want)
    oracle = layer_outputs(model, x, ["conv1", "conv2"])
    for i in want:
        for name in ("conv1", "conv2"):
            np.testing.assert_allclose(r.feature_maps(name, i), oracle[name][i], rtol=1e-5, atol=1e-6)
    # the pooled activations are the maps' channel means
    np.testing.assert_allclose(r.feature_maps("conv2", want[0]).mean((1, 2)), r.activations("conv2")[want[0]],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_request_more_appends_and_returns_them(analysed):
    model, data, r, run_dir = analysed
    before = r.feature_map_layers()["conv2"].indices
    new = [i for i in (5, 199, 0, 42) if i not in before][:3]
    got = deepscope.feature_maps(model, data, run=run_dir, layer="conv2", indices=new + [before[0]])
    oracle = layer_outputs(model, data.tensors[0], ["conv2"])["conv2"]
    assert list(got) == ["conv2"] and got["conv2"].shape == (len(new) + 1, 8, 8, 8)
    np.testing.assert_allclose(got["conv2"], oracle[new + [before[0]]], rtol=1e-5, atol=1e-6)
    after = read(run_dir).feature_map_layers()
    assert list(after["conv2"].indices) == list(before) + sorted(new)  # appended, nothing recomputed twice
    assert after["conv1"].indices == read(run_dir).feature_map_layers()["conv1"].indices  # other layers untouched
    for i in new:
        np.testing.assert_allclose(read(run_dir).feature_maps("conv2", i), oracle[i], rtol=1e-5, atol=1e-6)
    # asking again stores nothing new
    deepscope.feature_maps(model, data, run=run_dir, layer="conv2", indices=new)
    assert read(run_dir).feature_map_layers()["conv2"].indices == after["conv2"].indices


def test_an_interrupted_append_is_cut_back_to_the_index(analysed):
    model, data, r, run_dir = analysed
    import zarr

    arr = zarr.open_array(str(maps_dir(run_dir) / "conv2.zarr"), mode="r+")
    k = arr.shape[0]
    arr.resize((k + 2, *arr.shape[1:]))  # rows written, index not yet updated: a crash in between
    arr[k:] = 99.0
    new = next(i for i in range(200) if i not in r.feature_map_layers()["conv2"].indices)
    deepscope.feature_maps(model, data, run=run_dir, layer="conv2", indices=[new])
    info = read(run_dir).feature_map_layers()["conv2"]
    assert info.indices[-1] == new and len(info.indices) == k + 1
    oracle = layer_outputs(model, data.tensors[0], ["conv2"])["conv2"]
    np.testing.assert_allclose(read(run_dir).feature_maps("conv2", new), oracle[new], rtol=1e-5, atol=1e-6)


def test_a_new_analysis_makes_older_maps_stale(analysed):
    model, data, r, run_dir = analysed
    deepscope.feature_maps(model, data, run=run_dir, layer="conv1", indices=[1])
    assert 1 in read(run_dir).feature_map_layers()["conv1"].indices
    with torch.no_grad():
        model.conv1.weight.mul_(2)
    r2 = deepscope.analyze(model, data, layers=["conv1", "fc1"], run=run_dir, batch_size=64, progress=False,
                           full_maps=[3])  # fmt: skip
    layers = r2.feature_map_layers()
    assert list(layers) == ["conv1"] and layers["conv1"].indices == (3,)
    oracle = layer_outputs(model, data.tensors[0], ["conv1"])["conv1"]
    np.testing.assert_allclose(r2.feature_maps("conv1", 3), oracle[3], rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="instance 1"):
        r2.feature_maps("conv1", 1)
    # a reader of maps written for another analysis sees none
    index = json.loads((maps_dir(run_dir) / INDEX).read_text())
    index["analysis"]["started"] = 0
    (maps_dir(run_dir) / INDEX).write_text(json.dumps(index))
    assert read(run_dir).feature_map_layers() == {}


def test_options_and_bad_requests(analysed):
    model, data, r, run_dir = analysed
    with pytest.raises(ValueError, match="not feature maps"):
        deepscope.feature_maps(model, data, run=run_dir, layer="fc1", indices=[0])
    with pytest.raises(ValueError, match=r"feature_maps: no layer named 'conv9'.*valid layers: conv1"):
        deepscope.feature_maps(model, data, run=run_dir, layer="conv9", indices=[0])
    for bad in (200, -1):
        with pytest.raises(IndexError, match=f"instance {bad} out of range for 200"):
            deepscope.feature_maps(model, data, run=run_dir, layer="conv1", indices=[bad])
    with pytest.raises(ValueError, match="dataset has 100 instances, the analysis 200"):
        deepscope.feature_maps(model, image_data(100), run=run_dir, layer="conv1", indices=[0])
    other = BatchNormCNN()
    with pytest.raises(ValueError, match="not the model analysed"):
        deepscope.feature_maps(other, data, run=run_dir, layer="conv1", indices=[0])
    with pytest.raises(ValueError, match="dtype"):
        deepscope.feature_maps(model, data, run=run_dir, layer="conv1", indices=[0], dtype="int8")
    with pytest.raises(KeyError, match="no feature maps stored for layer 'fc1'"):
        r.feature_maps("fc1", 0)
    with pytest.raises(FileNotFoundError, match="run deepscope.analyze"):
        deepscope.feature_maps(model, data, run=run_dir / "elsewhere", layer="conv1", indices=[0])
    # float16, a count of instances spread over the classes
    got = deepscope.feature_maps(model, data, run=run_dir, layer="conv1", indices=8, dtype="float16")
    oracle = layer_outputs(model, data.tensors[0], ["conv1"])["conv1"]
    picked = choose(data.tensors[1].numpy(), 200, 8)
    np.testing.assert_allclose(got["conv1"], oracle[picked], rtol=1e-3, atol=1e-3)


def test_float16_maps_and_the_byte_bound(tmp_path):
    torch.manual_seed(0)
    model, data = TinyCNN(), image_data(120)
    r = deepscope.analyze(model, data, layers=["conv2"], run=tmp_path, progress=False, full_maps=False)
    assert r.feature_map_layers() == {}
    from deepscope.analyses.feature_maps import FeatureMaps, FeatureMapsConfig

    per_instance = 8 * 8 * 8 * 2
    infos = FeatureMaps(FeatureMapsConfig(dtype="float16", max_bytes=5 * per_instance)).run(tmp_path, model, data)
    assert len(infos["conv2"].indices) == 5 and infos["conv2"].dtype == "float16"
    assert sorted(np.bincount(data.tensors[1].numpy()[list(infos["conv2"].indices)], minlength=4)) == [1, 1, 1, 2]
    oracle = layer_outputs(model, data.tensors[0], ["conv2"])["conv2"]
    i = infos["conv2"].indices[0]
    np.testing.assert_allclose(read(tmp_path).feature_maps("conv2", i), oracle[i], rtol=1e-3, atol=1e-3)
    assert MAX_BYTES >= 1 << 20


def test_maps_from_a_dataloader_a_list_of_batches_and_dict_datasets(tmp_path):
    torch.manual_seed(0)
    model, data = TinyCNN(), image_data(150)
    x = data.tensors[0]
    oracle = layer_outputs(model, x, ["conv1"])["conv1"]
    want = [149, 3, 77]
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    batches = [(x[i : i + 40], data.tensors[1][i : i + 40]) for i in range(0, 150, 40)]

    class Dicts(torch.utils.data.Dataset):  # no __getitems__: items are fetched one by one
        def __len__(self):
            return 150

        def __getitem__(self, i):
            return {"x": x[i], "labels": data.tensors[1][i]}

    class Keyword(TinyCNN):
        def forward(self, x):  # noqa: D102 - called with x=...
            return super().forward(x)

    kw = Keyword()
    kw.load_state_dict(model.state_dict())
    for k, (m, source) in enumerate([(model, loader), (model, batches), (kw, Dicts())]):
        run_dir = new_dir(tmp_path / str(k))
        deepscope.analyze(m, source, layers=["conv1"], run=run_dir, progress=False, full_maps=False)
        got = deepscope.feature_maps(m, source, run=run_dir, layer="conv1", indices=want)
        np.testing.assert_allclose(got["conv1"], oracle[want], rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError, match="yielded 120 instances; instance 149 is beyond"):
        deepscope.feature_maps(model, batches[:3], run=new_dir(tmp_path / "1"), layer="conv1", indices=[149])


def test_conv1d_maps_and_a_one_shot_iterator(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(5 * 16, 3))  # fmt: skip
    x = torch.randn(60, 2, 16)
    r = deepscope.analyze(model, torch.utils.data.TensorDataset(x), layers=["0", "1", "3"], run=tmp_path,
                          progress=False)  # fmt: skip
    layers = r.feature_map_layers()
    assert list(layers) == ["0"] and layers["0"].shape == (5, 16)  # the ReLU's (B, C, L) output is not known as maps
    predicted = r.instances().column("prediction").to_numpy()
    assert list(layers["0"].indices) == sorted(choose(predicted, 60, None))  # no labels: spread over predictions
    i = layers["0"].indices[0]
    np.testing.assert_allclose(r.feature_maps("0", i), layer_outputs(model, x, ["0"])["0"][i], rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="one-shot iterator"):
        deepscope.analyze(model, iter([x[:30], x[30:]]), layers=["0"], run=new_dir(tmp_path / "it"), progress=False,
                          full_maps=[1])  # fmt: skip


class TextCNN(torch.nn.Module):
    """Token ids -> embeddings -> Conv1d: maps (B, 6, T) whose length T is each input's."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.conv = torch.nn.Conv1d(8, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 2)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.conv(self.emb(input_ids).transpose(1, 2)).mean(2))  # (B, 6, T) -> (B, 6)


def test_batches_padded_to_different_lengths_keep_their_activations_without_maps(tmp_path):
    torch.manual_seed(0)
    model = TextCNN()
    batches = [{"input_ids": torch.randint(1, 50, (4, t)), "attention_mask": torch.ones(4, t, dtype=torch.long),
                "label": torch.tensor([0, 1, 0, 1])} for t in (5, 9, 7)]  # fmt: skip
    with pytest.warns(RuntimeWarning, match=r"no feature maps were stored for 1 layer.*'conv' gives maps \(6, 9\)"):
        r = deepscope.analyze(model, batches, layers=["conv", "head"], run=tmp_path, progress=False)
    assert len(r) == 12 and r.feature_map_layers() == {}
    with pytest.raises(ValueError, match="inputs differ in length or size"):
        deepscope.feature_maps(model, batches, run=tmp_path, layer="conv", indices=[0, 4])
    got = deepscope.feature_maps(model, batches, run=tmp_path, layer="conv", indices=[4, 6])  # one length: stored
    with torch.no_grad():
        want = model.conv(model.emb(batches[1]["input_ids"][[0, 2]]).transpose(1, 2)).numpy()
    np.testing.assert_allclose(got["conv"], want, rtol=1e-5, atol=1e-6)


def test_a_padding_collate_never_truncates_maps(tmp_path):
    torch.manual_seed(0)
    model = TextCNN()
    lengths = [3, 8, 3, 8, 5, 3] * 5
    seqs = [torch.randint(1, 50, (t,)) for t in lengths]

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(seqs)

        def __getitem__(self, i):
            return {"input_ids": seqs[i], "label": i % 2}

    def collate(items):  # pads to the longest of the batch
        ids = torch.nn.utils.rnn.pad_sequence([it["input_ids"] for it in items], batch_first=True)
        return {
            "input_ids": ids,
            "attention_mask": (ids != 0).long(),
            "label": torch.tensor([it["label"] for it in items]),
        }

    with pytest.warns(RuntimeWarning, match="'conv' gives maps"):
        r = deepscope.analyze(model, Texts(), layers=["conv"], run=tmp_path, collate_fn=collate, batch_size=8,
                              progress=False)  # fmt: skip
    assert len(r) == 30 and r.feature_map_layers() == {}  # the maps were once cut to the first instance's length
    with pytest.raises(ValueError, match=r"'conv' gives maps \(6, 8\) for instance 1 but \(6, 3\) for instance 0"):
        deepscope.feature_maps(model, Texts(), run=tmp_path, layer="conv", indices=[0, 1], collate_fn=collate)
    # instances of one length, each computed alone (a batch would pad it to its neighbours' length): as a plain pass
    got = deepscope.feature_maps(model, Texts(), run=tmp_path, layer="conv", indices=[1, 3, 9], collate_fn=collate)
    with torch.no_grad():
        want = [model.conv(model.emb(seqs[i][None]).transpose(1, 2))[0].numpy() for i in (1, 3, 9)]
    np.testing.assert_allclose(got["conv"], np.stack(want), rtol=1e-5, atol=1e-6)


def test_maps_of_another_size_than_those_stored_are_refused_and_keep_them(tmp_path):
    torch.manual_seed(0)
    model = TextCNN()
    seqs = [torch.randint(1, 50, (t,)) for t in [3, 8, 3, 8] * 5]
    data = [(s, i % 2) for i, s in enumerate(seqs)]

    def collate(items):
        ids = torch.nn.utils.rnn.pad_sequence([s for s, _ in items], batch_first=True)
        return {"input_ids": ids, "label": torch.tensor([y for _, y in items])}

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    deepscope.analyze(model, Texts(), layers=["conv"], run=tmp_path, collate_fn=collate, progress=False,
                      full_maps=False)  # fmt: skip
    first = deepscope.feature_maps(model, Texts(), run=tmp_path, layer="conv", indices=[1, 3], collate_fn=collate)
    with pytest.raises(ValueError, match=r"gives maps \(6, 3\) for instance 0 but holds maps \(6, 8\) of instance 1"):
        deepscope.feature_maps(model, Texts(), run=tmp_path, layer="conv", indices=[0], collate_fn=collate)
    r = read(tmp_path)  # the maps stored before are kept, as they were
    assert r.feature_map_layers()["conv"].indices == (1, 3)
    np.testing.assert_array_equal(r.feature_maps("conv", 3), first["conv"][1])
