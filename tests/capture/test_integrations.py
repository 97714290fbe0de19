"""The Lightning and Hugging Face adapters, driven by the real frameworks on tiny models built from configs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import deepscope

pl = pytest.importorskip("lightning.pytorch")  # dev extras: pip install -e '.[dev]'
transformers = pytest.importorskip("transformers")
from deepscope.capture.integrations.huggingface import DeepscopeCallback as HFCallback  # noqa: E402
from deepscope.capture.integrations.lightning import DeepscopeCallback as LightningCallback  # noqa: E402

# Lightning 2.6 builds torch.utils._pytree.LeafSpec, which torch 2.13 deprecates with a FutureWarning
# raised from inside Lightning's own loops; nothing in deepscope or in these tests can avoid it.
LIGHTNING_PYTREE = "ignore:.isinstance.treespec, LeafSpec.. is deprecated:FutureWarning"


def hook_count(model: nn.Module) -> int:
    n = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return n + sum(len(getattr(p, "_post_accumulate_grad_hooks", None) or {}) for p in model.parameters())


def read(root):
    store = deepscope.open(root)
    (run_id,) = store.run_ids()
    reader = store.run(run_id)
    reader.refresh()
    return store.info(run_id), reader


def steps_of(reader, key: str) -> list[int]:
    return reader.series(key).step.tolist()


# ---- packaging: nothing is imported eagerly, a missing framework names its extra ---------------------
def test_importing_deepscope_imports_no_framework():
    code = (
        "import sys, deepscope, deepscope.capture.integrations\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'transformers', 'accelerate'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("adapter", "framework", "extra"),
    [("lightning", "lightning", "deepscope[lightning]"), ("huggingface", "transformers", "deepscope[huggingface]")],
)
def test_missing_framework_names_the_pip_extra(monkeypatch, adapter, framework, extra):
    module = f"deepscope.capture.integrations.{adapter}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in [m for m in sys.modules if m == framework or m.startswith(framework + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # what `import` sees when the package is absent
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        importlib.import_module(module)


# ---- Lightning ------------------------------------------------------------------------------------


class TinyModule(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 8, fail_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        if batch_idx == self.hparams.fail_at:
            raise ValueError("boom in training_step")
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loaders(n: int = 48) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))
    return DataLoader(data, batch_size=8), DataLoader(data, batch_size=8)


def fit(callback: LightningCallback, module: TinyModule, max_steps: int = 6) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[callback],
    )
    trainer.fit(module, *loaders())
    return trainer


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_fit_is_recorded(root):
    torch.manual_seed(0)
    module = TinyModule()
    callback = LightningCallback(dir=root, project="tiny", config={"note": "from the user"})
    trainer = fit(callback, module)
    assert hook_count(module) == 0 and not callback.run.finished  # open for what comes after the fit
    trainer.test(module, loaders()[1], verbose=False)  # a test after the fit: into the same run, at its last step
    callback.run.log({"final/score": 1.0})
    callback.run.finish()

    info, reader = read(root)
    assert info.status == "finished" and info.world_size == 1
    assert info.name == "TinyModule"  # the module's class, as the Hugging Face callback names its run
    assert info.config == {"lr": 0.05, "hidden": 8, "fail_at": None, "note": "from the user"}
    # one value per optimizer step, counted from 0 as run.watch counts: the losses training_step computed
    for key in ("train/loss", "train_loss"):
        series = reader.series(key)
        assert series.step.tolist() == [0, 1, 2, 3, 4, 5]
        np.testing.assert_allclose(series.value, module.losses, rtol=1e-6)
    assert steps_of(reader, "val_loss") == [2, 5]  # after the 3rd and the 6th step, where Lightning logs it
    assert steps_of(reader, "test_loss") == [5] and steps_of(reader, "final/score") == [6]
    acts = reader.layer_matrix("act", "mean")
    assert acts.names == ["net.0", "net.1", "net.2"]
    assert acts.step.tolist() == [0, 1, 2, 3, 4, 5] and np.isfinite(acts.values).all()
    assert np.isfinite(reader.layer_matrix("weight", "update_ratio").values).all()  # the optimizer was watched
    assert [(e.kind, e.step) for e in reader.events()] == [("train_start", 0), ("train_end", 5)]
    assert hook_count(module) == 0 and callback.run.finished and callback.run.id == info.id  # which run it wrote


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_an_exception_after_a_fit_that_ended_well_is_no_crash_of_its_run(root):
    """A test() that raises after a good fit leaves the run open; the exception ending the process finishes it —
    "finished", naming the exception, with an error event — not "crashed"."""

    class FailingTest(TinyModule):
        def test_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            raise RuntimeError("bug in test_step")

    callback = LightningCallback(dir=root)
    trainer = fit(callback, FailingTest(), max_steps=3)
    with pytest.raises(RuntimeError, match="bug in test_step") as caught:
        trainer.test(trainer.lightning_module, loaders()[1], verbose=False)
    assert not callback.run.finished
    callback.run._finish_after(caught.type, caught.value)  # what the exit handling does with it
    info, reader = read(root)
    assert info.status == "finished" and info.exit_reason == "after the training ended: RuntimeError: bug in test_step"
    assert [(e.kind, e.severity) for e in reader.events() if e.kind == "exception_after_training"] == [
        ("exception_after_training", "error")
    ]


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_accumulated_batches_log_one_loss_per_step(root):
    """Lightning divides the loss it hands back by the batches accumulated: the step's loss is the mean of its
    micro-batches' losses, as training_step computed them, logged once at the step."""
    torch.manual_seed(0)
    module = TinyModule()
    trainer = pl.Trainer(
        max_steps=3, accumulate_grad_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[callback := LightningCallback(dir=root)],
    )  # fmt: skip
    trainer.fit(module, *loaders())
    callback.run.finish()
    _, reader = read(root)
    loss = reader.series("train/loss")
    assert loss.step.tolist() == [0, 1, 2]
    np.testing.assert_allclose(loss.value, np.reshape(module.losses, (3, 2)).mean(1), rtol=1e-6)
    assert steps_of(reader, "train_loss") == [0, 1, 2]
    assert reader.layer_steps().tolist() == [0, 1, 2]


