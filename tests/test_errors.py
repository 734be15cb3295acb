"""Bad input gets a clear error that names the layer and says what to do — and nothing is lost."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import prune_explorer as tp
from oracle import snapshot, state_equal


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.p, self.q = nn.Conv2d(4, 6, 1), nn.Conv2d(8, 6, 1)
        self.sizes = [4, 8]
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        a, b = torch.split(torch.relu(self.bn(self.stem(x))), self.sizes, dim=1)
        return self.p(a) + self.q(b)


@pytest.fixture
def setup():
    model = Net().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8), verbose=False)
    return model, DG, snapshot(model)


@pytest.mark.parametrize("idxs,match", [
    ([12], "out of range.*stem.*12 channels"),
    ([-1], "negative"),
    ([1, 1], r"more than once"),
    ([1.5], "not an integer"),
    (["2"], "not an integer"),
    (torch.tensor([0.0, 1.0]), "integers"),
])
def test_bad_indices(setup, idxs, match):
    model, DG, before = setup
    with pytest.raises(tp.InvalidIndicesError, match=match):
        DG.get_pruning_plan(model.stem, tp.prune_conv, idxs)
    assert state_equal(before, snapshot(model))


def test_index_errors_are_value_errors(setup):
    model, DG, _ = setup
    with pytest.raises(ValueError):
        DG.get_pruning_plan(model.stem, tp.prune_conv, [99])


def test_pruning_every_channel_directly(setup):
    model, DG, before = setup
    with pytest.raises(tp.PruneAllChannelsError, match="every channel of stem"):
        DG.get_pruning_plan(model.stem, tp.prune_conv, list(range(12)))
    assert state_equal(before, snapshot(model))


def test_pruning_every_channel_through_coupling(setup):
    model, DG, before = setup
    # channels 0-3 are the whole first split: p would lose every input
    with pytest.raises(tp.PruneAllChannelsError, match="all 4 entries"):
        DG.get_pruning_plan(model.stem, tp.prune_conv, [0, 1, 2, 3])
    assert state_equal(before, snapshot(model))


@pytest.mark.parametrize("amount", [0, -0.1, 1.0, 1.5, float("nan"), "half"])
def test_bad_amounts(amount):
    w = torch.randn(16, 3, 3, 3)
    if amount == 0:
        assert tp.strategy.L1Strategy()(w, amount=amount) == []  # as in 0.2.x
    else:
        with pytest.raises(tp.InvalidAmountError):
            tp.strategy.L1Strategy()(w, amount=amount)
    model = Net().eval()
    before = snapshot(model)
    with pytest.raises(tp.InvalidAmountError):
        tp.prune_model(model, torch.randn(1, 3, 8, 8), amount=amount)
    assert state_equal(before, snapshot(model))


def test_amount_that_removes_everything_as_a_count():
    with pytest.raises(tp.InvalidAmountError, match="all 16 channels"):
        tp.strategy.L1Strategy()(torch.randn(16, 3), amount=16)


def test_round_to_larger_than_the_layer():
    with pytest.raises(tp.InvalidAmountError, match="round_to=32 is larger than the 16"):
        tp.strategy.L2Strategy()(torch.randn(16, 3), amount=0.5, round_to=32)


def test_module_not_in_model_or_never_called(setup):
    model, DG, before = setup
    with pytest.raises(tp.UnknownModuleError, match="not part of the traced model"):
        DG.get_pruning_plan(nn.Conv2d(3, 3, 1), tp.prune_conv, [0])
    with pytest.raises(tp.UnknownModuleError, match="never called in forward"):
        DG.get_pruning_plan(model.unused, tp.prune_linear, [0])
    with pytest.raises(tp.UnknownModuleError, match="not a module of this model"):
        DG.get_pruning_plan("nope", "out", [0])
    assert state_equal(before, snapshot(model))


@pytest.mark.parametrize("bad,match", [
    (torch.randn(1, 4, 8, 8), r"stem \(Conv2d\) expects a float tensor of shape \[N, 3, H, W\]"),
    (torch.randint(0, 5, (1, 3, 8, 8)), r"stem.*Tensor\(int64"),
    (torch.randn(1, 3, 8, 8, dtype=torch.float64), r"stem.*float64"),
])
def test_example_inputs_that_do_not_fit(bad, match):
    model = Net().eval()
    before = snapshot(model)
    with pytest.raises(tp.TracingError, match=match):
        tp.DependencyGraph().build_dependency(model, bad)
    assert state_equal(before, snapshot(model))
    assert not model.stem._forward_hooks and not model.stem._forward_pre_hooks


def test_example_inputs_on_the_wrong_device():
    model = Net().eval()
    fake_meta = torch.empty(1, 3, 8, 8, device="meta")
    with pytest.raises(tp.TracingError, match="on meta but the model's parameters are on cpu"):
        tp.DependencyGraph().build_dependency(model, fake_meta)


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.rnn = nn.LSTM(8, 6, batch_first=True)
        self.head = nn.Linear(6, 2)
        self.side = nn.Linear(4, 5)
        self.side2 = nn.Linear(5, 2)

    def forward(self, x):
        y, _ = self.rnn(self.proj(x))
        return self.head(y) + self.side2(self.side(x))


def test_unsupported_layer_is_warned_and_plans_through_it_refused():
    model = WithLSTM().eval()
    x = torch.randn(2, 5, 4)
    with pytest.warns(UserWarning, match=r"rnn \(LSTM"):
        DG = tp.DependencyGraph().build_dependency(model, x)
    before = snapshot(model)
    with pytest.raises(tp.UnsupportedOperationError, match=r"rnn \(LSTM.*ignored_layers"):
        DG.get_pruning_plan(model.proj, "out", [1])
    assert state_equal(before, snapshot(model))
    DG.get_pruning_plan(model.side, "out", [1]).exec()  # elsewhere the model still prunes
    assert model(x).shape == (2, 5, 2)
    report = tp.prune_model(model, x, amount=0.5)
    assert any(root == "proj" and "rnn" in why for root, why in report.skipped)


class NumpyOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.from_numpy(np.tanh(x.detach().numpy()))

    @staticmethod
    def backward(ctx, g):
        return g


class WithCustomFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(NumpyOp.apply(self.a(x)))


def test_custom_autograd_function_outside_torch_is_refused():
    model = WithCustomFunction().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(3, 4))
    before = snapshot(model)
    with pytest.raises(tp.UnsupportedOperationError):
        DG.get_pruning_plan(model.a, "out", [0])
    assert state_equal(before, snapshot(model))


def test_warnings_name_the_callers_line():
    """The engine's warnings point at the user's call, not at a line inside the package (a
    wrapper frame added around an entry point shifts them there)."""
    import warnings
    model = WithCustomFunction().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tp.DependencyGraph().build_dependency(model, torch.randn(3, 4))
    assert [w.filename for w in caught] == [__file__]
    DG = tp.DependencyGraph().build_dependency(nn.Sequential(nn.Linear(4, 3)).eval(),
                                               torch.randn(2, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DG.get_pruning_plan("0", "out", [1])  # explicit: obeyed, with a warning
    assert [w.filename for w in caught] == [__file__]


def test_model_changed_after_tracing_is_detected(setup):
    model, DG, _ = setup
    tp.prune_conv(model.p, [0])  # changed behind the graph's back
    with pytest.raises(tp.StaleGraphError, match="changed after tracing"):
        DG.get_pruning_plan(model.stem, tp.prune_conv, [5])
    plan_model = Net().eval()
    DG2 = tp.DependencyGraph().build_dependency(plan_model, torch.randn(1, 3, 8, 8))
    plan = DG2.get_pruning_plan(plan_model.stem, tp.prune_conv, [5])
    plan_model.q.weight.data = plan_model.q.weight.data[:, :7]
    with pytest.raises(tp.StaleGraphError):
        plan.exec()


def test_a_plan_is_executed_once_and_stale_plans_are_refused(setup):
    model, DG, _ = setup
    plan_a = DG.get_pruning_plan(model.stem, tp.prune_conv, [5])
    plan_b = DG.get_pruning_plan(model.stem, tp.prune_conv, [6])
    plan_a.exec()
    with pytest.raises(tp.PlanExecutionError, match="already executed"):
        plan_a.exec()
    with pytest.raises(tp.StaleGraphError, match="computed before the model last changed"):
        plan_b.exec()


def test_failure_midway_through_exec_restores_the_model(setup, monkeypatch):
    model, DG, before = setup
    plan = DG.get_pruning_plan(model.stem, tp.prune_conv, [1, 9])
    import prune_explorer.execution as execution
    real = execution.prune_tensor
    calls = []

    def flaky(t, dim, idxs, *keep):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        real(t, dim, idxs, *keep)

    monkeypatch.setattr(execution, "prune_tensor", flaky)
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged.*disk on fire"):
        plan.exec()
    assert len(calls) == 4
    assert state_equal(before, snapshot(model))
    assert model.stem.out_channels == 12 and model.sizes == [4, 8]
    monkeypatch.setattr(execution, "prune_tensor", real)
    DG.get_pruning_plan(model.stem, tp.prune_conv, [1, 9]).exec()  # the graph is still valid
    assert model.sizes == [3, 7]
