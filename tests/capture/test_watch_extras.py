"""watch records the model's graph once, numbers steps from start_step, and names the run in findings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import reopen
from torch import nn

import deepscope
from deepscope.graphs.store import read_graph


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it, the hooks fallback can."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if h.sum() > 0:
            h = h * 2
        return self.b(h)


def test_graph_recorded_once_from_the_first_training_pass(root):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    frozen = model[1]
    with deepscope.init(dir=root) as run:
        run.watch(model, opt, diagnose=False)
        with torch.no_grad():
            model.eval()
            model(torch.randn(3, 4))  # an eval pass first: not the one that records
            model.train()
        frozen.eval()  # kept in eval on purpose: recording the graph must not change that
        for _ in range(3):
            model(torch.randn(5, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    assert not frozen.training and model[0].training
    g = read_graph(run.dir)
    assert g is not None and g.method == "fx"
    assert {m.path for m in g.modules} >= {"0", "1", "2"}
    r = reopen(root, run.id)
    assert r.layer_series("0", "act", "mean").step.tolist() == [0, 1, 2]  # the tracing pass was not recorded


def test_graph_falls_back_to_hooks_and_training_is_untouched(root):
    torch.manual_seed(0)
    model = Branchy()
    with deepscope.init(dir=root) as run:
        run.watch(model, diagnose=False)
        out = model(torch.ones(2, 4))
    assert out.shape == (2, 2)
    assert read_graph(run.dir).method == "hooks"


def test_graph_sees_keyword_arguments_beside_positional_ones(root):
    """``model(x, mask=m)``: the graph is traced with the mask, not with its default (None)."""

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            h = self.fc(x)
            return h if mask is None else h * mask

    model = Masked()
    with deepscope.init(dir=root) as run:
        run.watch(model, diagnose=False)
        model(torch.randn(2, 4), mask=torch.ones(2, 4)).sum().backward()
    g = read_graph(run.dir)
    names = [n.name for n in g.nodes]
    assert "mask" in names and any(n.op == "mul" or "mul" in n.name for n in g.nodes), names


def test_start_step_and_run_name_in_findings(root, capsys):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with deepscope.init(dir=root, name="resumed-run") as run:
        run.watch(model, opt, start_step=1000, graph=False)
        for i in range(2):
            x = torch.randn(8, 4)
            if i == 1:
                x[0, 0] = float("nan")
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    r = reopen(root, run.id)
    assert r.layer_series("0", "act", "mean").step.tolist() == [1000, 1001]
    assert r.series("sys/step_time").step.tolist() == [1000, 1001]
    assert "deepscope [error] resumed-run step 1001" in capsys.readouterr().err
    assert read_graph(run.dir) is None


@pytest.mark.parametrize(
    ("every", "window", "checked", "closed"),
    [
        # recorded steps 0, 3, …, 39; a window of 10 steps is 4 parts of one recorded step (3 steps) each — at least
        # the window —, checked on the first 4 inputs: from the fourth part's end (step 12) on, every recorded step
        (3, 10, 4, list(range(12, 40, 3))),
        # every step recorded, windows of 20 in 4 parts of 5 steps, each with one check (every 5th step, on the first
        # 20 inputs): from the first whole window (step 19) on, every part's end (24, 29 …)
        (1, 20, 20, [19, 24, 29, 34, 39]),
    ],
)
def test_dead_units_are_the_units_that_never_fired_in_the_window(root, every, window, checked, closed):
    """A ReLU layer of 16 units: 6 with a bias of −100 never fire, 2 fire only on the last input checked (alive),
    2 only on inputs past the ones checked (dead as far as watch can see): dead_frac is 8/16 at the end of each
    part of the sliding window once a whole window has passed, NaN between, and the finding names the layer."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)
        model[0].bias[:6] = -100.0
        model[0].weight[6:8, 0] = 1.0  # units 6, 7: fire where x[:, 0] is large
        model[0].weight[8:10, 1] = 1.0  # units 8, 9: where x[:, 1] is
        model[0].bias[6:10] = -50.0
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay as set
    with deepscope.init(dir=root) as run:
        run.watch(model, opt, every=every, dead_window=window, print_findings=False)
        for _ in range(40):
            x = torch.randn(32, 4)
            x[checked - 1, 0] = 100.0  # the last row checked
            x[checked:, 1] = 100.0  # rows past the ones checked
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    r = reopen(root, run.id)
    s = r.layer_series("1", "act", "dead_frac")
    reported = {int(step): float(v) for step, v in zip(s.step, s.last) if v == v}
    assert reported == dict.fromkeys(closed, 0.5)
    assert [e.key for e in r.events() if e.kind == "diagnosis/dead_units"] == ["1"]


