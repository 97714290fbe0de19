"""Each diagnosis rule on synthetic statistics, and two end to end through a real run."""

from __future__ import annotations

import numpy as np
import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope.capture.diagnose import Diagnoser, Thresholds

LAYERS = [
    {"path": "fc1", "type": "Linear", "role": None},
    {"path": "act1", "type": "ReLU", "role": "relu"},
    {"path": "fc2", "type": "Linear", "role": None},
    {"path": "act2", "type": "Sigmoid", "role": "sigmoid"},
]
PARAMS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight"]


def stats(**over) -> dict:
    nan = np.full(len(LAYERS), np.nan)
    base = {
        "act": {"mean": np.full(4, 0.5), "sat_frac": np.zeros(4), "dead_frac": nan, "nonfinite_frac": np.zeros(4)},
        "grad": {"nonfinite_frac": np.zeros(4)},
        "param_grad": {"norm": np.ones(5), "nonfinite_frac": np.zeros(5)},
        "weight": {"update_ratio": np.full(5, 1e-3)},
    }
    for path, value in over.items():
        kind, stat = path.split("__")
        base[kind][stat] = value
    return base


def run_rule(steps: int, **over) -> list:
    found = []
    d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds(patience=3))
    for step in range(steps):
        d.observe(step, stats(**over))
    return found


def test_healthy_statistics_give_no_finding():
    assert run_rule(20) == []


def test_saturation_needs_patience_and_is_reported_once():
    sat = np.array([0, 0, 0, 0.9])
    assert run_rule(2, act__sat_frac=sat) == []
    (f,) = run_rule(20, act__sat_frac=sat)
    assert (f.rule, f.layer, f.step) == ("saturation", "act2", 2)


def test_dead_units():
    (f,) = run_rule(5, act__dead_frac=np.array([np.nan, 0.8, np.nan, np.nan]))
    assert (f.rule, f.layer) == ("dead_units", "act1")
    assert f.text.startswith("layer act1 (ReLU): 80% of its units never fired in the last 100 steps: a learning rate")


def test_vanishing_and_exploding_gradients_across_depth():
    (v,) = run_rule(5, param_grad__norm=np.array([1e-5, 1, 1e-3, 1, 1.0]))
    assert v.rule == "vanishing_gradients"
    (e,) = run_rule(5, param_grad__norm=np.array([1e4, 1, 10, 1, 1.0]))
    assert e.rule == "exploding_gradients"


def test_a_sudden_divergence_is_an_error_at_once():
    """Healthy for 20 steps, then the gradient norm 700× and updates larger than the weights: both errors at that
    step, not ten steps later (by then a diverging training is NaN)."""
    found = []
    d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds(patience=10))
    for step in range(20):
        d.observe(step, stats(param_grad__norm=np.full(5, 2.0 + 0.1 * (step % 3))))
    d.observe(20, stats(param_grad__norm=np.full(5, 1.5e3), weight__update_ratio=np.full(5, 300.0)))
    d.observe(21, stats(param_grad__norm=np.full(5, np.nan), weight__update_ratio=np.full(5, np.nan)))
    assert sorted((f.rule, f.step, f.severity) for f in found) == [
        ("exploding_gradients", 20, "error"),
        ("update_ratio_high", 20, "error"),
    ]
    jump = next(f.text for f in found if f.rule == "exploding_gradients")
    assert "jumped to 2.60e+03" in jump  # √3 × 1.5e3: the three weight matrices
    # an overflow with no jump before it is reported too
    found.clear()
    d = Diagnoser(LAYERS, PARAMS, found.append)
    for step in range(12):
        d.observe(step, stats())
    d.observe(12, stats(param_grad__norm=np.array([np.inf, 1, 1, 1, 1.0])))
    assert [(f.rule, f.step) for f in found] == [("exploding_gradients", 12)] and "overflowed" in found[0].text
    # a weight without a gradient at a step (an unused head: its norm is NaN, its sample empty) is no overflow
    found.clear()
    d = Diagnoser(LAYERS, PARAMS, found.append)
    for step in range(30):
        d.observe(step, stats(param_grad__norm=np.array([1, 1, 1, 1, np.nan if step % 2 else 1.0])))
    assert found == []

    # a noisy but healthy norm is no finding
    found.clear()
    d = Diagnoser(LAYERS, PARAMS, found.append)
    for step in range(200):
        d.observe(step, stats(param_grad__norm=np.full(5, 1.0 + 9.0 * (step % 7 == 0))))
    assert found == []


