"""The classic README, verbatim, and the classic low-level functions."""

import torch
from torch import nn
from torchvision.models import resnet18

import prune_explorer as tp
from oracle import assert_matches_twin

CLASSIC_README = """
import torch
from torchvision.models import resnet18
import prune_explorer as tp

model = resnet18().eval()
strategy = tp.strategy.L1Strategy()            # or RandomStrategy(), L2Strategy()
DG = tp.DependencyGraph()
DG.build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
pruning_idxs = strategy(model.conv1.weight, amount=0.4)          # round_to=16 also works
plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9])
print(plan)
plan.exec()
"""


def test_classic_readme_runs_verbatim(capsys):
    scope = {}
    exec(CLASSIC_README, scope)
    out = capsys.readouterr().out
    assert "11211 parameters will be pruned" in out
    assert "<DEP: prune_conv => prune_batchnorm on bn1 (BatchNorm2d(64" in out
    assert "Index=[2, 6, 9], NumPruned=6]" in out
    model = scope["model"]
    assert model.conv1.out_channels == 61 and model.bn1.num_features == 61
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_classic_plan_counts_every_coupled_layer():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9])
    per_layer = {s.target: s.params for s in plan.steps if s.kind != "pass"}
    assert per_layer == {
        "conv1": 441, "bn1": 6, "layer1.0.conv1": 1728, "layer1.0.bn2": 6, "layer1.0.conv2": 1728,
        "layer1.1.conv1": 1728, "layer1.1.bn2": 6, "layer1.1.conv2": 1728,
        "layer2.0.conv1": 3456, "layer2.0.downsample.0": 384}
    assert plan.params_removed == 11211
    for s in plan.steps:
        assert s.idxs == [2, 6, 9]
    lines = [l for l in str(plan).splitlines() if l.startswith("[ <DEP:")]
    assert len(lines) == len(plan.steps)
    before = tp.utils.count_params(model)
    assert plan.exec() == 11211
    assert before - tp.utils.count_params(model) == 11211


def test_graph_follows_the_model_after_exec():
    """A second plan on the same DG sees the new channel counts without re-tracing."""
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 64, 64))
    DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9]).exec()
    plan = DG.get_pruning_plan(model.layer1[0].conv1, tp.prune_conv, [0, 60])
    assert_matches_twin(model, plan, torch.randn(2, 3, 64, 64))
    assert model.layer1[0].conv1.weight.shape == (62, 61, 3, 3)
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[60])  # 61 channels now
    assert plan.params_removed > 0


def test_classic_prune_loop_over_blocks():
    """The classic CIFAR example: prune every BasicBlock's convs with L1 in a loop."""
    from torchvision.models.resnet import BasicBlock
    model = resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    DG = tp.DependencyGraph().build_dependency(model, x)
    strategy = tp.strategy.L1Strategy()
    before = tp.utils.count_params(model)
    for m in model.modules():
        if isinstance(m, BasicBlock):
            for conv in (m.conv1, m.conv2):
                idxs = strategy(conv.weight, amount=0.2)
                DG.get_pruning_plan(conv, tp.prune_conv, idxs).exec()
    assert tp.utils.count_params(model) < 0.75 * before
    assert model(x).shape == (1, 10)


def test_strategy_semantics():
    w = torch.arange(64 * 3, dtype=torch.float32).reshape(64, 3) - 50
    l1 = tp.strategy.L1Strategy()
    idxs = l1(w, amount=0.4)
    assert len(idxs) == 25
    norms = w.abs().sum(1)
    assert max(norms[idxs]) <= min(norms[[i for i in range(64) if i not in idxs]])
    assert len(l1(w, amount=0.4, round_to=16)) == 32  # 64 - 32 = 32 is a multiple of 16
    assert len(l1(w, amount=10)) == 10  # an int is a count
    assert len(tp.strategy.L2Strategy()(w, amount=0.5)) == 32
    r = tp.strategy.RandomStrategy()(w, amount=0.25)
    assert len(r) == 16 and len(set(r)) == 16 and all(0 <= i < 64 for i in r)
    for amount in (round_to_ok := [(0.5, 8), (0.3, 4), (0.9, 16)]):
        k = len(l1(w, amount=amount[0], round_to=amount[1]))
        assert (64 - k) % amount[1] == 0 and 64 - k >= amount[1]


def test_low_level_functions_fix_dependencies_by_hand():
    model = resnet18().eval()
    tp.prune_conv(model.conv1, idxs=[2, 6, 9])
    tp.prune_batchnorm(model.bn1, idxs=[2, 6, 9])
    for block in model.layer1:
        tp.prune_related_conv(block.conv1, idxs=[2, 6, 9])
        tp.prune_conv(block.conv2, idxs=[2, 6, 9])
        tp.prune_batchnorm(block.bn2, idxs=[2, 6, 9])
    tp.prune_related_conv(model.layer2[0].conv1, idxs=[2, 6, 9])
    tp.prune_related_conv(model.layer2[0].downsample[0], idxs=[2, 6, 9])
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert tp.utils.count_params(model) == tp.utils.count_params(resnet18()) - 11211


def test_low_level_signature_and_dry_run():
    lin = nn.Linear(8, 6)
    layer, n = tp.prune_linear(lin, [0, 1], dry_run=True)
    assert layer is lin and n == 2 * 8 + 2 and lin.out_features == 6
    copy, n = tp.prune_linear(lin, [0, 1], inplace=False)
    assert copy is not lin and copy.out_features == 4 and lin.out_features == 6
    layer, n = tp.prune_related_linear(lin, [3])
    assert lin.in_features == 7 and n == 6
    prelu = nn.PReLU(5)
    assert tp.prune_prelu(prelu, [1])[1] == 1 and prelu.num_parameters == 4
    shared = nn.PReLU()
    assert tp.prune_prelu(shared, [1])[1] == 0


def test_build_dependency_returns_self_and_accepts_classic_kwargs():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 32, 32),
                                               pruning_dim=1, output_transform=None,
                                               verbose=False)
    assert isinstance(DG, tp.DependencyGraph)
    plan = DG.get_pruning_plan(model.fc, tp.prune_related_linear, idxs=[0, 1])
    assert {s.target for s in plan.layer_steps} >= {"fc", "layer4.1.conv2", "layer4.1.bn2"}
