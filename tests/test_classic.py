"""The classic README, verbatim, and the classic low-level functions."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import prune_explorer as tp
from oracle import assert_matches_twin, masked_twin, snapshot, state_equal

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


# ---------------------------------------------------------------------------------------------
# the whole 0.2.x namespace (enumerated from the released wheels 0.2.0-0.2.8, their imports of
# torch/typing/abc left out): every name exists, and the ones below behave
# ---------------------------------------------------------------------------------------------
CLASSIC_NAMES = {
    "tp": """BasePruner BasePruningFunction BatchnormPruner BatchnormPruning ConvInChannelPruner
        ConvOutChannelPruner ConvPruning Dependency DependencyGraph EmbeddingPruner
        GroupConvPruner GroupConvPruning LayernormPruner LinearInChannelPruner
        LinearOutChannelPruner LinearPruning MultiheadAttentionPruner PReLUPruner PReLUPruning
        ParameterPruner PruningPlan RelatedConvPruning RelatedLinearPruning dependency
        mask_bias mask_weight metric prune prune_batchnorm prune_conv prune_conv_in_channel
        prune_conv_out_channel prune_embedding prune_group_conv prune_layernorm prune_linear
        prune_linear_in_channel prune_linear_out_channel prune_multihead_attention
        prune_parameter prune_prelu prune_related_conv prune_related_linear
        set_global_metrics strategy structured unstructured utils""",
    "prune": """BasePruner BasePruningFunction BatchnormPruner BatchnormPruning
        ConvInChannelPruner ConvOutChannelPruner ConvPruning EmbeddingPruner GroupConvPruner
        GroupConvPruning LayernormPruner LinearInChannelPruner LinearOutChannelPruner
        LinearPruning MultiheadAttentionPruner PReLUPruner PReLUPruning ParameterPruner
        RelatedConvPruning RelatedLinearPruning mask_bias mask_weight prune_batchnorm
        prune_conv prune_conv_in_channel prune_conv_out_channel prune_embedding
        prune_group_conv prune_layernorm prune_linear prune_linear_in_channel
        prune_linear_out_channel prune_multihead_attention prune_parameter prune_prelu
        prune_related_conv prune_related_linear set_global_metrics strategy structured
        unstructured""",
    "prune.structured": """BasePruner BasePruningFunction BatchnormPruner BatchnormPruning
        ConvInChannelPruner ConvOutChannelPruner ConvPruning EmbeddingPruner GroupConvPruner
        GroupConvPruning LayernormPruner LinearInChannelPruner LinearOutChannelPruner
        LinearPruning MultiheadAttentionPruner PReLUPruner PReLUPruning ParameterPruner
        RelatedConvPruning RelatedLinearPruning prune_batchnorm prune_conv
        prune_conv_in_channel prune_conv_out_channel prune_embedding prune_group_conv
        prune_layernorm prune_linear prune_linear_in_channel prune_linear_out_channel
        prune_multihead_attention prune_parameter prune_prelu prune_related_conv
        prune_related_linear set_global_metrics""",
    "prune.unstructured": "mask_bias mask_weight",
    "prune.strategy": """BaseStrategy L1Strategy L2Strategy LNStrategy RandomStrategy
        round_pruning_amount""",
    "strategy": "BaseStrategy L1Strategy L2Strategy LNStrategy RandomStrategy round_pruning_amount",
    "utils": """TORCH_BATCHNORM TORCH_CONV TORCH_LINEAR TORCH_PRELU count_params
        count_prunable_channels count_prunable_params""",
    "dependency": """Dependency DependencyGraph Node OPTYPE PruningPlan TORCH_BATCHNORM
        TORCH_CONV TORCH_EMBED TORCH_LAYERNORM TORCH_LINEAR TORCH_MHA TORCH_PRELU
        count_prunable_channels flatten_as_list _prune_concat _prune_elementwise_op
        _prune_split""",
    "metric": "NormMetric TORCH_BATCHNORM TORCH_CONV TORCH_LINEAR TORCH_PRELU norm",
}


@pytest.mark.parametrize("where", sorted(CLASSIC_NAMES))
def test_every_classic_name_exists(where):
    obj = tp
    for part in where.split(".")[1:] if where.startswith("tp") else where.split("."):
        obj = getattr(obj, part)
    missing = [n for n in CLASSIC_NAMES[where].split() if not hasattr(obj, n)]
    assert not missing, f"tp.{where} lacks {missing}"


def test_classic_namespaces_are_the_same_objects():
    assert tp.prune.strategy is tp.strategy and tp.prune.structured is tp.structured
    assert tp.prune.prune_conv is tp.prune_conv is tp.prune.structured.prune_conv
    assert tp.dependency.DependencyGraph is tp.DependencyGraph
    assert tp.dependency.PruningPlan is tp.PruningPlan
    assert tp.utils.TORCH_CONV is nn.modules.conv._ConvNd


def test_count_prunable_channels_and_params():
    conv, lin, bn = nn.Conv2d(3, 7, 3), nn.Linear(5, 6, bias=False), nn.BatchNorm2d(4)
    deconv = nn.ConvTranspose2d(3, 5, 2)
    c = tp.utils.count_prunable_channels
    assert (c(conv), c(lin), c(bn), c(deconv), c(nn.PReLU(9)), c(nn.PReLU()), c(nn.ReLU())) == \
        (7, 6, 4, 5, 9, 0, 0)
    p = tp.utils.count_prunable_params
    # conv 7*3*3*3 + 7 bias; linear 30; BN weight, bias, running mean, running var
    assert (p(conv), p(lin), p(bn), p(nn.PReLU(9)), p(nn.PReLU()), p(nn.ReLU())) == \
        (196, 30, 16, 9, 0, 0)
    assert tp.dependency.count_prunable_channels is c


def test_optype_node_dependency_and_flatten():
    assert [int(tp.dependency.OPTYPE[n]) for n in ("CONV", "BN", "LINEAR", "PRELU",
                                                     "GROUP_CONV", "CONCAT", "MHA")] == \
        [0, 1, 2, 3, 4, 5, 12]
    t1, t2, t3 = torch.zeros(1), torch.ones(2), torch.ones(3)
    assert [x.numel() for x in tp.dependency.flatten_as_list(
        {"a": (t1, [t2]), "b": t3, "c": 5})] == [1, 2, 3]
    node = tp.dependency.Node(nn.BatchNorm2d(3), None, "bn")  # (module, grad_fn, node_name)
    assert node.type == tp.dependency.OPTYPE.BN and node.node_name.startswith("bn (BatchNorm2d")
    dep = tp.Dependency(tp.prune_conv, tp.prune_batchnorm, node)
    assert dep.is_triggered_by(tp.prune_conv) and not dep.is_triggered_by(tp.prune_linear)
    assert dep([0, 2], dry_run=True) == (node.module, 4) and node.module.num_features == 3
    assert str(dep) == f"<DEP: prune_conv => prune_batchnorm on {node.node_name}>"
    assert tp.dependency._prune_elementwise_op(node.module, [1]) == (node.module, 0)


def test_plan_steps_are_classic_dependencies():
    """``for dep, idxs in plan.plan``: dep.handler, dep.broken_node.module, dep(idxs)."""
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    DG.update_index()  # a no-op kept for 0.2.x scripts
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9])
    deps = {dep.broken_node.module: (dep, idxs) for dep, idxs in plan.plan
            if dep.broken_node.module is not None}
    dep, idxs = deps[model.bn1]
    assert dep.handler is tp.prune_batchnorm and idxs == [2, 6, 9]
    assert dep(idxs, dry_run=True) == (model.bn1, 6) and model.bn1.num_features == 64
    assert deps[model.layer1[0].conv1][0].handler is tp.prune_related_conv
    assert all(dep.handler is not None for dep, _ in plan.plan)
    assert DG.check_pruning_plan(plan) and model.conv1 in DG.module_to_node
    assert DG.module_to_node[model.conv1].node_name.startswith("conv1 (Conv2d")
    assert len(plan) == len(plan.plan)


def test_0_2_8_pruner_objects_and_metrics():
    conv = nn.Conv2d(3, 8, 3)
    layer, metrics = tp.prune_conv_out_channel(conv, [1, 5], dry_run=True)
    assert layer is conv and metrics == {"#params": 2 * 27 + 2} and conv.out_channels == 8
    norm = tp.metric.NormMetric(p=1)
    with torch.no_grad():
        conv.weight.fill_(0.5)
        conv.bias.fill_(-2.0)
    # two channels: L1 of each weight row (27 * 0.5) and of its bias (2): 2 * (13.5 + 2)
    assert float(norm(conv, [1, 5])) == pytest.approx(31.0)
    tp.prune_conv_out_channel.add_metric("l1", norm)
    try:
        _, metrics = tp.prune_conv_out_channel(conv, [0], dry_run=True)
        assert float(metrics["l1"]) == pytest.approx(15.5)
    finally:
        tp.set_global_metrics(None)  # back to {"#params": ...}
    layer, metrics = tp.prune_conv_in_channel(conv, [2])
    assert conv.in_channels == 2 and metrics == {"#params": 8 * 9}
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(2, 4))
    plan = DG.get_pruning_plan(model[2], tp.prune_linear_in_channel, idxs=[0, 1])
    assert {s.target: s.kind for s in plan.layer_steps} == {"2": "in", "0": "out"}
    plan.exec()
    assert model[0].out_features == 4 and model(torch.randn(2, 4)).shape == (2, 3)


def test_classic_custom_layer_by_subclassing_against_the_oracle():
    """The classic examples/customized_layer.py shape: subclass BasePruningFunction, wrap
    ``apply`` in a function, register it; the pruned model equals its masked twin."""
    from typing import Sequence

    class CustomizeLayer(nn.Module):
        def __init__(self, in_dim):
            super().__init__()
            self.in_dim = in_dim
            self.scale = nn.Parameter(torch.randn(in_dim))
            self.bias = nn.Parameter(torch.randn(in_dim))

        def forward(self, x):
            norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
            return torch.div(x, norm) * self.scale + self.bias

    class MyPruningFn(tp.prune.structured.BasePruningFunction):
        @staticmethod
        def prune_params(layer, idxs: Sequence[int]):
            keep = list(set(range(layer.in_dim)) - set(idxs))
            layer.in_dim -= len(idxs)
            layer.scale = nn.Parameter(layer.scale.data.clone()[keep])
            layer.bias = nn.Parameter(layer.bias.data.clone()[keep])
            return layer

        @staticmethod
        def calc_nparams_to_prune(layer, idxs):
            return 2 * len(idxs)

    def my_pruning_fn(layer, idxs, inplace=True, dry_run=False):
        return MyPruningFn.apply(layer, idxs, inplace, dry_run)

    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), CustomizeLayer(16), nn.Linear(16, 5))
    DG = tp.DependencyGraph()
    DG.register_customized_layer(CustomizeLayer, in_ch_pruning_fn=my_pruning_fn,
                                 out_ch_pruning_fn=my_pruning_fn, get_in_ch_fn=lambda l: l.in_dim,
                                 get_out_ch_fn=lambda l: l.in_dim)
    x = torch.randn(4, 12)
    DG.build_dependency(model, example_inputs=x)
    idxs = tp.strategy.L1Strategy()(model[0].weight, amount=0.4)
    plan = DG.get_pruning_plan(model[0], tp.prune_linear, idxs=idxs)
    custom = next(s for s in plan.steps if s.target == "2")
    assert custom.fn == "my_pruning_fn" and custom.params == 2 * len(idxs)
    # the twin zeroes fc rows and consumer columns; the custom layer's own slices are then
    # never read, and the zeroed channels add nothing to the norm it divides by
    assert_matches_twin(model, plan, x)
    assert model[2].in_dim == 16 - len(idxs) == model[3].in_features
    assert MyPruningFn.apply(model[2], [0], dry_run=True)[1] == 2  # dry run: unchanged
    assert model[2].scale.shape == (16 - len(idxs),)


# ---------------------------------------------------------------------------------------------
# explicit requests are obeyed, even when the model's output shape changes
# ---------------------------------------------------------------------------------------------
def test_explicit_request_on_the_classifier_changes_the_output_with_a_warning():
    model = resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    DG = tp.DependencyGraph().build_dependency(model, x)
    with pytest.warns(UserWarning, match=r"fc changes the model's output shape: \[1, 10\] -> "
                                         r"\[1, 7\]"):
        plan = DG.get_pruning_plan(model.fc, tp.prune_linear, idxs=[0, 4, 9])
    plan.exec()
    assert model(x).shape == (1, 7) and model.fc.weight.shape == (7, 512)
    with pytest.raises(tp.UnsupportedOperationError, match="model output"):
        DG.get_pruning_plan(model.fc, tp.prune_linear, idxs=[0], allow_output_change=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # allowed explicitly: no warning
        DG.get_pruning_plan(model.fc, tp.prune_linear, idxs=[0], allow_output_change=True)
    # whole-model pruning still refuses to change the output (it did not name the layer)
    report = tp.prune_model(model, x, amount=0.3, DG=DG)
    assert model(x).shape == (1, 7)
    assert any(root == "fc" and "model output" in why for root, why in report.skipped)


def test_segmentation_head_pruned_on_request():
    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.head = nn.Conv2d(8, 5, 1)

        def forward(self, x):
            y = self.head(self.body(x))
            return {"out": nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")}

    model = Seg().eval()
    x = torch.randn(2, 3, 16, 16)
    DG = tp.DependencyGraph().build_dependency(model, x, output_transform=lambda o: o["out"])
    with pytest.warns(UserWarning, match=r"\[2, 5, 16, 16\] -> \[2, 3, 16, 16\]"):
        DG.get_pruning_plan(model.head, tp.prune_conv, [1, 3]).exec()
    assert model(x)["out"].shape == (2, 3, 16, 16)
    # a body layer keeps the output: the masked twin agrees
    assert_matches_twin(model, DG.get_pruning_plan(model.body[0], tp.prune_conv, [0, 5]), x)


def test_multiple_inputs_and_outputs_classic_example():
    """examples/multiple_inputs_and_outputs.py: fc1's output is also a model output."""
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(128, 32), nn.Linear(64, 32)
            self.fc3 = nn.Linear(64, 100)

        def forward(self, x1, x2):
            x1, x2 = F.relu(self.fc1(x1)), F.relu(self.fc2(x2))
            return x1, x2, F.relu(self.fc3(torch.cat([x1, x2], dim=1)))

    model = Net().eval()
    x = [torch.randn(3, 128), torch.randn(3, 64)]
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    with pytest.warns(UserWarning, match=r"\[3, 32\] -> \[3, 29\]"):
        plan = DG.get_pruning_plan(model.fc1, tp.prune_linear, idxs=[1, 2, 30])
    twin = masked_twin(model, plan)
    with torch.no_grad():
        e1, e2, e3 = twin(*x)
    plan.exec()
    with torch.no_grad():
        g1, g2, g3 = model(*x)
    # the changed output is the twin's minus the pruned columns; the others are the twin's
    keep = [i for i in range(32) if i not in (1, 2, 30)]
    assert g1.shape == (3, 29) and torch.allclose(g1, e1[:, keep], atol=1e-6)
    assert torch.allclose(g2, e2, atol=1e-6) and torch.allclose(g3, e3, atol=1e-5)
    assert model.fc3.in_features == 61