def test_update_ratio_far_from_1e_3():
    (hi,) = run_rule(5, weight__update_ratio=np.full(5, 0.5))
    assert hi.rule == "update_ratio_high"
    (lo,) = run_rule(5, weight__update_ratio=np.full(5, 1e-7))
    assert lo.rule == "update_ratio_low"
    late = Diagnoser(LAYERS, PARAMS, (found := []).append, Thresholds(patience=3, early_steps=10))
    for step in range(100, 110):  # an annealed schedule late in training is not a finding
        late.observe(step, stats(weight__update_ratio=np.full(5, 1e-7)))
    assert found == []


def test_small_updates_after_a_divergence_or_while_gradients_vanish_are_not_blamed_on_the_learning_rate():
    """After "learning rate far too high" (updates larger than the weights), the dead units and tiny updates that
    follow are no "too low?"; small updates while gradients vanish toward the input are the vanishing's."""
    found = []
    d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds(patience=3))
    d.observe(0, stats(weight__update_ratio=np.full(5, 300.0)))
    for step in range(1, 20):
        d.observe(step, stats(weight__update_ratio=np.full(5, 1e-7)))
    assert [f.rule for f in found] == ["update_ratio_high"]
    vanishing = run_rule(10, param_grad__norm=np.array([1e-5, 1, 1e-3, 1, 1.0]), weight__update_ratio=np.full(5, 1e-7))
    assert [f.rule for f in vanishing] == ["vanishing_gradients"]


def test_updates_found_too_large_then_dying_out_with_zero_gradients_are_no_too_low_finding():
    """lr too high (ratio 0.3, sustained), the network dies (every weight gradient 0), momentum's updates decay:
    "too low?" after "too high?" would contradict it; zero gradients alone (momentum decaying) are not it either."""
    found = []
    d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds(patience=3))
    for step in range(5):
        d.observe(step, stats(weight__update_ratio=np.full(5, 0.3)))
    for step in range(5, 30):
        d.observe(step, stats(weight__update_ratio=np.full(5, 1e-7), param_grad__norm=np.zeros(5)))
    assert [f.rule for f in found] == ["update_ratio_high", "zero_gradients"]
    zero_only = run_rule(10, param_grad__norm=np.zeros(5), weight__update_ratio=np.full(5, 1e-7))
    assert [f.rule for f in zero_only] == ["zero_gradients"]


def test_a_warming_up_or_decayed_learning_rate_is_no_low_update_finding():
    low = np.full(5, 1e-7)
    for lrs, expected in (
        ([0.1] * 8, ["update_ratio_low"]),  # a steady learning rate: too low indeed
        ([0.01 * (k + 1) for k in range(8)], []),  # warm-up: rising
        ([0.1, 0.1] + [0.1 * 0.3**k for k in range(1, 7)], []),  # decayed below half its peak
    ):
        d = Diagnoser(LAYERS, PARAMS, (found := []).append, Thresholds(patience=3))
        for step, lr in enumerate(lrs):
            d.observe(step, stats(weight__update_ratio=low), lr=lr)
        assert [f.rule for f in found] == expected, lrs


def test_findings_a_rate_far_too_high_leads_to_name_a_learning_rate_that_grew_far():
    """A learning rate growing 4 % a step (a schedule gone wrong) kills ReLU units: the dead-unit finding names its
    growth. One that stayed, grew little, or warmed up linearly from near 0 over 1,000 steps is not mentioned."""
    dead = np.array([np.nan, 0.8, np.nan, np.nan])
    schedules = {
        "exploding": (lambda s: 0.01 * 1.04**s, True),
        "constant": (lambda s: 0.01, False),
        "slow": (lambda s: 0.01 * 1.005**s, False),
        "warm-up": (lambda s: 1e-3 * (s + 1) / 1000, False),
    }
    for name, (lr_at, noted) in schedules.items():
        d = Diagnoser(LAYERS, PARAMS, (found := []).append, Thresholds(patience=3))
        for step in range(400):
            d.observe(step, stats(act__dead_frac=dead if step == 399 else np.full(4, np.nan)), lr=lr_at(step))
        (f,) = found
        assert f.rule == "dead_units"
        assert ("The learning rate grew 49× over the last 99 steps (1.29e+03 → 6.26e+04)" in f.text) == (
            name == "exploding"
        ), (name, f.text)
        assert ("learning rate grew" in f.text) == noted, (name, f.text)


