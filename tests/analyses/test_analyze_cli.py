"""``deepscope analyze MODULE:ATTR --data MODULE:ATTR --checkpoint FILE``, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

import deepscope
from deepscope.analyses import read

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build_model():
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def build_conv():
        return nn.Sequential(nn.Unflatten(1, (1, 4)), nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 3))

    def build_broken():
        return nn.Sequential(nn.Flatten(), nn.Linear(5, 3))  # does not fit the data

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 4, 4, generator=g), torch.randint(0, 3, (90,), generator=g)
    dataset = torch.utils.data.TensorDataset(x, y)
    inputs_only = torch.utils.data.TensorDataset(x)
    other_labels = (torch.arange(90) % 3).numpy()
    few_labels = other_labels[:10]

    class Interrupted(torch.utils.data.Dataset):  # Ctrl-C while item 50 is read
        def __len__(self):
            return 90

        def __getitem__(self, i):
            if i == 50:
                raise KeyboardInterrupt
            return dataset[i]

    interrupted = Interrupted()
    table = {"tag": ["even" if i % 2 == 0 else "odd" for i in range(90)]}

    def build_image_model():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    images = torch.utils.data.TensorDataset(torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 3, (20,)))
    """
)


def command(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "deepscope.cli", "analyze", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_analyze_command_with_a_checkpoint(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    torch.manual_seed(3)
    trained = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    save_file(trained.state_dict(), str(tmp_path / "ckpt.safetensors"))
    torch.save(trained.state_dict(), tmp_path / "ckpt.pt")
    runs = tmp_path / "runs"
    done = command("mymodels:build_model", "--data", "mymodels:dataset", "--checkpoint", "ckpt.safetensors",
                   "--layers", "2,3", "--dir", str(runs), "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = deepscope.open(runs).runs()
    r = read(runs / run.id)
    correct = r.instances().column("correct").to_numpy(zero_copy_only=False)
    assert f"90 instances, accuracy {correct.mean():.1%}, layers 2, 3" in done.stdout
    assert f"run {run.id}; to see it in the dashboard (Instances tab): deepscope serve {runs}" in done.stdout
    assert repr(r).startswith("<AnalysisReader 90 instances, layers 2, 3: ")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 4, 4, generator=g)
    with torch.no_grad():
        expected = trained[:3](x).numpy()
    np.testing.assert_allclose(r.activations("2")[:], expected, rtol=1e-5, atol=1e-6)
    assert r.confusion() is not None

    # a second analysis into the same run, from a torch.save checkpoint
    again = command("mymodels:build_model", "--data", "mymodels:dataset", "--checkpoint", "ckpt.pt", "--layers", "1",
                    "--dir", str(runs), "--run", run.id, "--no-progress", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert read(runs / run.id).layers == ["1"]

    # weights saved under a wrapper's prefix: DistributedDataParallel's module., a LightningModule's model.
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, tmp_path / "ddp.pt")
    lightning = {f"model.{k}": v for k, v in trained.state_dict().items()} | {"loss_fn.pos_weight": torch.ones(1)}
    torch.save({"state_dict": lightning, "epoch": 3}, tmp_path / "lightning.ckpt")
    for ckpt in ("ddp.pt", "lightning.ckpt"):
        done = command("mymodels:build_model", "--data", "mymodels:dataset", "--checkpoint", ckpt, "--layers", "2",
                       "--dir", str(runs), "--run", run.id, "--no-progress", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        np.testing.assert_allclose(read(runs / run.id).activations("2")[:], expected, rtol=1e-5, atol=1e-6)

    # a whole pickled model is refused in one line: unpickling could run code
    torch.save(trained, tmp_path / "whole.pt")
    whole = command("mymodels:build_model", "--data", "mymodels:dataset", "--checkpoint", "whole.pt",
                    "--dir", str(runs), cwd=tmp_path)  # fmt: skip
    assert whole.returncode == 1 and "state_dict()" in whole.stderr and "Traceback" not in whole.stderr


def test_analyze_command_errors(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    bad_layer = command("mymodels:build_model", "--data", "mymodels:dataset", "--layers", "fc9",
                        "--dir", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
    assert bad_layer.returncode == 1 and "valid layers: 0, 1, 2, 3" in bad_layer.stderr
    assert bad_layer.stderr.count("deepscope") == 1  # one prefix, not "deepscope: deepscope.analyze: …"
    bad_spec = command("mymodels", "--data", "mymodels:dataset", cwd=tmp_path)
    assert bad_spec.returncode == 1 and "module:attribute" in bad_spec.stderr
    bad_labels = command("mymodels:build_model", "--data", "mymodels:dataset", "--labels", "mymodels:few_labels",
                         "--dir", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
    assert bad_labels.returncode == 1 and "10 labels for a dataset of 90 instances" in bad_labels.stderr
    bad_mask = command("mymodels:build_model", "--data", "mymodels:dataset", "--mask", "padding_mask:true",
                       "--dir", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
    assert bad_mask.returncode == 1 and "--mask is KEY, KEY:padding, KEY:tokens or none" in bad_mask.stderr
    assert not (tmp_path / "runs").exists() or not deepscope.open(tmp_path / "runs").runs()  # no run made for these
    crash = command("mymodels:build_broken", "--data", "mymodels:dataset", "--dir", str(tmp_path / "runs"),
                    "--no-progress", cwd=tmp_path)  # fmt: skip
    assert crash.returncode != 0 and "mat1 and mat2 shapes cannot be multiplied" in crash.stderr
    assert not deepscope.open(tmp_path / "runs").runs()  # its new run kept nothing: not left empty in the list


def test_analyze_command_full_maps(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    runs = tmp_path / "runs"
    common = (
        "mymodels:build_conv",
        "--data",
        "mymodels:dataset",
        "--layers",
        "1,3",
        "--dir",
        str(runs),
        "--no-progress",
    )
    done = command(*common, "--full-maps", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = deepscope.open(runs).runs()
    info = read(runs / run.id).feature_map_layers()
    assert list(info) == ["1"] and info["1"].shape == (2, 4, 4) and len(info["1"].indices) == 5  # the conv only
    other = tmp_path / "other"
    off = command(*common[:-3], "--dir", str(other), "--no-progress", "--full-maps", "off", cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    (run,) = deepscope.open(other).runs()
    assert read(other / run.id).layers == ["1", "3"] and read(other / run.id).feature_map_layers() == {}
    bad = command(*common, "--full-maps", "many", cwd=tmp_path)
    assert bad.returncode == 1 and "--full-maps is auto, off or a number" in bad.stderr


def test_analyze_command_labels_class_names_metadata(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    runs = tmp_path / "runs"
    done = command("mymodels:build_model", "--data", "mymodels:inputs_only", "--labels", "mymodels:other_labels",
                   "--class-names", "cat, dog,bird", "--metadata", "mymodels:table", "--text-column", "tag",
                   "--dir", str(runs), "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = deepscope.open(runs).runs()
    r = read(runs / run.id)
    assert r.text_column == "tag"  # named: its values have no spaces
    t = r.instances()
    assert t.column("label").to_pylist() == [i % 3 for i in range(90)]
    assert t.column("tag").to_pylist()[:3] == ["even", "odd", "even"]
    assert r.class_names == ["cat", "dog", "bird"]
    bad = command("mymodels:build_model", "--data", "mymodels:inputs_only", "--class-names", "mymodels:g",
                  "--dir", str(runs), "--no-progress", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 1 and "not a sequence of names" in bad.stderr  # refused before any run is made
    assert len(deepscope.open(runs).runs()) == 1


def test_an_interrupted_analysis_says_how_to_resume(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    runs = tmp_path / "runs"
    done = command("mymodels:build_model", "--data", "mymodels:interrupted", "--batch-size", "16", "--dir", str(runs),
                   "--no-progress", cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0
    (run,) = deepscope.open(runs).runs()
    assert f"interrupted; 48 rows are kept: run the same command with --run {run.id} to resume" in done.stderr
    assert run.status != "finished" or run.exit_reason  # stopped, and says so
    resumed = command("mymodels:build_model", "--data", "mymodels:dataset", "--batch-size", "16", "--dir", str(runs),
                      "--run", run.id, "--no-progress", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    info = deepscope.open(runs).info(run.id)
    assert info.status == "finished" and info.exit_reason is None  # the command's own run, complete now
    assert info.config["model"] == "mymodels:build_model" and len(read(runs / run.id)) == 90
    named = command("mymodels:build_model", "--data", "mymodels:interrupted", "--batch-size", "16", "--dir", str(runs),
                    "--name", "first-try", "--no-progress", cwd=tmp_path)  # fmt: skip
    rid = next(r.id for r in deepscope.open(runs).runs() if r.name == "first-try")
    assert f"with --run {rid} in place of --name first-try to resume" in named.stderr


def test_analyze_command_without_previews(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    runs = tmp_path / "runs"
    for flags in (("--name", "with-previews"), ("--no-previews", "--project", "images")):
        done = command("mymodels:build_image_model", "--data", "mymodels:images", "--dir", str(runs), "--no-progress",
                       *flags, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
    second, first = deepscope.open(runs).runs()  # newest first
    assert read(runs / first.id).has_images and not read(runs / second.id).has_images
    assert (first.name, first.project) == ("with-previews", "analyze")
    assert (second.name, second.project) == ("build_image_model", "images")


def test_analyze_command_layers_as_globs(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODULE)
    runs = tmp_path / "runs"
    done = command("mymodels:build_model", "--data", "mymodels:dataset", "--layers", "[13],2", "--dir", str(runs),
                   "--no-progress", "--no-previews", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = deepscope.open(runs).runs()
    assert read(runs / run.id).layers == ["1", "3", "2"]  # the glob's matches in the model's order, then "2"
    none = command("mymodels:build_model", "--data", "mymodels:dataset", "--layers", "fc*", "--dir", str(runs),
                   cwd=tmp_path)  # fmt: skip
    assert none.returncode == 1 and "no layer matches 'fc*'" in none.stderr and "Traceback" not in none.stderr


TWO_HEADS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class TwoHeads(nn.Module):  # its hidden features and its logits, both 3 wide: the widths tell nothing
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body, self.head = nn.Linear(16, 3), nn.Linear(3, 3)

        def forward(self, x):
            h = torch.relu(self.body(x.flatten(1)))
            return {"hidden": h, "out": self.head(h)}

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 4, 4, generator=g), torch.randint(0, 3, (90,), generator=g)
    dataset = torch.utils.data.TensorDataset(x, y)
    """
)


def test_analyze_command_output_chooses_the_class_scores(tmp_path):
    (tmp_path / "heads.py").write_text(TWO_HEADS)
    runs = tmp_path / "runs"
    done = command("heads:TwoHeads", "--data", "heads:dataset", "--output", "out", "--dir", str(runs), "--no-progress",
                   "--full-maps", "off", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "outputs" not in done.stderr  # chosen: no warning of a guess
    (run,) = deepscope.open(runs).runs()
    r = read(runs / run.id)
    scope: dict = {}
    exec(TWO_HEADS, scope)
    with torch.no_grad():
        logits = scope["TwoHeads"]()(scope["x"])["out"].double().numpy()
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(r.scores(np.arange(90)), want, rtol=1e-5, atol=1e-6)
    assert r.provenance["scores_output"] == "output['out']"

    guessed = command("heads:TwoHeads", "--data", "heads:dataset", "--dir", str(tmp_path / "guessed"),
                      "--no-progress", "--full-maps", "off", cwd=tmp_path)  # fmt: skip
    assert guessed.returncode == 0 and "took output['hidden'], the first, as the class scores" in guessed.stderr

    wrong = command("heads:TwoHeads", "--data", "heads:dataset", "--output", "logits", "--dir", str(runs),
                    "--no-progress", cwd=tmp_path)  # fmt: skip
    assert wrong.returncode == 1 and "output='logits' names none of the model's outputs" in wrong.stderr
    assert "a dict of 'hidden', 'out'" in wrong.stderr and "Traceback" not in wrong.stderr
    assert [i.id for i in deepscope.open(runs).runs()] == [run.id]  # the failed one left no run