def test_prune_embedding_prunes_the_hidden_size_through_bert():
    """The 0.x transformers example: tp.prune_embedding on embeddings.word_embeddings."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=48,
                                  max_position_embeddings=16)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 50, (2, 8))
    DG = tp.DependencyGraph()
    DG.build_dependency(model, example_inputs=ids, pruning_dim=-1)
    idxs = tp.strategy.L1Strategy()(model.embeddings.word_embeddings.weight.T, amount=0.25)
    assert len(idxs) == 8
    with pytest.warns(UserWarning, match="output shape"):
        plan = DG.get_pruning_plan(model.embeddings.word_embeddings, tp.prune_embedding, idxs)
    plan.exec()
    e = model.embeddings
    assert e.word_embeddings.weight.shape == (50, 24) and e.LayerNorm.weight.shape == (24,)
    assert e.position_embeddings.weight.shape == (16, 24)
    for layer in model.encoder.layer:
        att = layer.attention
        assert [att.self.query.in_features, att.self.key.in_features,
                att.self.value.in_features] == [24, 24, 24]
        assert att.self.query.out_features == 32  # heads untouched: only the hidden size
        assert att.output.dense.weight.shape == (24, 32)
        assert layer.intermediate.dense.weight.shape == (48, 24)
        assert layer.output.dense.weight.shape == (24, 48)
        assert layer.output.LayerNorm.normalized_shape == (24,)
    assert model.pooler.dense.weight.shape == (32, 24)
    out = model(ids)
    assert out.last_hidden_state.shape == (2, 8, 24) and out.pooler_output.shape == (2, 32)


# ---------------------------------------------------------------------------------------------
# empty requests and one-channel layers
# ---------------------------------------------------------------------------------------------
def test_empty_indices_give_a_plan_that_changes_nothing():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    before, version = snapshot(model), DG.version
    plan = DG.get_pruning_plan(model.layer1[0].conv1, tp.prune_conv, [])
    assert plan.params_removed == 0 and plan.idxs == [] and len(plan.steps) == 1
    assert "0 parameters will be pruned" in str(plan)
    assert plan.exec() == 0
    assert state_equal(before, snapshot(model)) and DG.version == version
    assert tp.history_of(model) == []


def test_a_layer_down_to_one_channel_still_has_a_plan():
    """The classic torchvision test loops until a layer has one channel left and then asks for
    ``min(ch // 2, 10)`` = 0 channels: that is a no-op; asking for its last channel is refused
    as removing every channel (not "no channels to prune")."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3))
    x = torch.randn(2, 3, 9, 9)
    DG = tp.DependencyGraph().build_dependency(model, x)
    while (ch := tp.utils.count_prunable_channels(model[0])) > 1:
        DG.get_pruning_plan(model[0], tp.prune_conv, list(range(ch // 2))).exec()
    assert model[0].out_channels == 1
    for layer, fn in ((model[0], tp.prune_conv), (model[1], tp.prune_batchnorm),
                      (model[3], tp.prune_related_conv)):
        assert DG.get_pruning_plan(layer, fn, []).exec() == 0
        with pytest.raises(tp.PruneAllChannelsError, match="every channel"):
            DG.get_pruning_plan(layer, fn, [0])
        with pytest.raises(tp.InvalidIndicesError, match="out of range"):
            DG.get_pruning_plan(layer, fn, [1])
    assert model(x).shape == (2, 6, 5, 5)


# ---------------------------------------------------------------------------------------------
# masking (unstructured)
# ---------------------------------------------------------------------------------------------
def test_mask_weight_and_bias_keep_the_union_of_masks():
    conv = nn.Conv2d(2, 3, 1)
    w = conv.weight.detach().clone()
    m1 = np.zeros(tuple(w.shape), dtype=int)
    m1[0] = 1
    m2 = np.zeros(tuple(w.shape), dtype=int)
    m2[2, 1] = 1
    assert tp.mask_weight(conv, m1) is conv
    tp.prune.unstructured.mask_weight(conv, m2)
    expect = torch.tensor(np.logical_or(m1, m2), dtype=w.dtype)
    assert torch.equal(conv.weight_mask, expect)
    tp.mask_bias(conv, torch.tensor([1, 0, 1]))
    x = torch.randn(1, 2, 4, 4)
    y = conv(x)
    ref = nn.functional.conv2d(x, w * expect, conv.bias * torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(y, ref)
    copy = tp.mask_weight(conv, m1, inplace=False)
    assert copy is not conv
    with pytest.raises(ValueError, match=r"weight mask .* shape \[2\].*\[3, 2, 1, 1\]"):
        tp.mask_weight(conv, np.ones(2))
    assert tp.mask_bias(nn.Linear(2, 2, bias=False), np.ones(2)).bias is None


# ---------------------------------------------------------------------------------------------
# the classic tests/test_torchvision_models.py shape: random conv/BN layers, random indices
# (a fast subset here; every torchvision classifier in tests/test_classic_zoo.py, slow)
# ---------------------------------------------------------------------------------------------
def classic_random_prune(model, x, rng, n_layers, oracle=True, output_transform=None):
    """Prune ``n_layers`` random Conv2d/BatchNorm2d layers, each by ``min(ch // 2, 10)``
    random channels, as the classic test does. A plan that keeps the output must match the
    masked twin; one that changes it (the warning says so) must shrink exactly that dim."""
    import random as _random
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    DG = tp.DependencyGraph().build_dependency(model, x, output_transform=output_transform,
                                               verbose=False)
    checked = changed = refused = 0
    order = rng.sample(layers, min(n_layers, len(layers)))
    spare = [m for m in layers if all(m is not o for o in order)]
    rng.shuffle(spare)
    while order:
        layer = order.pop(0)
        fn = tp.prune_conv if isinstance(layer, nn.Conv2d) else tp.prune_batchnorm
        ch = tp.utils.count_prunable_channels(layer)
        idxs = rng.sample(range(ch), min(ch // 2, 10))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                plan = DG.get_pruning_plan(layer, fn, idxs)
            except tp.PruneAllChannelsError:
                # the coupling really takes every channel (ShuffleNet: a channel shuffle
                # whose view needs equal halves, chained block after block): refused at
                # planning, before anything changed; another layer is drawn instead
                refused += 1
                if spare and refused <= 3 * n_layers:
                    order.append(spare.pop())
                continue
        if any("output shape" in str(w.message) for w in caught):
            before = [t.shape for t in outputs_of(model, x)]
            plan.exec()
            after = [t.shape for t in outputs_of(model, x)]
            assert any(a != b for a, b in zip(after, before))
            assert all(a[1] in (b[1], b[1] - len(plan.idxs)) for a, b in zip(after, before))
            changed += 1
        elif oracle and twin_is_exact(model, plan):
            assert_matches_twin(model, plan, x, atol=1e-4, rtol=1e-3)
            checked += 1
        else:
            before = [t.shape for t in outputs_of(model, x)]
            plan.exec()
            assert [t.shape for t in outputs_of(model, x)] == before
            checked += 1
    return checked, changed


def twin_is_exact(model, plan) -> bool:
    """The masked twin is exact unless the plan cuts a norm that mixes channels (LayerNorm,
    GroupNorm: zeroed channels still change the statistics) or the head dim of an
    nn.MultiheadAttention (its softmax scale follows the head dim)."""
    touched = {c[0].rpartition(".")[0] for c in plan.actions.cuts} | set(plan.actions.sync) | {
        m for m, _ in plan.actions.opaque}
    mods = [model.get_submodule(n) for n in touched if n in dict(model.named_modules())]
    return not any(isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention))
                   for m in mods)


def outputs_of(model, x):
    from oracle import outputs
    return outputs(model, x)


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("mobilenet_v2", 32),
                                       ("squeezenet1_1", 48)])
def test_random_layers_of_torchvision_classifiers(name, size):
    import random as _random
    import torchvision
    model = torchvision.models.get_model(name, weights=None).eval()
    for m in model.modules():  # random statistics, so a wrong BN slice shows in the output
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    rng = _random.Random(name)
    checked, changed = classic_random_prune(model, torch.randn(2, 3, size, size), rng, 3)
    assert checked + changed == 3
    if name == "squeezenet1_1":  # its classifier is a conv: prune it on request
        DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, size, size))
        with pytest.warns(UserWarning, match=r"\[1, 1000\] -> \[1, 990\]"):
            DG.get_pruning_plan(model.classifier[1], tp.prune_conv, list(range(10))).exec()
        assert model(torch.randn(1, 3, size, size)).shape == (1, 990)