def test_a_range_test_growing_the_rate_is_named_before_a_whole_window_a_linear_warm_up_is_not():
    """A learning-rate range test (×1.2 a step) diverges by step 60: its finding names the growth; a linear warm-up
    from near 0 has grown as much by then, but is not named."""
    dead = np.array([np.nan, 0.8, np.nan, np.nan])
    for lr_at, noted in ((lambda s: 1e-7 * 1.2**s, True), (lambda s: 1e-3 * (s + 1) / 1000, False)):
        d = Diagnoser(LAYERS, PARAMS, (found := []).append, Thresholds(patience=3))
        for step in range(61):
            d.observe(step, stats(act__dead_frac=dead if step == 60 else np.full(4, np.nan)), lr=lr_at(step))
        (f,) = found
        assert ("learning rate grew" in f.text) == noted, f.text
        if noted:
            assert "grew 56,348× over the last 60 steps" in f.text, f.text


def test_all_zero_weight_gradients():
    (f,) = run_rule(5, param_grad__norm=np.array([0.0, 0.1, 0.0, 0.1, 0.0]))  # biases may still move
    assert f.rule == "zero_gradients" and "exactly 0" in f.text
    found = run_rule(5, param_grad__norm=np.array([0.0, 0.1, 1e-9, 0.1, 0.0]))  # not all: the layers that stopped
    assert [(f.rule, f.layer, f.step) for f in found] == [("zero_gradient", "fc1.weight", 2),
                                                          ("zero_gradient", "fc3.weight", 2)]  # fmt: skip
    assert "fc1.weight is exactly 0: its layer no longer learns" in found[0].text


def test_nonfinite_names_where_it_began_and_a_finite_forward_pass_blames_the_loss():
    """Activations run forward: the first layer in model order; gradients run backward: the layer nearest the output.
    NaN gradients of a finite forward pass come from the loss — no learning-rate or gradient-growth finding."""
    (f,) = run_rule(3, act__nonfinite_frac=np.array([0, 0, 0.5, 1.0]))
    assert f.rule == "nonfinite" and f.severity == "error" and f.layer == "fc2" and "forward pass" in f.text
    (f,) = run_rule(3, grad__nonfinite_frac=np.array([0.5, 1.0, 1.0, 0]))
    assert f.layer == "fc2" and "from layer fc2 backward" in f.text and "the loss" in f.text
    found = run_rule(12, param_grad__nonfinite_frac=np.array([0, 0, 1.0, 1.0, 1.0]),
                     param_grad__norm=np.array([np.nan] * 5))  # fmt: skip
    assert [f.rule for f in found] == ["nonfinite"] and "from parameter fc3.weight backward" in found[0].text


def test_a_nonfinite_loss_is_a_finding_of_its_own():
    d = Diagnoser(LAYERS, PARAMS, (found := []).append)
    steps = np.arange(6)
    d.observe_scalars(steps, ["train/loss"], np.zeros(6, np.int64), np.array([1.0, 0.9, 0.8, np.nan, np.nan, 0.7]))
    (f,) = found
    assert (f.rule, f.step, f.layer, f.severity) == ("loss_nonfinite", 3, "train/loss", "error")
    assert f.text.startswith("train/loss is nan from step 3")


def test_loss_spike_through_a_real_run(root):
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with deepscope.init(dir=root) as run:
        run.watch(model, print_findings=False)
        for step in range(300):
            loss = 1.0 + 0.01 * rng.normal() + (50.0 if step == 200 else 0.0)
            run.log({"train/loss": loss}, step=step)
    spikes = [e for e in reopen(root, run.id).events() if e.kind == "diagnosis/loss_spike"]
    assert [(e.step, e.key) for e in spikes] == [(200, "train/loss")]


def test_nan_in_activations_through_a_real_run(root, capsys):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with deepscope.init(dir=root, name="nan") as run:
        run.watch(model, opt)
        for step in range(3):
            x = torch.randn(8, 4)
            if step == 2:
                x[0, 0] = float("nan")
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    evs = [e for e in reopen(root, run.id).events() if e.kind == "diagnosis/nonfinite"]
    assert len(evs) == 1 and evs[0].step == 2 and evs[0].severity == "error"
    assert "NaN/Inf" in capsys.readouterr().err  # printed once to the training console


