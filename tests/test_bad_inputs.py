"""Bad input gets a clear error — its type, a message naming the layer and saying what to do —
and the model is left bit-identical. Complements test_errors.py (which covers the basic
cases); this file covers the remaining entry points and failure points."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import snapshot, state_equal


class Branches(nn.Module):
    """stem -> (a | b) -> cat -> head; a grouped conv; a Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a, self.b = nn.Conv2d(8, 6, 1), nn.Conv2d(8, 4, 1)
        self.g = nn.Conv2d(10, 12, 3, padding=1, groups=2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = torch.cat([self.a(h), self.b(h)], 1)
        return self.fc(self.g(h).mean((2, 3)))


X = torch.randn(2, 3, 6, 6)


def state(model):
    """Tensors and the size attributes a forward reads."""
    attrs = {(n, k): v for n, m in model.named_modules() for k, v in vars(m).items()
             if not k.startswith("_") and isinstance(v, (int, float, tuple, list, str))}
    return snapshot(model), attrs


def unchanged(model, before):
    now = state(model)
    return state_equal(before[0], now[0]) and before[1] == now[1]


@pytest.fixture
def setup():
    model = Branches().eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    return model, DG, state(model)


# ---- indices: type, message naming the layer and the fix, nothing changed -------------------------
@pytest.mark.parametrize("side,idxs,words", [
    ("out", [8], ["index 8 is out of range for stem", "valid: 0..7"]),
    ("out", [3, 100], ["index 100", "stem", "valid: 0..7"]),
    ("in", [3], ["index 3 is out of range for stem", "input channels", "valid: 0..2"]),
    ("out", [-2], ["index -2 for stem", "negative", "run from 0 to 7"]),
    ("out", [1, 2, 2, 5, 5], ["[2, 5]", "more than once for stem", "list each channel once"]),
    ("out", [1.0], ["1.0", "stem", "not an integer", "pass integer channel indices"]),
    ("out", [True], ["True", "stem", "not an integer"]),
    ("out", [None], ["None", "stem", "not an integer"]),
    ("out", "1,2", ["'1'", "stem", "not an integer"]),
    ("out", torch.tensor([True, False]), ["stem", "must be integers", "torch.bool"]),
    ("out", np.array([0.5]), ["stem", "not an integer"]),
    ("out", 3.5, ["stem", "list of integers"]),
])
def test_bad_indices_name_the_layer_and_the_fix(setup, side, idxs, words):
    model, DG, before = setup
    with pytest.raises(tp.InvalidIndicesError) as info:
        DG.get_pruning_plan(model.stem, side, idxs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert isinstance(info.value, ValueError) and isinstance(info.value, tp.PruningError)
    assert unchanged(model, before)


def test_integer_like_indices_are_accepted(setup):
    model, DG, _ = setup
    for idxs in (np.array([1, 4]), torch.tensor([1, 4]), [np.int64(1), np.int32(4)], range(1, 2),
                 (4, 1), 4):
        plan = DG.get_pruning_plan(model.stem, "out", idxs)
        assert plan.steps[0].idxs in ([1, 4], [1], [4])


def test_low_level_prune_functions_refuse_bad_indices_without_change():
    conv = nn.Conv2d(3, 8, 3)
    before = snapshot(conv)
    for fn, idxs, match in [(tp.prune_conv, [8], "out of range.*Conv2d"),
                            (tp.prune_related_conv, [-1], "negative"),
                            (tp.prune_conv, [0, 0], "more than once"),
                            (tp.prune_conv, list(range(8)), "every channel")]:
        with pytest.raises(tp.PruningError, match=match):
            fn(conv, idxs)
        assert state_equal(before, snapshot(conv)) and conv.out_channels == 8
    bn = nn.BatchNorm1d(4)
    with pytest.raises(tp.InvalidIndicesError, match="out of range"):
        tp.prune_batchnorm(bn, [4])
    assert bn.num_features == 4 and bn.running_mean.shape == (4,)


# ---- every channel of a layer, directly or through coupling --------------------------------------
def test_pruning_a_whole_concat_branch_is_refused(setup):
    model, DG, before = setup
    # g's input channels 6..9 are all of b's outputs
    with pytest.raises(tp.PruneAllChannelsError) as info:
        DG.get_pruning_plan(model.g, "in", [6, 7, 8, 9])
    msg = str(info.value)
    assert "cannot prune g (input channels)" in msg and "all 4 entries of the output of b" in msg
    assert "prune fewer channels" in msg
    assert unchanged(model, before)
    with pytest.raises(tp.PruneAllChannelsError, match="every channel of b"):
        DG.get_pruning_plan(model.b, "out", [0, 1, 2, 3])
    DG.get_pruning_plan(model.b, "out", [1]).exec()  # the graph still plans and executes
    assert model.b.out_channels == 3


def test_pruning_every_group_of_a_grouped_conv_is_refused(setup):
    model, DG, before = setup
    with pytest.raises(tp.PruneAllChannelsError, match="keep at least one"):
        DG.get_pruning_plan(model.g, "out", list(range(12)))
    with pytest.raises(tp.PruneAllChannelsError, match="every channel of stem"):
        DG.get_pruning_plan(model.stem, "out", list(range(8)))
    with pytest.raises(tp.PruneAllChannelsError, match="every channel of a"):
        DG.get_pruning_plan(model.a, "out", list(range(6)))
    assert unchanged(model, before)


def test_removing_a_whole_input_through_strict_false_is_reported_not_executed(setup):
    model, DG, before = setup
    plan = DG.get_pruning_plan(model.g, "in", [6, 7, 8, 9], strict=False)
    assert not plan.is_valid and "all 4 entries" in plan.problems[0].message
    with pytest.raises(tp.PruneAllChannelsError):
        plan.exec()
    assert unchanged(model, before)


# ---- amounts and round_to everywhere they are accepted --------------------------------------------
BAD_AMOUNTS = [0, 0.0, -0.3, 1.0, 1.2, float("nan"), float("inf"), "0.5", None, True]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_bad_amounts_for_select_channels(setup, amount):
    model, DG, before = setup
    if amount == 1.0 or isinstance(amount, float) and amount > 1 and not math.isinf(amount):
        # a whole number > 1 is a count; 1.0 as a fraction is everything
        pass
    with pytest.raises(tp.InvalidAmountError) as info:
        tp.select_channels(DG, "stem", "l1", amount)
    msg = str(info.value)
    assert "amount" in msg and ("fraction" in msg or "count" in msg)
    if not isinstance(amount, (str, type(None), bool)):
        assert "stem" in msg, msg
    assert unchanged(model, before)


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_bad_amounts_for_prune_model_and_strategies(amount):
    model = Branches().eval()
    before = state(model)
    with pytest.raises(tp.InvalidAmountError, match="amount"):
        tp.prune_model(model, X, amount=amount)
    assert unchanged(model, before)
    assert tp.history_of(model) == []
    if amount == 0 and not isinstance(amount, bool):
        # the classic strategies pick nothing for amount 0, as 0.2.x did (and idxs=[] is a
        # plan that changes nothing)
        assert tp.strategy.L2Strategy()(model.stem.weight, amount=amount) == []
        return
    with pytest.raises(tp.InvalidAmountError, match="amount"):
        tp.strategy.L2Strategy()(model.stem.weight, amount=amount)
    with pytest.raises(tp.InvalidAmountError, match="amount"):
        tp.strategy.RandomStrategy(0)(model.stem.weight, amount=amount)


def test_amount_as_a_count_that_takes_everything(setup):
    model, DG, before = setup
    with pytest.raises(tp.InvalidAmountError, match="all 8 channels of stem.*keep at least one"):
        tp.select_channels(DG, "stem", "l1", 8)
    assert unchanged(model, before)


@pytest.mark.parametrize("round_to", [9, 64])
def test_round_to_larger_than_the_channels(setup, round_to):
    model, DG, before = setup
    with pytest.raises(tp.InvalidAmountError,
                       match=rf"round_to={round_to} is larger than the 8 channels of stem"):
        tp.select_channels(DG, "stem", "l1", 0.5, round_to=round_to)
    with pytest.raises(tp.InvalidAmountError, match=rf"round_to={round_to} is larger"):
        tp.strategy.L1Strategy()(model.stem.weight, amount=0.5, round_to=round_to)
    assert unchanged(model, before)


def test_round_to_larger_than_every_group_for_prune_model():
    model = Branches().eval()
    before = state(model)
    with pytest.raises(tp.InvalidAmountError, match=r"round_to=64 is larger than.*at most"):
        tp.prune_model(model, X, amount=0.5, round_to=64)
    assert unchanged(model, before)
    # larger than some groups only: those are skipped, with the reason
    report = tp.prune_model(model, X, amount=0.5, round_to=10, ignored_layers=[model.fc])
    assert any("round_to=10 is larger than its" in why for _r, why in report.skipped)


@pytest.mark.parametrize("round_to", [0, -2])
def test_round_to_below_one(round_to):
    model = Branches().eval()
    with pytest.raises(tp.InvalidAmountError, match="round_to must be >= 1"):
        tp.prune_model(model, X, amount=0.5, round_to=round_to)
    if round_to < 0:  # (the classic strategies read round_to=0 as "no rounding")
        with pytest.raises(tp.InvalidAmountError, match="round_to must be >= 1"):
            tp.strategy.L1Strategy()(model.stem.weight, amount=0.5, round_to=round_to)


def test_unknown_strategy_lists_the_known_ones(setup):
    model, DG, before = setup
    for call in (lambda: tp.select_channels(DG, "stem", "l3", 0.5),
                 lambda: tp.prune_model(model, X, amount=0.5, strategy="L1 ")):
        with pytest.raises(tp.InvalidAmountError, match=r"unknown strategy.*'l1', 'l2'"):
            call()
    assert unchanged(model, before)


# ---- modules ------------------------------------------------------------------------------------
def test_a_module_of_another_model_or_a_bad_name(setup):
    model, DG, before = setup
    other = Branches()
    with pytest.raises(tp.UnknownModuleError, match="Conv2d.*not part of the traced model.*e.g."):
        DG.get_pruning_plan(other.stem, "out", [0])
    with pytest.raises(tp.UnknownModuleError, match="'stem.weight' is not a module.*'stem'"):
        DG.get_pruning_plan("stem.weight", "out", [0])
    with pytest.raises(tp.UnknownModuleError, match="not part of the traced model"):
        tp.select_channels(DG, other.a, "l1", 0.5)
    with pytest.raises(KeyError):  # the family a user would catch for a missing name
        DG.get_pruning_plan("nope", "out", [0])
    assert unchanged(model, before)


def test_a_layer_never_called_in_forward():
    class Unused(Branches):
        def __init__(self):
            super().__init__()
            self.aux = nn.Conv2d(8, 8, 1)  # an auxiliary head only used in training

        def forward(self, x):
            return super().forward(x)

    model = Unused().eval()
    with pytest.warns(UserWarning, match="not called with the example inputs.*aux"):
        DG = tp.DependencyGraph().build_dependency(model, X)
    before = state(model)
    with pytest.raises(tp.UnknownModuleError, match="aux \\(Conv2d\\) was never called"):
        DG.get_pruning_plan(model.aux, "out", [0])
    with pytest.raises(tp.UnknownModuleError, match="never called"):
        tp.select_channels(DG, "aux", "l1", 0.5)
    assert unchanged(model, before)


# ---- example inputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("inputs,words", [
    (torch.randn(2, 5, 6, 6), ["stem (Conv2d)", "[N, 3, H, W]", "pass inputs the model accepts"]),
    (torch.randn(2, 3), ["stem", "Tensor(float32, [2, 3]"]),
    (torch.randn(2, 3, 6, 6).half(), ["stem", "float16"]),
    ((torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)), ["takes 2 positional arguments"]),
    ({"y": torch.randn(2, 3, 6, 6)}, ["unexpected keyword argument 'y'", "y=Tensor"]),
])
def test_example_inputs_that_do_not_fit_the_model(inputs, words):
    model = Branches().eval()
    before = state(model)
    with pytest.raises(tp.TracingError) as info:
        tp.DependencyGraph().build_dependency(model, inputs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert unchanged(model, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(tp.TracingError):  # and prune_model says the same, changing nothing
        tp.prune_model(model, inputs, amount=0.5)
    assert unchanged(model, before)


def test_missing_example_inputs():
    with pytest.raises(TypeError, match="needs example_inputs"):
        tp.DependencyGraph().build_dependency(Branches(), None)
    with pytest.raises(TypeError, match="expects an nn.Module"):
        tp.DependencyGraph().build_dependency(lambda x: x, X)


def test_inputs_on_another_device_than_the_model():
    model = Branches().eval().to("meta")
    with pytest.raises(tp.TracingError, match="on cpu but the model's parameters are on meta"):
        tp.DependencyGraph().build_dependency(model, X)


def test_training_mode_and_rng_survive_a_failed_trace():
    model = Branches().train()
    bad = torch.randn(2, 5, 6, 6)
    rs = torch.get_rng_state()
    stats = model.bn.running_mean.clone()
    with pytest.raises(tp.TracingError):
        tp.DependencyGraph().build_dependency(model, bad)
    assert model.training and torch.equal(torch.get_rng_state(), rs)
    assert torch.equal(model.bn.running_mean, stats)


# ---- unsupported layers -------------------------------------------------------------------------
class ScaleFn(torch.autograd.Function):
    """A custom autograd.Function whose forward leaves torch (through numpy)."""

    @staticmethod
    def forward(ctx, x):
        return torch.from_numpy(np.ascontiguousarray(x.detach().numpy() * 2.0))

    @staticmethod
    def backward(ctx, g):
        return g * 2.0


class WithUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        self.side = nn.Linear(4, 6)

    def forward(self, x):
        y, _ = self.lstm(self.proj(x))
        return self.head(ScaleFn.apply(self.mid(y)) + self.side(x))


def test_unsupported_layers_are_warned_by_name_and_plans_through_them_refused():
    model = WithUnsupported().eval()
    x = torch.randn(2, 5, 4)
    with pytest.warns(UserWarning) as record:
        DG = tp.DependencyGraph().build_dependency(model, x)
    text = " ".join(str(w.message) for w in record)
    # the layer by name and type; the custom Function by the op where data leaves torch
    assert "lstm (LSTM" in text and "numpy" in text and "will be refused" in text
    before = state(model)
    with pytest.raises(tp.UnsupportedOperationError, match=r"lstm \(LSTM.*ignored_layers"):
        DG.get_pruning_plan(model.proj, "out", [0])
    with pytest.raises(tp.UnsupportedOperationError, match="numpy.*ignored_layers"):
        DG.get_pruning_plan(model.mid, "out", [0])
    with pytest.raises(tp.UnsupportedOperationError, match="numpy"):
        tp.select_channels(DG, model.mid, "l1", 0.5).plan(strict=True)
    assert unchanged(model, before)
    # prune_model skips those groups and says why; the rest still prunes
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.head])
    reasons = dict(report.skipped)
    assert "lstm" in reasons.get("proj", "") and "numpy" in reasons.get("mid", "")
    assert model.side.out_features == 6 and model(x).shape == (2, 5, 3)