class TwoOptimizers(pl.LightningModule):
    """A GAN's shape: manual optimization, a generator and a discriminator step at every batch."""

    def __init__(self, gen_every: int = 1) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gen_every = gen_every  # the generator's steps: every batch, or every n-th (a critic that steps more)
        self.gen, self.disc = nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.disc(self.gen(x))

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        g_opt, d_opt = self.optimizers()
        x, _ = batch
        g_loss = -self(x).mean()
        if batch_idx % self.gen_every == 0:
            g_opt.zero_grad()
            self.manual_backward(g_loss)
            g_opt.step()
        d_loss = self.disc(self.gen(x).detach()).square().mean()
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss})

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.gen.parameters(), lr=0.01), torch.optim.SGD(self.disc.parameters(), lr=0.01)


class Scheduled(TinyModule):
    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 2, 0.1),
                                                   "interval": "step"}}  # fmt: skip


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_logs_the_learning_rate_each_step_trained_with(root):
    """A StepLR stepped every 2 batches, without a logger (LearningRateMonitor refuses to run without one): the
    rate of each step, as the optimizer had it for that step's batch."""
    torch.manual_seed(0)
    callback = LightningCallback(dir=root)
    fit(callback, Scheduled())
    callback.run.finish()
    _, reader = read(root)
    lr = reader.series("train/lr")
    assert lr.step.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(lr.value, [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005])


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_gradient_clipping_records_the_norm_before_clipping(root):
    """``gradient_clip_val``: Lightning clips through torch.nn.utils.clip_grad_norm_, whose result — the global norm
    before clipping — and limit are recorded at each step."""
    torch.manual_seed(0)
    callback = LightningCallback(dir=root)
    trainer = pl.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1e-3, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(TinyModule(), *loaders())
    callback.run.finish()
    _, reader = read(root)
    assert steps_of(reader, "watch/grad_norm") == [0, 1, 2, 3]
    assert (reader.series("watch/grad_norm").value > 1e-3).all()  # clipped at every step
    assert reader.series("watch/grad_clip").value.tolist() == [1e-3] * 4
    np.testing.assert_allclose(reader.total_norm("param_grad").last, 1e-3, rtol=1e-4)  # what the optimizer got


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_two_optimizers_count_one_step_per_batch_as_watch_does(root):
    """global_step counts both optimizers' steps (0, 2, 4 …); the metrics go at the batches that stepped, as
    Lightning's loggers put them and as watch counts the first optimizer's steps: a loss and its layer statistics
    share a step."""
    torch.manual_seed(0)
    callback = LightningCallback(dir=root)
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=4, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(TwoOptimizers(), loaders()[0])
    assert trainer.global_step == 8
    callback.run.finish()
    _, reader = read(root)
    assert steps_of(reader, "g_loss") == [0, 1, 2, 3] == steps_of(reader, "d_loss")
    lrs = sorted(k.key for k in reader.keys() if k.key.startswith("train/lr"))
    assert lrs == ["train/lr/SGD-0/pg0", "train/lr/SGD-1/pg0"]  # each optimizer's rate, named apart
    assert reader.layer_steps().tolist() == [0, 1, 2, 3]
    assert [(e.kind, e.step) for e in reader.events()] == [("train_start", 0), ("train_end", 3)]


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_a_first_optimizer_that_skips_batches_is_warned_about_once(root):
    """A critic stepping at every batch and the generator (optimizers[0]) at every 2nd: the statistics count the
    generator's steps, the metrics batches — said once, naming the way out."""
    callback = LightningCallback(dir=root)
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=4, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[callback],
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match=r"optimizers\[0\] did not step .* return the one that steps") as caught:
        trainer.fit(TwoOptimizers(gen_every=2), loaders()[0])
    assert len([w for w in caught if "did not step" in str(w.message)]) == 1
    callback.run.finish()


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_fit_resumed_from_a_checkpoint_continues_its_steps(root, tmp_path):
    torch.manual_seed(0)
    module = TinyModule()
    kwargs = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                  default_root_dir=str(tmp_path))  # fmt: skip
    first = pl.Trainer(max_steps=6, callbacks=[LightningCallback(dir=root, id="pl")], **kwargs)
    first.fit(module, *loaders())  # one epoch: 48 rows, batches of 8
    ckpt = str(tmp_path / "epoch1.ckpt")
    first.save_checkpoint(ckpt)
    again = pl.Trainer(max_steps=9, callbacks=[LightningCallback(dir=root, id="pl", resume=True)], **kwargs)
    again.fit(TinyModule(), *loaders(), ckpt_path=ckpt)  # the first fit's run, left open, is finished first
    again.callbacks[0].run.finish()
    _, reader = read(root)
    assert reader.layer_steps().tolist() == list(range(9))  # 6–8 after 0–5, not over them
    assert reader.series("train/loss").step.tolist() == list(range(9))
    assert [(e.kind, e.step) for e in reader.events() if e.kind == "train_start"] == [
        ("train_start", 0),
        ("train_start", 6),
    ]


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_lightning_fit_resumed_mid_epoch_starts_at_the_checkpoints_next_step(root, tmp_path):
    """A checkpoint saved after step 4 of a 6-batch epoch: the resumed fit's first step is step 4, as Lightning's
    loggers count (its epoch loop adds the step the checkpoint left out only as it starts, after on_train_start)."""
    torch.manual_seed(0)
    kwargs = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(tmp_path))  # fmt: skip
    every4 = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_top_k=-1)
    first = pl.Trainer(max_steps=4, callbacks=[LightningCallback(dir=root, id="mid"), every4], **kwargs)
    first.fit(TinyModule(), *loaders())  # 48 rows in batches of 8: stopped in the epoch's 4th batch
    (ckpt,) = (tmp_path / "ck").glob("*.ckpt")
    ckpt = ckpt.rename(tmp_path / "step4.ckpt")  # the callback given again (Lightning asks for it) saves beside it
    again = pl.Trainer(max_steps=7, callbacks=[LightningCallback(dir=root, id="mid", resume=True), every4], **kwargs)
    again.fit(TinyModule(), *loaders(), ckpt_path=str(ckpt))
    again.callbacks[0].run.finish()
    _, reader = read(root)
    assert reader.series("train/loss").step.tolist() == list(range(7))
    assert reader.layer_steps().tolist() == list(range(7))
    assert not [e for e in reader.events() if e.kind == "step_regression"]
    assert [e.step for e in reader.events() if e.kind == "train_start"] == [0, 4]


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_one_ended_trainings_run_stays_open_at_a_time(root):
    """A sweep, a callback per trial: each trial's run is finished when the next one starts (no writer thread per
    past trial); a metric for a finished one is warned about, once; resuming a run kept open takes it over."""
    import threading

    callbacks = [LightningCallback(dir=root, name=f"trial-{i}") for i in range(3)]
    for callback in callbacks:
        fit(callback, TinyModule(), max_steps=2)
    assert [c.run.finished for c in callbacks] == [True, True, False]
    assert len([t for t in threading.enumerate() if t.name.startswith("deepscope-writer")]) == 1
    with pytest.warns(RuntimeWarning, match="was finished after its training .* pass run="):
        callbacks[0]._binding.log({"test/acc": 1.0}, step=2)
    last = callbacks[2].run
    resumed = deepscope.init(dir=root, id=last.id, resume=True)  # the finished-run message's own advice
    assert last.finished
    resumed.log({"test/acc": 0.5})
    resumed.finish()
    store = deepscope.open(root)
    assert sorted(store.info(r).status for r in store.run_ids()) == ["finished"] * 3
    reader = store.run(last.id)
    reader.refresh()
    assert steps_of(reader, "test/acc") == [2]


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_a_crash_in_a_second_training_of_the_same_run_is_a_crash(root):
    """Two stages in one run (the second callback given the first one's run): the first stage ended well, the
    second one crashes — the run is crashed, not "finished after the training ended"."""
    first = LightningCallback(dir=root)
    fit(first, TinyModule(), max_steps=2)
    with pytest.raises(ValueError, match="boom"), pytest.warns(RuntimeWarning, match="went backwards"):
        fit(LightningCallback(run=first.run), TinyModule(fail_at=1), max_steps=4)  # its steps count from 0 again
    assert not first.run.finished  # given to the second: the user's to finish
    first.run._finish_after(ValueError, ValueError("boom in training_step"))  # what the exit handling does
    info, _ = read(root)
    assert info.status == "crashed"


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_mixed_precision_passes_its_grad_scaler(root):
    """ "16-mixed": Lightning steps through its GradScaler. The callback hands it to watch, so the step the scaler
    skips (its first: the scale overflows float16) stays a step of its own, and output gradients are unscaled."""
    from lightning.pytorch.plugins import MixedPrecision

    torch.manual_seed(0)
    module = TinyModule()
    # float16 gradients overflow at 2^40: the first step is skipped, and the scale falls to 2^10 at once
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-30)
    callback = LightningCallback(dir=root, project="amp")
    trainer = pl.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[callback],
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
    )  # fmt: skip
    trainer.fit(module, *loaders())
    callback.run.finish()
    _, reader = read(root)
    steps = reader.layer_steps().tolist()
    assert steps == list(range(len(module.losses)))  # one watch step per training iteration, skipped ones too
    assert [e.step for e in reader.events() if e.kind == "diagnosis/skipped_step"] == [0]
    rms = reader.layer_series("net.2", "grad", "rms").last
    assert np.isfinite(rms[1:]).all() and (rms[1:] < 10).all()  # unscaled: not 2^10 times the gradient
    assert hook_count(module) == 0 and "step" not in vars(scaler)  # the scaler is put back as it was


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_exception_marks_the_run_crashed_and_removes_hooks(root):
    module = TinyModule(fail_at=3)
    with pytest.raises(ValueError, match="boom in training_step"):
        fit(LightningCallback(dir=root), module)

    info, reader = read(root)
    assert info.status == "crashed" and info.exit_reason == "ValueError: boom in training_step"
    assert steps_of(reader, "train/loss") == [0, 1, 2]
    assert ("train_exception", "error") in [(e.kind, e.severity) for e in reader.events()]
    assert hook_count(module) == 0