def test_a_tiny_late_blip_is_not_a_loss_spike():
    found = []
    d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds())
    rng = np.random.default_rng(1)
    early = 2.3 * np.exp(-np.arange(300) / 30) + 0.002 + 0.0002 * rng.random(300)
    values = np.append(early, [0.02])  # late in training: 10× the median, but 1% of the loss's scale
    d.observe_scalars(np.arange(301), ["train/loss"], np.zeros(301, np.int32), values)
    assert found == []
    d.observe_scalars(np.array([900]), ["train/loss"], np.zeros(1, np.int32), np.array([1.5]))
    assert [f.rule for f in found] == ["loss_spike"]


def test_diverged_gradients_are_nan_not_zero(root):
    """A gradient with NaN/Inf has no norm (the moments skip non-finite values: it read as 0 and drew a "zero
    gradients" finding); the overflowing squares of a diverged weight warn nothing in the training console."""
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=50.0)
    with deepscope.init(dir=root) as run, warnings.catch_warnings():
        warnings.simplefilter("error")
        run.watch(model, opt, print_findings=False)
        for _ in range(25):
            loss = nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 2, (16,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    r = reopen(root, run.id)
    norms = r.layer_series("0.weight", "param_grad", "norm").last
    nonfinite = r.layer_series("0.weight", "param_grad", "nonfinite_frac").last
    assert (nonfinite > 0).any() and np.isnan(norms[nonfinite > 0]).all()
    kinds = {e.kind for e in r.events()}
    assert "diagnosis/nonfinite" in kinds and "diagnosis/zero_gradients" not in kinds


def test_zero_updates_are_no_learning_rate_finding():
    assert [f.rule for f in run_rule(6, weight__update_ratio=np.zeros(5), param_grad__norm=np.zeros(5))] == [
        "zero_gradients"
    ]


def test_an_early_spike_is_reported_at_its_own_step_and_value():
    """A spike at step 49 (of a run judged from step 50 on, before) was missed, and the step after it — still high,
    on its tail — was reported in its place. Judged from 20 values on, at its peak."""
    rng = np.random.default_rng(0)
    for peak_step in (25, 49):
        found = []
        d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds())
        loss = 0.7 + 0.02 * rng.standard_normal(80)
        loss[peak_step], loss[peak_step + 1] = 2.969, 1.716  # the peak, then its tail
        d.observe_scalars(np.arange(80), ["train/loss"], np.zeros(80, np.int32), loss)
        assert [(f.rule, f.step) for f in found] == [("loss_spike", peak_step)]
        assert "spiked to 2.969" in found[0].text


def test_norm_gains_and_embeddings_are_no_step_of_depth():
    """A transformer's LayerNorm gains and embedding rows have gradients orders of magnitude off its matrices': they
    are left out of the depth axis, or a healthy network read as one whose gradients vanish."""
    from deepscope.capture.diagnose import depth_axis

    layers = [
        {"path": "wte", "type": "Embedding", "role": None, "params": ["wte.weight"]},
        {"path": "h.0.ln_1", "type": "LayerNorm", "role": None, "params": ["h.0.ln_1.weight", "h.0.ln_1.bias"]},
        {"path": "h.0.attn", "type": "Linear", "role": None, "params": ["h.0.attn.weight", "h.0.attn.bias"]},
        {"path": "h.0.mlp", "type": "Conv1D", "role": None, "params": ["h.0.mlp.weight"]},
        {"path": "head", "type": "Linear", "role": None, "params": ["head.weight"]},
    ]
    params = [p for la in layers for p in la["params"]]
    assert [params[i] for i in depth_axis(layers, params)] == ["h.0.attn.weight", "h.0.mlp.weight", "head.weight"]
    found = []
    d = Diagnoser(layers, params, found.append, Thresholds(patience=3))
    norms = np.array([1e-6, 1e-5, 0.1, 1.0, 1.0, 1.0, 1.0])  # embedding and gains tiny; the matrices healthy
    for step in range(10):
        d.observe(step, {"param_grad": {"norm": norms, "nonfinite_frac": np.zeros(7)}})
    assert found == []


