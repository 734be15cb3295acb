"""prune_model: every group once, strategies, round_to, global ranking, ignored layers."""

import copy

import pytest
import torch
import torchvision
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin, snapshot, state_equal


def small_resnet():
    return torchvision.models.resnet18(num_classes=10).eval()


X = torch.randn(2, 3, 32, 32)


def test_dry_run_plan_equals_its_masked_twin_and_exec_matches_the_report():
    model = small_resnet()
    before = snapshot(model)
    report = tp.prune_model(model, X, amount=0.5, ignored_layers=[model.fc], dry_run=True)
    assert state_equal(before, snapshot(model))  # dry run: nothing changed
    assert report.plan is not None and report.params_after < 0.4 * report.params_before
    predicted = report.params_after
    assert_matches_twin(model, report.plan, X)
    assert tp.utils.count_params(model) == predicted


@pytest.mark.parametrize("strategy", ["l1", "l2", "random", "bn_scale", "lamp"])
def test_every_strategy_prunes_every_group_by_the_amount(strategy):
    model = small_resnet()
    report = tp.prune_model(model, X, amount=0.25, strategy=strategy, ignored_layers=[model.fc])
    assert model(X).shape == (2, 10)
    for g in report.groups:
        assert g.pruned == int(0.25 * g.channels), (g.root, g.pruned, g.channels)
    assert model.fc.out_features == 10


def test_l1_keeps_the_strongest_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    with torch.no_grad():
        for i in range(8):
            model[0].weight[i].fill_(i + 1)  # channel i has norm ~ i+1
            model[2].weight[:, i].fill_(0.01)
    tp.prune_model(model, torch.randn(1, 3, 8, 8), amount=0.5, ignored_layers=[model[2]])
    kept = model[0].weight[:, 0, 0, 0].tolist()
    assert sorted(kept) == [5.0, 6.0, 7.0, 8.0]


def test_taylor_needs_a_loss_and_uses_gradients():
    model = small_resnet().train()
    with pytest.raises(tp.InvalidAmountError, match="loss_fn"):
        tp.prune_model(model, X, amount=0.3, strategy="taylor")
    y = torch.randint(0, 10, (2,))
    report = tp.prune_model(model, X, amount=0.3, strategy="taylor", ignored_layers=[model.fc],
                            loss_fn=lambda m: nn.functional.cross_entropy(m(X), y))
    assert report.params_after < report.params_before


@pytest.mark.parametrize("round_to", [8, 16])
def test_round_to_leaves_multiples(round_to):
    model = small_resnet()
    tp.prune_model(model, X, amount=0.4, round_to=round_to, ignored_layers=[model.fc])
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.out_channels != 3:
            assert m.out_channels % round_to == 0, m


def test_global_pruning_ranks_across_groups_with_a_floor():
    model = small_resnet()
    report = tp.prune_model(model, X, amount=0.5, global_pruning=True, ignored_layers=[model.fc],
                            max_group_loss=0.8)
    fractions = [g.pruned / g.channels for g in report.groups]
    assert max(fractions) <= 0.8 and len(set(round(f, 2) for f in fractions)) > 1
    total = sum(g.channels for g in report.groups)
    assert abs(sum(g.pruned for g in report.groups) - 0.5 * total) <= 0.05 * total
    assert model(X).shape == (2, 10)


def test_ignored_layers_keep_their_outputs_and_the_model_keeps_its_output_shape():
    model = small_resnet()
    tp.prune_model(model, X, amount=0.5, ignored_layers=[model.layer4, model.fc])
    assert model.layer4[1].conv1.out_channels == 512
    assert model.layer4[1].conv2.out_channels == 512  # coupled to the ignored block's outputs
    assert model(X).shape == (2, 10)


def test_report_lists_groups_and_skipped_reasons():
    model = small_resnet()
    report = tp.prune_model(model, X, amount=0.5)  # nothing ignored: fc is blocked by the output
    assert any(root == "fc" and "model output" in why for root, why in report.skipped)
    text = str(report)
    assert "params" in text and "MACs" in text and "skipped fc" in text
    d = report.to_dict()
    assert d["params_after"] == tp.utils.count_params(model)
    history = tp.history_of(model)
    assert history[-1]["kind"] == "prune_model" and history[-1]["settings"]["amount"] == 0.5