@pytest.mark.filterwarnings(LIGHTNING_PYTREE)
def test_lightning_records_into_a_given_run_and_leaves_it_open(root):
    module = TinyModule()
    with deepscope.init(dir=root, project="given") as run:
        fit(LightningCallback(run, watch={"layers": "net.0", "every": 2}, log_loss=False), module)
        assert not run.finished and hook_count(module) == 0
        run.log({"test/score": 1.0}, step=6)  # the user's run goes on after fit

    info, reader = read(root)
    assert info.status == "finished" and info.project == "given"
    acts = reader.layer_matrix("act", "mean")
    assert acts.names == ["net.0"] and acts.step.tolist() == [0, 2, 4]
    assert "train/loss" not in [k.key for k in reader.keys()]
    assert steps_of(reader, "test/score") == [6]


def test_lightning_callback_rejects_bad_arguments(root):
    with pytest.raises(TypeError, match="unknown run.watch keywords"):
        LightningCallback(watch={"layer": "net.*"})
    with pytest.raises(TypeError, match="rank comes from the Lightning trainer"):
        LightningCallback(rank=1)
    with pytest.raises(TypeError, match="unknown deepscope.init keywords"):
        LightningCallback(projct="typo")
    with deepscope.init(dir=root) as run, pytest.raises(TypeError, match="not both"):
        LightningCallback(run, project="x")