def test_a_weight_tied_between_embedding_and_head_is_no_step_of_depth():
    """GPT-2's output head shares the token embedding's weight (recorded once, under the embedding's name, at its
    place in model order): its gradient is mostly the head's. At either end of the axis it would misplace a large
    gradient, so it is left out."""
    from deepscope.capture.diagnose import depth_axis

    layers = [
        {"path": "wte", "type": "Embedding", "role": None, "params": ["wte.weight"]},
        {"path": "h.0.attn", "type": "Linear", "role": None, "params": ["h.0.attn.weight"]},
        {"path": "h.1.attn", "type": "Linear", "role": None, "params": ["h.1.attn.weight"]},
        {"path": "lm_head", "type": "Linear", "role": None, "params": ["wte.weight"]},  # tied
    ]
    params = ["wte.weight", "h.0.attn.weight", "h.1.attn.weight"]
    assert [params[i] for i in depth_axis(layers, params)] == ["h.0.attn.weight", "h.1.attn.weight"]


def test_a_recurrent_layers_weights_are_steps_of_depth():
    """An LSTM's and a GRU's matrices are named weight_ih_l0, weight_hh_l0…: vanishing gradients through them are
    the classic recurrent problem, so they make the depth axis (the embedding stays off it)."""
    from deepscope.capture.diagnose import depth_axis

    lstm = ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1_reverse"]
    layers = [
        {"path": "emb", "type": "Embedding", "role": None, "params": ["emb.weight"]},
        {"path": "rnn", "type": "LSTM", "role": None, "params": lstm},
        {"path": "head", "type": "Linear", "role": None, "params": ["head.weight", "head.bias"]},
    ]
    params = [p for la in layers for p in la["params"]]
    depth = [params[i] for i in depth_axis(layers, params)]
    assert depth == [p for p in lstm if "weight" in p] + ["head.weight"]


def test_a_diverging_update_ratio_is_reported_once_not_again_as_high():
    found = run_rule(12, weight__update_ratio=np.full(5, 3.0))
    assert [(f.rule, f.severity) for f in found] == [("update_ratio_high", "error")]


def test_after_a_nan_loss_the_nan_weights_are_not_blamed_on_gradient_growth():
    """Step 3: a NaN loss (finite activations, NaN gradients); step 4 on, the weights it left NaN make every
    activation NaN — still the loss's doing: no "overflowed … learning rate too high" finding follows."""
    found = []
    d = Diagnoser(LAYERS, PARAMS, found.append, Thresholds(patience=3))
    for step in range(20):
        over = {}
        if step >= 10:
            over = {"grad__nonfinite_frac": np.ones(4), "param_grad__nonfinite_frac": np.ones(5),
                    "param_grad__norm": np.full(5, np.nan)}  # fmt: skip
        if step >= 11:
            over["act__nonfinite_frac"] = np.ones(4)
        d.observe(step, stats(**over))
    assert [f.rule for f in found] == ["nonfinite"] and "the loss" in found[0].text


def test_depth_compares_each_kind_of_layer_of_repeated_blocks_with_itself():
    """Two encoder blocks, their query and key projections' gradients 1e-2× the value and output projections' (as
    at a transformer's initialisation), a pooler's and a classifier's above them all. Thirds of the axis read that
    as vanishing gradients; each kind against itself, the blocks agree — and a real decay across blocks is found."""
    from deepscope.capture.diagnose import depth_ratio, like_layers

    kinds = {"attention.self.query": 1e-5, "attention.self.key": 1e-5, "attention.self.value": 1e-3,
             "attention.output.dense": 1e-3, "intermediate.dense": 1e-2, "output.dense": 1e-2}  # fmt: skip
    depth = [f"encoder.layer.{b}.{k}.weight" for b in range(2) for k in kinds] + [
        "pooler.dense.weight",
        "classifier.weight",
    ]
    like = like_layers(depth)
    assert len(like) == 6 and all(len(g) == 2 for g in like)  # the pooler and the classifier, one of a kind, left out
    healthy = np.array([v for _ in range(2) for v in kinds.values()] + [0.2, 0.2])
    assert depth_ratio(healthy, like) == 1.0
    assert depth_ratio(healthy, [list(range(len(depth)))]) < 1e-2  # what thirds of the axis read
    decaying = np.array([v * (1e-3 if b == 0 else 1.0) for b in range(2) for v in kinds.values()] + [0.2, 0.2])
    assert np.isclose(depth_ratio(decaying, like), 1e-3)
    assert like_layers(["fc1.weight", "fc2.weight", "fc3.weight"]) == [[0, 1, 2]]  # no repeated blocks: one group


