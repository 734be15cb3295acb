"""Tracing: any inputs and outputs, control flow, modes, frozen and unwrapped parameters."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin, snapshot, state_equal


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Conv2d(3, 8, 3, padding=1)
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, image, tokens=None, flag=True):
        h = self.img(image).mean((2, 3))
        if tokens is not None:  # dynamic control flow on Python values
            h = h + self.emb(tokens).sum(1)
        if h.sum() > -1e9 and flag:  # ... and on tensor values
            h = F.relu(h)
        return {"logits": self.head(h), "features": (h,)}


@pytest.mark.parametrize("inputs", ["tuple", "dict"])
def test_tuple_and_dict_inputs_with_integer_tokens(inputs):
    model = TwoInputs().eval()
    image, tokens = torch.randn(2, 3, 6, 6), torch.randint(0, 20, (2, 5))
    x = (image, tokens) if inputs == "tuple" else {"image": image, "tokens": tokens}
    DG = tp.DependencyGraph().build_dependency(model, x, fixed_outputs="all")
    assert {n.kind for n in DG.graph.nodes.values()} >= {"input", "layer", "op", "output"}
    # with every output fixed, `features` may not change when the caller says so...
    with pytest.raises(tp.UnsupportedOperationError, match="model output"):
        DG.get_pruning_plan(model.img, "out", [1], allow_output_change=False)
    # ...while an explicit request is obeyed, with a warning naming the changed output
    with pytest.warns(UserWarning, match=r"img changes the model's output shape: \[2, 8\]"):
        plan = DG.get_pruning_plan(model.img, "out", [1])
    assert {s.target for s in plan.layer_steps} == {"img", "emb", "head"}
    plan.exec()
    out = model(*x) if inputs == "tuple" else model(**x)
    assert out["features"][0].shape == (2, 7)
    # by default only the primary output (the dict's first entry) keeps its shape
    DG = tp.DependencyGraph().build_dependency(model, x)
    DG.get_pruning_plan(model.img, "out", [0]).exec()
    out = model(*x) if inputs == "tuple" else model(**x)
    assert out["logits"].shape == (2, 4) and out["features"][0].shape == (2, 6)


@dataclass
class Output:
    logits: torch.Tensor
    aux: torch.Tensor


class DataclassOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 10)
        self.b = nn.Linear(10, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return Output(self.b(h), h.sum(-1))


def test_dataclass_outputs_are_found():
    model = DataclassOut().eval()
    x = torch.randn(4, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    assert len(DG.graph.outputs) == 2
    plan = DG.get_pruning_plan(model.a, "out", [0, 9])
    assert_matches_twin(model, plan, x)


def test_train_mode_is_kept_and_buffers_and_rng_untouched():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.Dropout(0.5), nn.Conv2d(6, 2, 1))
    model.train()
    before = snapshot(model)
    x = torch.randn(4, 3, 8, 8)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    DG = tp.DependencyGraph().build_dependency(model, x)
    assert torch.equal(torch.rand(3), expected_next)  # tracing did not consume randomness
    assert model.training and all(m.training for m in model.modules())
    assert state_equal(before, snapshot(model))  # running stats not updated by tracing
    DG.get_pruning_plan(model[0], "out", [1]).exec()
    assert model.training and model[1].running_mean.shape == (5,)


def test_eval_mode_kept():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2)).eval()
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
    assert not any(m.training for m in model.modules())


def test_frozen_parameters_are_pruned_too():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 9, 9)
    DG = tp.DependencyGraph().build_dependency(model.eval(), x)
    plan = DG.get_pruning_plan(model[2], tp.prune_related_conv, [0, 7])
    assert_matches_twin(model, plan, x)
    assert not model[0].weight.requires_grad and model[0].weight.shape[0] == 6


class TinyViT(nn.Module):
    """cls token, position embedding and a layer scale used directly in forward."""

    def __init__(self, dim=16, tokens=9):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, 2)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.fc1, self.fc2 = nn.Linear(dim, 32), nn.Linear(32, dim)
        self.gamma = nn.Parameter(torch.rand(dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = x + self.gamma * self.fc2(F.gelu(self.fc1(x)))
        return self.head(x[:, 0])


def test_unwrapped_parameters_follow_their_group():
    model = TinyViT().eval()
    x = torch.randn(2, 3, 6, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.patch, "out", [0, 5, 15])
    targets = {s.target: s.idxs for s in plan.layer_steps}
    for name in ("patch", "cls_token", "pos_embed", "gamma", "fc1", "fc2", "head"):
        assert name in targets, name
    assert targets["pos_embed"] == [0, 5, 15]
    assert_matches_twin(model, plan, x)
    assert model.cls_token.shape == (1, 1, 13) and model.pos_embed.shape == (1, 10, 13)
    # the MLP hidden dim is its own group
    plan = DG.get_pruning_plan(model.fc1, "out", list(range(0, 32, 2)))
    assert {s.target for s in plan.layer_steps} == {"fc1", "fc2"}
    assert_matches_twin(model, plan, x)


def test_graph_nodes_are_named_after_modules_and_calls():
    from torchvision.models import resnet18
    DG = tp.DependencyGraph().build_dependency(resnet18().eval(), torch.randn(1, 3, 32, 32))
    ids = set(DG.graph.nodes)
    assert {"conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.relu",
            "layer1.0.relu:1", "avgpool", "flatten", "fc", "input", "output"} <= ids
    assert DG.graph.nodes["layer1.0.relu:1"].call_index == 1
    assert DG.graph.nodes["flatten"].scope == ""
    assert DG.graph.nodes["layer1.0.add_"].scope == "layer1.0"


def test_tracing_leaves_no_hooks_or_modes_behind():
    model = nn.Sequential(nn.Linear(3, 3))
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks
    from torch.overrides import _get_current_function_mode_stack
    assert not _get_current_function_mode_stack()


class CachedBiasAttention(nn.Module):
    """TinyViT / LeViT style: in eval mode the per-head attention bias is computed once and
    kept in a plain dict. A trace must see how it is computed (so heads stay prunable), and a
    pruned model must not reuse the cached tensor of the old head count."""

    def __init__(self, dim=8, heads=4, tokens=5):
        super().__init__()
        self.num_heads, self.head_dim = heads, 4
        self.qkv = nn.Linear(dim, 3 * heads * 4)
        self.attention_biases = nn.Parameter(torch.randn(heads, tokens))
        self.attention_bias_cache = {}
        self.proj = nn.Linear(heads * 4, dim)

    def bias(self):
        if self.training:
            return self.attention_biases[:, :, None]
        if "cpu" not in self.attention_bias_cache:
            self.attention_bias_cache["cpu"] = self.attention_biases[:, :, None] * 1.0
        return self.attention_bias_cache["cpu"]

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * 0.5 + self.bias()).softmax(-1)
        self.last_attn = attn  # stored on the module: tracing must not leave it behind
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, -1))


@pytest.mark.parametrize("warm", [False, True])
def test_cached_tensors_are_traced_through_and_emptied_by_exec(warm):
    model = CachedBiasAttention().eval()
    x = torch.randn(2, 5, 8)
    if warm:  # a forward before tracing filled the cache (and set last_attn)
        with torch.no_grad():
            model(x)
    cache_before = dict(model.attention_bias_cache)
    DG = tp.DependencyGraph().build_dependency(model, x)
    # tracing left the module as it found it
    assert model.attention_bias_cache.keys() == cache_before.keys()
    assert all(model.attention_bias_cache[k] is v for k, v in cache_before.items())
    assert hasattr(model, "last_attn") == warm
    plan = DG.get_pruning_plan(model.qkv, "out", idxs=[0, 1, 2, 3])  # q's first head
    assert_matches_twin(model, plan, x)
    assert model.attention_biases.shape[0] == 3 and model.num_heads == 3


def test_a_failed_exec_keeps_the_graph_it_was_planned_on():
    class FixedReshape(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            if h.shape[-1] != 8:  # code that breaks on a pruned width
                raise ValueError("width must be 8")
            return self.b(h)

    model = FixedReshape().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(3, 4))
    graph, version, before = DG.graph, DG.version, snapshot(model)
    plan = DG.get_pruning_plan(model.a, "out", idxs=[1])
    with pytest.raises(tp.PlanExecutionError, match="restored"):
        DG.execute(plan, verify=True)
    assert state_equal(snapshot(model), before)
    assert DG.graph is graph and DG.version == version
    DG.get_pruning_plan(model.a, "out", idxs=[2])  # plans on the kept graph still work


def test_torch_layers_run_without_the_function_mode_and_it_comes_back():
    """Inside a torch layer with torch's own forward the function mode steps aside (its calls
    record no Python-level name); a subclass with its own forward, or a layer with a hook of
    its own, keeps it. A layer that raises mid-trace leaves the mode stack as it was."""
    from torch.overrides import _get_current_function_mode_stack

    class OwnForward(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), OwnForward(4, 4, 1), nn.Conv2d(4, 4, 1))
    model[2].register_forward_hook(lambda m, i, o: None)
    g = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 5, 5)).graph
    py = {nid: [c.py for c in n.calls] for nid, n in g.nodes.items() if n.calls}
    assert py["0"] == [None]
    assert py["1"][0] is not None and py["1"][0][0] == "conv2d"
    assert py["2"][0] is not None and py["2"][0][0] == "conv2d"

    bad = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Linear(7, 2))  # Linear gets 5 features
    with pytest.raises(tp.TracingError):
        tp.DependencyGraph().build_dependency(bad, torch.randn(1, 3, 5, 5))
    assert not _get_current_function_mode_stack()
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 5, 5))  # still traces


def test_a_forward_set_on_the_instance_keeps_the_function_mode():
    """A torch layer whose forward was replaced on the instance runs someone's code: its
    calls keep their Python-level names."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1))
    conv = model[1]
    conv.forward = lambda x: F.conv2d(x, conv.weight, conv.bias)
    g = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 5, 5)).graph
    assert g.nodes["0"].calls[0].py is None
    assert g.nodes["1"].calls[0].py[0] == "conv2d"