# ---- Hugging Face ---------------------------------------------------------------------------------


class TokenData(Dataset):
    """Random token sequences with binary labels, in memory."""

    def __init__(self, n: int, seq: int = 8, vocab: int = 64) -> None:
        g = torch.Generator().manual_seed(n)
        self.ids = torch.randint(0, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def tiny_bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def test_huggingface_trainer_is_recorded(root, tmp_path):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=5,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        run_name="tiny-bert-lr5e-5",
    )
    model = tiny_bert()
    callback = HFCallback(dir=root, project="bert", watch={"histograms_every": 0})
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=TokenData(40), eval_dataset=TokenData(16), callbacks=[callback]
    )
    trainer.train()
    assert hook_count(model) == 0 and not callback.run.finished  # open for what comes after the training
    after = trainer.evaluate()  # an evaluation after training: into the same run, at its last step
    predicted = trainer.predict(TokenData(16))  # its metrics come through on_predict, not on_log
    callback.run.finish()

    info, reader = read(root)
    assert info.status == "finished" and info.name == "tiny-bert-lr5e-5"  # TrainingArguments.run_name
    assert info.config["model"]["hidden_size"] == 32 and info.config["training"]["max_steps"] == 5
    # the Trainer's own log history is the oracle; its step N (counted after the step) is our step N - 1
    history = trainer.state.log_history
    assert reader.series("eval/loss").step.tolist()[-1] == 4
    assert reader.series("eval/loss").value[-1] == pytest.approx(after["eval_loss"])
    assert steps_of(reader, "test/loss") == [4]
    assert reader.series("test/loss").value[0] == pytest.approx(predicted.metrics["test_loss"])
    for ours, theirs in (("train/loss", "loss"), ("train/learning_rate", "learning_rate"), ("eval/loss", "eval_loss")):
        series = reader.series(ours)
        assert series.step.tolist() == [h["step"] - 1 for h in history if theirs in h]
        assert series.value.tolist() == pytest.approx([h[theirs] for h in history if theirs in h])
    assert steps_of(reader, "train/loss") == [0, 1, 2, 3, 4]
    assert steps_of(reader, "train/train_runtime") == [4]  # the end-of-training summary, at the last step
    acts = reader.layer_matrix("act", "mean")
    assert "bert.encoder.layer.1.attention.self.query" in acts.names and "classifier" in acts.names
    assert acts.step.tolist() == [0, 1, 2, 3, 4]
    # the optimizer inside Accelerate's wrapper was watched: updates are measured
    assert np.isfinite(reader.layer_matrix("weight", "update_ratio").values).any()
    assert [e.kind for e in reader.events() if e.kind.startswith("train_")] == ["train_start", "train_end"]