class Sometimes(nn.Module):
    """Two ReLU branches; the second runs only while ``use_b`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.relu_a = nn.Linear(4, 8), nn.ReLU()
        self.b, self.relu_b = nn.Linear(4, 8), nn.ReLU()
        self.use_b = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_a(self.a(x)).sum(1)
        if self.use_b:
            out = out + self.relu_b(self.b(x)).sum(1)
        return out


def test_a_layer_never_checked_in_a_window_has_no_dead_share(root):
    """Checks fall on every 5th step (windows of 20 in parts of 5): from step 20 on the branch that skips those steps
    is never looked at, so its share of dead units there is unknown (NaN), not 100 %."""
    model = Sometimes()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with deepscope.init(dir=root) as run:
        run.watch(model, opt, dead_window=20, print_findings=False)
        for step in range(40):
            model.use_b = step < 20 or step % 5 != 0  # from step 20 on, not on the steps that are checked
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    r = reopen(root, run.id)
    a = r.layer_series("relu_a", "act", "dead_frac")
    b = r.layer_series("relu_b", "act", "dead_frac")
    assert a.step[np.isfinite(a.last)].tolist() == [19, 24, 29, 34, 39]  # each part's end, from a whole window on
    reported = {int(t): float(v) for t, v in zip(b.step, b.last) if np.isfinite(v)}
    assert list(reported) == [19] and 39 in b.step.tolist()  # the first window only: later it ran, unchecked
    assert not [e for e in r.events() if e.kind == "diagnosis/dead_units"]


class _Attention(nn.Module):
    """A learned position table on the container, and a MultiheadAttention (which calls its out_proj's weights
    as a function, never the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(5, 16) * 0.1)
        self.emb = nn.Linear(4, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x) + self.pos
        a, _ = self.attn(h, h, h)
        return self.head(a.mean(1))