def test_a_small_bert_gives_no_vanishing_gradients_finding(root):
    """A two-block BERT classifier trained for 20 steps: residual connections and LayerNorm keep its gradients
    level across depth; the finding its query/key projections once caused is not made."""
    transformers = __import__("pytest").importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=2)  # fmt: skip
    model = transformers.BertForSequenceClassification(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    for _ in range(20):
        ids = torch.randint(0, 100, (8, 16))
        loss = model(input_ids=ids, labels=ids[:, 0] % 2).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    run.finish()
    rules = [e.kind for e in reopen(root, run.id).events() if e.kind.startswith("diagnosis/")]
    assert "diagnosis/vanishing_gradients" not in rules and "diagnosis/exploding_gradients" not in rules


def plateau_diagnoser():
    found = []
    return Diagnoser(LAYERS, PARAMS, found.append, Thresholds()), found


def test_a_loss_that_does_not_fall_is_reported_once_at_its_200th_value():
    d, found = plateau_diagnoser()
    rng = np.random.default_rng(0)
    values = np.log(10) + 0.05 * rng.normal(size=400)  # cross-entropy at chance, 10 classes
    d.observe_scalars(np.arange(400), ["train/loss"], np.zeros(400, np.int32), values)
    (f,) = found
    assert (f.rule, f.step, f.layer, f.severity) == ("loss_plateau", 199, "train/loss", "warning")
    start, latest = np.median(values[:20]), np.median(values[100:200])
    assert f.text.startswith(f"train/loss has not fallen: over 200 values (steps 0–199) from {start:.4g} to a "
                             f"median of {latest:.4g} lately")  # fmt: skip


def test_a_falling_loss_a_slow_one_and_one_during_a_warm_up_are_not_plateaus():
    d, found = plateau_diagnoser()
    steps = np.arange(1000)
    d.observe_scalars(steps, ["train/loss"], np.zeros(1000, np.int32), 2.3 * np.exp(-steps / 300))
    d.observe_scalars(steps, ["slow/loss"], np.zeros(1000, np.int32), 2.3 - 0.0005 * steps)  # 3 % by step 199
    fast = 0.05 + 0.01 * np.random.default_rng(2).random(1000)
    fast[:40] = np.linspace(2.3, 0.05, 40)  # learned in 40 steps, flat since: converged, not stuck
    d.observe_scalars(steps, ["fast/loss"], np.zeros(1000, np.int32), fast)
    d.observe_scalars(steps, ["rl/policy_loss"], np.zeros(1000, np.int32), np.ones(1000))  # not the objective
    assert found == []
    # a warm-up: the rate still rising when the 200th value comes; the loss falls once it is high enough
    d, found = plateau_diagnoser()
    for s in range(400):
        d._lr_recent.append((s, 1e-5 * min(s + 1, 300)))
        loss = 2.3 if s < 300 else 2.3 - 0.01 * (s - 300)
        d.observe_scalars(np.array([s]), ["train/loss"], np.zeros(1, np.int32), np.array([loss]))
    assert found == []


def test_a_stuck_sigmoid_network_is_reported_through_a_real_run(root):
    """Glorot & Bengio's deep sigmoid network with its naive initialisation and a small learning rate: the loss sits
    at chance; the run's events say so."""
    torch.manual_seed(0)
    layers = []
    for i in range(5):
        lin = nn.Linear(64 if i == 0 else 256, 256)
        nn.init.uniform_(lin.weight, -1 / 16, 1 / 16)
        layers += [lin, nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
    with deepscope.init(dir=root) as run:
        run.watch(model, opt, print_findings=False)
        for _ in range(400):
            i = torch.randint(0, 512, (32,))
            loss = nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"train/loss": loss.item()})
    found = [e for e in reopen(root, run.id).events() if e.kind == "diagnosis/loss_plateau"]
    assert [e.key for e in found] == ["train/loss"] and 199 <= found[0].step < 400
    assert "stopped falling early" in found[0].text  # from above chance, to chance