def test_huggingface_training_resumed_from_a_checkpoint_continues_its_steps(root, tmp_path):
    def args(steps: int) -> transformers.TrainingArguments:
        return transformers.TrainingArguments(
            output_dir=str(tmp_path / "out"), max_steps=steps, logging_steps=1, per_device_train_batch_size=8,
            report_to=[], use_cpu=True, save_strategy="steps", save_steps=3, disable_tqdm=True,
        )  # fmt: skip

    torch.manual_seed(0)
    watch = {"histograms_every": 0}
    first = transformers.Trainer(model=tiny_bert(), args=args(3), train_dataset=TokenData(40),
                                 callbacks=[HFCallback(dir=root, id="hf", watch=watch)])  # fmt: skip
    first.train()
    again = transformers.Trainer(model=tiny_bert(), args=args(5), train_dataset=TokenData(40),
                                 callbacks=[HFCallback(dir=root, id="hf", resume=True, watch=watch)])  # fmt: skip
    again.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-3"))  # the first run is finished first
    next(c for c in again.callback_handler.callbacks if isinstance(c, HFCallback)).run.finish()
    _, reader = read(root)
    assert reader.layer_steps().tolist() == [0, 1, 2, 3, 4]  # 3–4 after 0–2
    assert steps_of(reader, "train/loss") == [0, 1, 2, 3, 4]


