"""After exec the graph follows the model without a new trace (prune_explorer/graph_update.py):
after many executed plans, the projected graph and dim graph must be what a fresh trace of the
pruned model gives — shapes, recorded arguments, relations, owner maps, coverage — and plans
that change Python-level sizes must fall back to a real trace."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import prune_explorer as tp
from prune_explorer.dimgraph import BlockRel, MapRel


def _owner(rel: MapRel):
    """An owner map as its array (identity spelled out), for a semantic comparison."""
    if rel.owner is None:
        return None
    return (rel.owner.size_a, rel.owner.size_b, rel.owner.owner.tolist())


def _identity(o) -> bool:
    return o is None or (o[0] == o[1] and o[2] == list(range(o[1])))


def assert_same_graph(projected: tp.DependencyGraph, fresh: tp.DependencyGraph) -> None:
    g, f = projected._graph, fresh._graph
    assert {v: x.shape for v, x in g.values.items()} == {v: x.shape for v, x in f.values.items()}
    assert g.values == f.values
    for nid, node in f.nodes.items():
        assert g.nodes[nid] == node, nid
    assert g.nodes.keys() == f.nodes.keys()
    assert g.fingerprint == f.fingerprint
    a, b = projected._dg, fresh._dg
    assert a.size == b.size and a.key == b.key
    assert len(a.rels) == len(b.rels)
    for ra, rb in zip(a.rels, b.rels):
        assert type(ra) is type(rb) and ra.node == rb.node and ra.why == rb.why
        if isinstance(ra, MapRel):
            assert (ra.a, ra.b) == (rb.a, rb.b)
            oa, ob = _owner(ra), _owner(rb)
            assert oa == ob or (_identity(oa) and _identity(ob)), (ra, rb)
        elif isinstance(ra, BlockRel):
            assert (ra.left, ra.right) == (rb.left, rb.right)
    assert a.cover.keys() == b.cover.keys()
    for v, c in a.cover.items():
        assert (c is True and b.cover[v] is True) or np.array_equal(c, b.cover[v]), v
    assert np.array_equal(a.fixed, b.fixed)
    assert a.virtuals == b.virtuals
    assert sorted(a.unknown) == sorted(b.unknown)


def _count_traces(monkeypatch, DG) -> list:
    calls = []
    real = DG._trace

    def counted():
        calls.append(1)
        real()
    monkeypatch.setattr(DG, "_trace", counted)
    return calls


def _loop(model, x, layers, rounds, monkeypatch, amount=0.2, seed=0):
    DG = tp.DependencyGraph().build_dependency(model, x)
    traces = _count_traces(monkeypatch, DG)
    rng = random.Random(seed)
    done = 0
    for _ in range(rounds):
        for layer in layers:
            n = layer.weight.shape[0]
            k = max(1, int(amount * n))
            if n - k < 2:
                continue
            idxs = sorted(rng.sample(range(n), k))
            plan = DG.get_pruning_plan(layer, tp.prune_conv if isinstance(
                layer, nn.Conv2d) else tp.prune_linear, idxs=idxs, strict=False)
            if plan.problems:
                continue
            plan.exec()
            done += 1
    DG.graph  # catch up with the last exec
    return DG, traces, done


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121",
                                  "shufflenet_v2_x0_5"])
def test_the_projected_graph_is_a_fresh_trace(name, monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    layers = convs[:: max(1, len(convs) // 8)]
    DG, traces, done = _loop(model, x, layers, 2, monkeypatch)
    assert done >= 6
    fresh = tp.DependencyGraph().build_dependency(model, x)
    assert_same_graph(DG, fresh)
    # the depthwise convs of MobileNetV2 and the shuffles of ShuffleNet follow through groups
    # and reshapes; everything here is tensor surgery, so nothing was traced again
    assert len(traces) == 0, f"{len(traces)} of {done} execs traced the model again"


class Heads(nn.Module):
    """An attention block that reshapes with its own num_heads: pruning a head changes a
    Python int, which the graph cannot follow without running the code again."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim = 2, 4
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        a = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)).softmax(-1)
        y = (a @ v.transpose(1, 2)).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(y)


def test_a_plan_that_changes_python_sizes_is_traced_again(monkeypatch):
    torch.manual_seed(0)
    model = Heads().eval()
    x = torch.randn(1, 5, 8)
    DG = tp.DependencyGraph().build_dependency(model, x)
    traces = _count_traces(monkeypatch, DG)
    plan = DG.get_pruning_plan(model.qkv, "out", idxs=[0], policy="heads")
    assert plan.actions.ints  # num_heads (or head_dim) is updated
    plan.exec()
    assert len(traces) == 0  # lazily: only when the graph is next used
    DG.get_pruning_plan(model.qkv, "out", idxs=[1], policy="heads")
    assert len(traces) == 1
    assert_same_graph(DG, tp.DependencyGraph().build_dependency(model, x))


def test_a_dim_down_to_one_entry_is_traced_again(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(model, x)
    traces = _count_traces(monkeypatch, DG)
    DG.get_pruning_plan(model[0], tp.prune_conv, idxs=[0, 2]).exec()
    DG.graph
    assert len(traces) == 1  # size-1 dims have no vertex: the rules must run again
    assert_same_graph(DG, tp.DependencyGraph().build_dependency(model, x))


def test_undo_gives_back_the_graph_of_before(monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    DG = tp.DependencyGraph().build_dependency(model, x)
    graph, dg = DG.graph, DG.dg
    traces = _count_traces(monkeypatch, DG)
    plan = DG.get_pruning_plan(model.layer1[0].conv1, tp.prune_conv, idxs=[1, 5])
    plan.exec()
    assert DG.graph is not graph
    DG.undo()
    assert DG.graph is graph and DG.dg is dg and len(traces) == 0
    DG.get_pruning_plan(model.layer1[0].conv1, tp.prune_conv, idxs=[2]).exec()


class SavedStatistics(nn.Module):
    """Ops with outputs nobody reads whose shapes still follow the channels: batch norm's
    saved mean and inverse std (train mode), attention's logsumexp (per head)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)
        self.bn = nn.BatchNorm2d(12)
        self.qkv = nn.Linear(12, 36)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        t = self.bn(self.conv(x)).flatten(2).transpose(1, 2)         # [1, 4, 12]: 4 tokens
        q, k, v = self.qkv(t).reshape(1, 4, 3, -1, 4).permute(2, 0, 3, 1, 4)  # 3 heads of 4
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.head(o.transpose(1, 2).reshape(1, 4, -1))


def test_outputs_nobody_reads_follow_in_the_projected_graph(monkeypatch):
    model = SavedStatistics().train()
    x = torch.randn(1, 3, 2, 2)
    DG = tp.DependencyGraph().build_dependency(model, x)
    traces = _count_traces(monkeypatch, DG)
    DG.get_pruning_plan(model.conv, "out", [1, 6]).exec()  # the saved statistics: 10
    DG.get_pruning_plan(model.qkv, "out", [4], policy="heads").exec()  # all of head 1
    assert model.qkv.out_features == 24 and model.head.in_features == 8
    DG.graph
    assert len(traces) == 0
    assert_same_graph(DG, tp.DependencyGraph().build_dependency(model, x))