def test_a_recurrent_layer_traced_op_by_op_prunes_its_inputs_only():
    # nn.GRU runs as plain ATen ops on CPU: its input columns follow the producer, its hidden
    # state is refused clearly
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.gru, self.head = nn.Linear(4, 8), nn.GRU(8, 6, batch_first=True), \
                nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.gru(self.proj(x))[0])

    model = G().eval()
    x = torch.randn(2, 5, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = state(model)
    with pytest.raises(tp.UnsupportedOperationError, match="gru.*cannot shrink its output"):
        DG.get_pruning_plan(model.head, "in", [0])
    assert unchanged(model, before)
    from oracle import assert_matches_twin
    assert_matches_twin(model, DG.get_pruning_plan(model.proj, "out", [0, 3]), x)
    assert model.gru.input_size == 6


# ---- a model changed after tracing ----------------------------------------------------------------
@pytest.mark.parametrize("change", [
    lambda m: setattr(m.a, "weight", nn.Parameter(torch.randn(5, 8, 1, 1))),  # another shape
    lambda m: tp.prune_related_conv(m.g, [0, 1]),  # pruned by hand behind the graph's back
    lambda m: m.register_buffer("extra", torch.zeros(3)),  # a new tensor
    lambda m: delattr(m.b, "bias") or m.b.register_parameter("bias", None),  # one removed
])
def test_a_model_changed_after_tracing_is_detected_before_planning(setup, change):
    model, DG, _ = setup
    change(model)
    with pytest.raises(tp.StaleGraphError, match="changed after tracing.*build_dependency"):
        DG.get_pruning_plan(model.stem, "out", [1])
    with pytest.raises(tp.StaleGraphError):
        tp.select_channels(DG, "stem", "l1", 0.5)
    try:  # after re-tracing the graph is usable again (or refuses clearly if the change
        DG.build_dependency(model, X)  # broke the model)
        DG.get_pruning_plan(model.stem, "out", [1])
    except tp.PruningError:
        pass


def test_a_plan_computed_before_a_change_is_refused_at_exec(setup):
    model, DG, _ = setup
    plan = DG.get_pruning_plan(model.stem, "out", [1])
    model.fc.weight.data = model.fc.weight.data[:, :11]  # changed after planning
    snap = state(model)
    with pytest.raises(tp.StaleGraphError):
        plan.exec()
    assert unchanged(model, snap)


# ---- a failure in the middle of exec restores everything -------------------------------------------
def _flaky(monkeypatch, module, name, fail_at):
    real = getattr(module, name)
    calls = []

    def wrapper(*a, **k):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError(f"{name} failed on call {fail_at}")
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("where,fail_at", [("prune_tensor", 1), ("prune_tensor", 5),
                                           ("sync_layer", 2)])
def test_exception_inside_exec_restores_the_model(setup, monkeypatch, where, fail_at):
    import prune_explorer.execution as execution
    model, DG, before = setup
    params = {n: p for n, p in model.named_parameters()}
    plan = DG.get_pruning_plan(model.stem, "out", [1, 6])
    calls = _flaky(monkeypatch, execution, where, fail_at)
    with pytest.raises(tp.PlanExecutionError, match=f"rooted at stem.*restored unchanged.*{where}"):
        plan.exec()
    assert len(calls) == fail_at
    assert unchanged(model, before)
    assert all(p is params[n] for n, p in model.named_parameters())  # optimiser refs intact
    assert tp.history_of(model) == [] and not plan.executed
    monkeypatch.undo()
    DG.get_pruning_plan(model.stem, "out", [1, 6]).exec()  # the graph still works
    assert model.stem.out_channels == 6 and len(tp.history_of(model)) == 1


def test_exception_inside_a_black_box_prune_function_restores_the_model(monkeypatch):
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(6, 16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.out = nn.Linear(16, 2)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.attn(h, h, h, need_weights=False)[0])

    model = Attn().eval()
    x = torch.randn(2, 5, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = state(model)
    plan = DG.get_pruning_plan(model.attn, "out", [0, 1, 2, 3])
    import prune_explorer.pruners as pruners
    real = pruners._prune_mha

    def half_then_fail(layer, idxs, heads, inplace, dry_run):
        if not dry_run:  # cut part of the layer, then fail
            pruners.prune_tensor(layer.in_proj_weight, 0, idxs)
            raise RuntimeError("custom prune function crashed")
        return real(layer, idxs, heads, inplace, dry_run)

    monkeypatch.setattr(pruners, "_prune_mha", half_then_fail)
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged.*crashed"):
        plan.exec()
    assert unchanged(model, before)
    assert model.attn.num_heads == 4 and model.attn.in_proj_weight.shape == (48, 16)


def test_a_forward_that_breaks_on_the_new_sizes_restores_the_model():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            h = self.stem(x)
            assert h.shape[1] == 8, "this model insists on 8 channels"
            return self.head(h)

    model = Fixed().eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    before = state(model)
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged.*insists on 8 channels"):
        DG.get_pruning_plan(model.stem, "out", [0]).exec()
    assert unchanged(model, before)
    # prune_model drops the group the model's code refuses, says why, and changes nothing
    report = tp.prune_model(model, X, amount=0.5, ignored_layers=[model.head])
    assert any(root == "stem" and "insists on 8 channels" in why for root, why in report.skipped)
    assert unchanged(model, before) and tp.history_of(model) == []


def test_prune_model_failing_midway_restores_the_model(monkeypatch):
    import prune_explorer.execution as execution
    model = Branches().eval()
    before = state(model)
    _flaky(monkeypatch, execution, "prune_tensor", 7)
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged"):
        tp.prune_model(model, X, amount=0.5, ignored_layers=[model.fc])
    assert unchanged(model, before) and tp.history_of(model) == []


def test_undo_restores_bit_identical(setup):
    model, DG, before = setup
    DG.get_pruning_plan(model.stem, "out", [1, 6]).exec()
    DG.get_pruning_plan(model.g, "out", [0, 1]).exec()
    DG.undo()
    DG.undo()
    assert unchanged(model, before) and tp.history_of(model) == []
    with pytest.raises(tp.PlanExecutionError, match="nothing to undo"):
        DG.undo()