def test_huggingface_on_log_keeps_numbers_only(root, tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    state, control = transformers.TrainerState(max_steps=10), transformers.TrainerControl()
    callback = HFCallback(dir=root, watch=False)
    callback.on_train_begin(args, state, control, model=None)
    state.global_step = 3
    logs = {"loss": 0.5, "eval_accuracy": np.float32(0.75), "grad_norm": torch.tensor(2.0), "note": "text", "x": [1]}
    callback.on_log(args, state, control, logs=logs)
    callback.on_train_end(args, state, control)
    callback.run.finish()

    info, reader = read(root)
    assert info.status == "finished" and "model" not in info.config
    assert {k.key for k in reader.keys()} == {"train/loss", "eval/accuracy", "train/grad_norm"}
    assert steps_of(reader, "eval/accuracy") == [2]
    assert reader.series("train/grad_norm").value.tolist() == [2.0]


def test_huggingface_unfinished_run_is_marked_crashed_by_the_next_train(root, tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    state, control = transformers.TrainerState(max_steps=10), transformers.TrainerControl()
    callback = HFCallback(dir=root, watch=False)
    callback.on_train_begin(args, state, control, model=None)
    first = callback.run
    callback.on_train_begin(args, state, control, model=None)  # the first train() raised: no on_train_end
    assert deepscope.open(root).info(first.id).status == "crashed"
    callback.on_train_end(args, state, control)
    second = callback.run
    callback.on_train_begin(args, state, control, model=None)  # after a training that ended: finished
    assert deepscope.open(root).info(second.id).status == "finished" and not callback.run.finished
    callback.run.finish()


def test_huggingface_fp16_grad_scaler_is_handed_to_watch(root, tmp_path):
    """Under fp16 (an accelerator) Accelerate's optimizer wrapper steps through a GradScaler. On this CPU the
    Trainer's Accelerator gets one by hand — the same objects and calls as fp16 on a GPU: the loss is scaled, the
    wrapper calls ``scaler.step(optimizer)``. The step the scaler skips (its first: the loss overflows) stays a step
    of its own, and output gradients are recorded unscaled."""

    class FirstLossOverflows(transformers.Trainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            return loss * 1e35 if self.state.global_step == 0 else loss

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, logging_steps=1, per_device_train_batch_size=8,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, max_grad_norm=0,
    )  # fmt: skip
    model = tiny_bert()
    callback = HFCallback(dir=root, project="fp16", watch={"histograms_every": 0})
    trainer = FirstLossOverflows(model=model, args=args, train_dataset=TokenData(40), callbacks=[callback])
    scaler = trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    trainer.train()
    callback.run.finish()

    _, reader = read(root)
    assert scaler.get_scale() < 2.0**20  # the scaler did skip a step
    assert reader.layer_steps().tolist() == [0, 1, 2, 3]  # four iterations, four steps: the skipped one too
    assert [e.step for e in reader.events() if e.kind == "diagnosis/skipped_step"] == [0]
    rms = reader.layer_series("classifier", "grad", "rms").last
    assert np.isfinite(rms[1:]).all() and (rms[1:] < 1).all()  # unscaled: not 2^19 times the gradient
    assert hook_count(model) == 0 and "step" not in vars(scaler)