def test_groups_valid_alone_but_not_together_are_dropped_before_exec():
    """ShuffleNet's shuffles and chunks chain groups: each selection is valid alone, their
    union once widened to every channel of a layer. The combined plan drops one and runs."""
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5().eval()
    x = torch.randn(1, 3, 64, 64)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.fc])
    assert model(x).shape == (1, 1000)
    assert report.params_after < 0.7 * report.params_before


def test_random_strategy_follows_the_seed():
    def pruned(seed):
        model = small_resnet()
        report = tp.prune_model(model, X, amount=0.5, strategy="random", seed=seed,
                                ignored_layers=[model.fc])
        return [tuple(g.idxs) for g in report.groups]
    assert pruned(1) == pruned(1) and pruned(1) != pruned(2)


class _Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3)
        self.dw = nn.Conv2d(2, 2, 3, groups=2)
        self.scale = nn.Parameter(torch.ones(1, 2, 1, 1))
        self.conv2 = nn.Conv2d(2, 4, 1)

    def forward(self, x):
        return self.conv2(self.dw(self.conv1(x)) * self.scale)


def _step_facts(plan):
    return [(s.target, s.kind, s.fn, s.idxs, s.params, s.macs, s.role, s.nodes, s.trigger,
             s.module_repr if s.kind in ("param", "pass") else None) for s in plan.steps]


def test_steps_read_after_exec_are_the_steps_before_it():
    """A plan's steps are worked out when first read; read after exec they still describe the
    model as the plan found it (a depthwise conv left with one group is still listed as a
    grouped conv, a bare parameter with its old shape)."""
    torch.manual_seed(0)
    a = _Depthwise()
    b = copy.deepcopy(a)
    x = torch.randn(1, 3, 9, 9)
    DGa = tp.DependencyGraph().build_dependency(a, x)
    DGb = tp.DependencyGraph().build_dependency(b, x)
    early = DGa.get_pruning_plan(a.conv1, tp.prune_conv, idxs=[0])
    before = _step_facts(early)  # read first
    early.exec()
    late = DGb.get_pruning_plan(b.conv1, tp.prune_conv, idxs=[0])
    late.exec()
    assert b.dw.groups == 1 and b.scale.shape == (1, 1, 1, 1)
    assert _step_facts(late) == before  # read only now
    assert [s.fn for s in late.steps if s.target == "dw"] == ["prune_group_conv"]
    assert "Parameter[1, 2, 1, 1]" in [s.module_repr for s in late.steps]
    assert late.highlighted.keys() == early.highlighted.keys()
    assert sum(s.params for s in late.steps) == late.params_removed


def _stale_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.Conv2d(8, 4, 1)).eval()


def test_prune_model_refuses_a_graph_the_model_outgrew():
    """A graph the caller traced earlier is checked before exec: the model changed since, so
    nothing is cut. (Only a graph prune_model traced itself a moment before skips that
    check.)"""
    model = _stale_model()
    x = torch.randn(1, 3, 12, 12)
    DG = tp.DependencyGraph().build_dependency(model, x)
    model[2] = nn.Conv2d(8, 6, 3)  # swapped behind the graph's back
    model[4] = nn.Conv2d(6, 4, 1)
    before = snapshot(model)
    with pytest.raises(tp.StaleGraphError):
        tp.prune_model(model, x, amount=0.5, DG=DG, ignored_layers=[model[4]])
    assert state_equal(before, snapshot(model))


def test_a_taylor_loss_that_changes_the_model_is_caught():
    """strategy='taylor' runs the user's loss_fn between the trace and exec: the check that
    the model is still the traced one stays on."""
    model = _stale_model()
    x = torch.randn(1, 3, 12, 12)

    def loss_fn(m):
        loss = m(x).square().mean()
        m[0].bias = nn.Parameter(torch.zeros(9))  # changes the model it was given
        return loss

    with pytest.raises(tp.StaleGraphError):
        tp.prune_model(model, x, amount=0.5, strategy="taylor", loss_fn=loss_fn,
                       ignored_layers=[model[4]])