def test_records_made_positionally_equal_the_dataclasses():
    from prune_explorer.graph import Call, Node, Ref, Value, new_call, new_node, new_value
    v = (3, (1, 8, 4, 4), "float32", "activation", None, "conv1")
    assert new_value(*v) == Value(*v) and hash(new_value(*v)) == hash(Value(*v))
    assert new_value(*v).producer == "conv1" and new_value(*v).shape == (1, 8, 4, 4)
    c = ("aten.relu.default", (Ref(3),), {}, (4,), 7, ("relu", (), ()))
    assert new_call(*c) == Call(*c) and new_call(*c).macs == 7
    n = ("relu", "op", "ReLU", "", "relu", (3,), (4,), (new_call(*c),), False, 1, (), (2,),
         ((3, 1, 1, 1),))
    assert new_node(*n) == Node(*n) and new_node(*n).call_index == 1
    with pytest.raises(Exception):
        new_value(*v).shape = ()  # still frozen


def test_a_build_leaves_no_garbage_cycles():
    """The recorder and the function mode pointed at each other: every build left a cycle
    of its bookkeeping for the collector to find and scan."""
    import gc

    import torchvision
    model = torchvision.models.mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 64, 64)
    tp.DependencyGraph().build_dependency(model, x)  # warm: first-sight checks run once
    gc.collect()
    gc.disable()
    try:
        DG = tp.DependencyGraph().build_dependency(model, x)
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert DG.graph.nodes


def test_elementwise_torch_layers_run_without_the_function_mode():
    """Inside torch's own activation layers the function mode steps aside (nothing there
    needs a Python-level name); a functional call, or a subclass with its own forward, is
    still named."""
    class MyReLU(nn.ReLU):
        def forward(self, x):
            return F.relu(x) * 1.0

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.Hardswish()
            self.mine = MyReLU()

        def forward(self, x):
            return F.relu(self.mine(self.act(self.conv(x))))

    DG = tp.DependencyGraph().build_dependency(Net().eval(), torch.randn(1, 3, 8, 8))
    nodes = DG.graph.nodes
    assert [c.py for c in nodes["act"].calls] == [None]
    assert [c.py_fn for c in nodes["mine"].calls] == ["relu", "mul"]
    functional = [n for n in nodes.values() if n.type == "relu" and n.module is None]
    assert [c.py_fn for n in functional for c in n.calls] == ["relu"]