def test_every_parameter_is_recorded_and_attention_is_one_layer(root):
    torch.manual_seed(0)
    model = _Attention()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False)
    norms, outs = [], []
    model.attn.register_forward_hook(lambda m, i, o: outs.append(o[0].detach().mean().item()))
    for _ in range(3):
        loss = model(torch.randn(2, 5, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        norms.append([p.grad.norm().item() for p in model.parameters()])
        opt.step()
    run.finish()
    r = reopen(root, run.id)
    assert r.layer_matrix("act", "mean").names == ["emb", "attn", "head"]  # no row for the never-called out_proj
    # (the graph, recorded from the first pass, traced the model once more)
    np.testing.assert_allclose(r.layer_series("attn", "act", "mean").last, outs[-3:], rtol=1e-5)
    grads = r.layer_matrix("param_grad", "norm")
    assert grads.names == [n for n, _ in model.named_parameters()]  # pos and in_proj_weight too, in model order
    np.testing.assert_allclose(grads.values.T, norms, rtol=1e-5)


def test_a_glob_selects_container_parameters_by_their_own_path(root):
    model = _Attention()
    run = deepscope.init(dir=root)
    watcher = run.watch(model, layers=["pos", "head*"])
    assert watcher.param_names == ["pos", "head.weight", "head.bias"]
    run.finish()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch.compile's own
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")  # Dynamo's own
def test_a_compiled_model_is_watched_under_its_own_layer_names(root):
    """torch.compile: layer paths without the "_orig_mod." prefix (compiled and eager runs line up), one warning
    about the graph breaks, and the same statistics as the eager model's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root)
    with pytest.warns(RuntimeWarning, match="the model is compiled"):
        run.watch(compiled, opt, print_findings=False, graph=False)
    x = torch.randn(4, 8)
    means = []
    for _ in range(3):
        loss = compiled(x).square().mean()
        opt.zero_grad()
        loss.backward()
        means.append(model[0](x).mean().item())  # the first layer's output, before this step's update
        opt.step()
    run.finish()
    r = reopen(root, run.id)
    acts = r.layer_matrix("act", "mean")
    assert acts.names == ["0", "1", "2"] and acts.step.tolist() == [0, 1, 2]
    np.testing.assert_allclose(r.layer_series("0", "act", "mean").last, means, rtol=1e-5)


@pytest.mark.parametrize("strict", [False, True])
def test_exporting_a_watched_model_is_no_step_and_breaks_nothing(root, strict):
    """torch.export (and deepscope.graph, which exports) traces a watched model in training mode: its pass over
    fake tensors is not recorded, not counted as a step, and a strict export is not stopped by the hooks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = deepscope.init(dir=root)
    run.watch(model, print_findings=False, graph=False)  # steps are training passes: an export would be one
    x = torch.randn(4, 8)
    for i in range(3):
        if i == 1:
            torch.export.export(model, (x,), strict=strict)
            deepscope.graph(model, x, run=run)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    run.finish()  # a fake tensor in the statistics would fail their conversion here, with a warning (an error here)
    r = reopen(root, run.id)
    assert r.layer_matrix("act", "mean").step.tolist() == [0, 1, 2]
    assert read_graph(r.dir) is not None


def test_filters_see_attention_as_one_layer(root):
    """A glob on a path inside MultiheadAttention selects it; a callable written for leaf modules that raises on
    another module does not select it (and does not fail watch)."""
    model = _Attention()
    run = deepscope.init(dir=root)
    w = run.watch(model, layers="*out_proj*")
    assert [la.path for la in w.layers] == ["attn"]
    run.unwatch()
    run.finish()
    other = deepscope.init(dir=root)
    w = other.watch(model, layers=lambda path, m: m.out_features >= 3)  # MultiheadAttention has no out_features
    assert [la.path for la in w.layers] == ["emb", "head"] and "pos" not in w.param_names
    other.finish()


def test_a_run_watched_before_attention_was_one_layer_can_be_watched_again(root):
    """Its watch.json lists the attention's children (out_proj); the same model is accepted, other layers not."""
    import json

    model = _Attention()
    run = deepscope.init(dir=root, id="old")
    run.watch(model)
    run.finish()
    path = root / "old" / "streams" / "0" / "watch.json"
    manifest = json.loads(path.read_text())
    layers = [la for la in manifest["layers"] if la["path"] != "attn"]
    layers.insert(1, {**layers[0], "path": "attn.out_proj", "type": "NonDynamicallyQuantizableLinear"})
    path.write_text(json.dumps({**manifest, "layers": layers}))  # as an earlier version wrote it
    again = deepscope.init(dir=root, id="old", resume=True)
    again.watch(model)
    again.unwatch()
    with pytest.raises(ValueError, match="another model"):
        again.watch(nn.Sequential(nn.Linear(2, 2)))
    again.finish()


def test_histograms_every_n_steps_and_at_1_2_5_before(root):
    """Early training gets histograms at steps 1, 2, 5, 10, 20, 50 before the first 100th: a short run has a
    distribution over time, not one histogram."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, print_findings=False, graph=False)  # histograms_every=100
    for _ in range(120):
        model(torch.randn(8, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    run.finish()
    r = reopen(root, run.id)
    assert [h.step for h in r.histograms("watch/act/0")] == [0, 1, 2, 5, 10, 20, 50, 100]
    assert r.layer_names("act") == ["0", "1", "2"] and r.layer_names("weight") == ["0.weight", "0.bias", "2.weight",
                                                                                   "2.bias"]  # fmt: skip
    with pytest.raises(ValueError, match="kinds: act, grad, param_grad, weight"):
        r.layer_names("activations")  # a kind of statistics, not a stream kind


def test_a_layer_that_dies_is_reported_a_window_after_it_died_not_at_the_next_fixed_window(root):
    """Units that stop firing at step 10 (window 100, in quarters): dead over steps 25–124, reported at step 124 —
    a fixed window reported them at 199, the end of the first window wholly after their death."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with deepscope.init(dir=root) as run:
        run.watch(model, opt, print_findings=False)
        for step in range(200):
            if step == 10:
                with torch.no_grad():
                    model[0].bias.fill_(-100.0)  # every unit dies
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
    r = reopen(root, run.id)
    (finding,) = [e for e in r.events() if e.kind == "diagnosis/dead_units"]
    assert finding.step == 124
    s = r.layer_series("1", "act", "dead_frac")
    shares = {int(t): float(v) for t, v in zip(s.step, s.last) if v == v}
    assert shares[99] < 1.0 and shares[124] == 1.0 and list(shares) == list(range(99, 200, 25))


def test_a_watch_left_by_its_with_block_is_over_and_a_new_one_records(root):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()

    run = deepscope.init(dir=root)
    with run.watch(model, opt, diagnose=False):
        step()
    again = run.watch(model, opt, diagnose=False)  # no warning: the first one is over
    assert not again.scope.closed
    step()
    run.finish()
    assert reopen(root, run.id).layer_steps().tolist() == [0, 1]


def test_the_layers_order_of_calls_is_recorded_over_the_first_training_pass(root):
    """A TransformerEncoderLayer declares linear1 before norm1 and runs self_attn, dropout1, norm1, linear1…: the
    manifest says the order they ran in (from the first training pass; an evaluation pass before it counts for
    nothing), and the hooks that learnt it are gone after that pass."""
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)
    run.watch(model, opt, diagnose=False)
    hooks = len(model.linear1._forward_hooks)
    with torch.no_grad():
        model.eval()
        model(torch.randn(2, 5, 16))
        model.train()
    for _ in range(2):
        loss = model(torch.randn(4, 5, 16)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert len(model.linear1._forward_hooks) == hooks - 1  # the order's hook went after the first training pass
    run.finish()
    manifest = reopen(root, run.id).watch_manifest()
    assert [la["path"] for la in manifest["layers"]][:3] == ["self_attn", "linear1", "dropout"]  # declared
    assert manifest["call_order"] == ["self_attn", "dropout1", "norm1", "linear1", "dropout", "linear2", "dropout2",
                                      "norm2"]  # fmt: skip


def test_a_later_watch_of_fewer_layers_keeps_the_order_of_calls_learnt_before(root):
    from deepscope.capture.manifest import _merged_order

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = deepscope.init(dir=root)

    def train(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            model(torch.randn(3, 4)).sum().backward()
            opt.step()

    run.watch(model, opt, diagnose=False)
    train(2)
    run.unwatch()
    run.watch(model, opt, layers="2", diagnose=False)  # its own order of calls: ["2"]
    train(2)
    run.finish()
    assert reopen(root, run.id).watch_manifest()["call_order"] == ["0", "1", "2", "3", "4"]
    # a layer only the later watch had goes after the one it ran after, else before the one it ran before
    assert _merged_order(["a", "c"], ["b", "c"], ["a", "b", "c"]) == ["a", "b", "c"]
    assert _merged_order(["b", "c"], ["a", "b"], ["a", "b", "c"]) == ["a", "b", "c"]
    assert _merged_order(["a", "c"], ["b"], ["a", "b", "c"]) == ["a", "b", "c"]  # by the model's order
