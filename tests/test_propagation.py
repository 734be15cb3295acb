"""The closure's bookkeeping and the words of its problems (prune_explorer/propagation.py),
read directly: a user who gets a refusal must be told which tensor and which op, by name."""

import numpy as np
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer import propagation as pg


def _build(model, x):
    return tp.DependencyGraph().build_dependency(model.eval(), x)


def _vertex(DG, value: int, dim: int) -> int:
    return DG.dg.vertex_of[(value, dim)]


def _node_of(DG, module: str) -> str:
    return next(n.id for n in DG.graph.nodes.values() if n.module == module)


def test_closure_counts_and_indices():
    cl = pg.Closure(dg=None, masks={2: np.array([False, True, True, False])})
    assert cl.pruned(2).tolist() == [1, 2] and cl.count(2) == 2
    # a vertex the closure never reached has nothing pruned: an empty array, not index 0
    assert cl.pruned(7).tolist() == [] and cl.pruned(7).dtype == np.int64
    assert cl.count(7) == 0


def test_vertices_are_described_by_tensor_name_and_shape():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(4, 8), nn.Conv2d(8, 2, 1))
    DG = _build(model, torch.randn(2, 3, 4, 4))
    w = _vertex(DG, DG.graph.param_values["0.weight"], 0)
    assert pg.describe_vertex(DG.dg, w) == "0.weight (dim 0 of [8, 3, 1, 1])"
    conv = DG.graph.nodes[_node_of(DG, "0")]
    out = _vertex(DG, conv.outputs[0], 1)
    assert pg.describe_vertex(DG.dg, out) == f"the output of {conv.id} (dim 1 of [2, 8, 4, 4])"
    groups = [v for v, vi in DG.dg.virtuals.items() if vi.name == "groups"]
    assert len(groups) == 1
    assert pg.describe_vertex(DG.dg, groups[0]) == f"the groups of {DG.dg.virtuals[groups[0]].node}"
    # removing all 8 rows of the weight: the problem names the tensor, and blames its owner
    cl = pg.close(DG.dg, {w: np.arange(8)})
    first = cl.problems[0]
    assert first.kind == "all-channels" and first.node == "0.weight"
    assert "remove all 8 entries of 0.weight (dim 0 of [8, 3, 1, 1])" in first.message


def test_the_model_output_is_read_by_the_caller_not_by_an_op():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    DG = _build(model, torch.randn(2, 3))
    out = _vertex(DG, DG.graph.outputs[0], 1)
    # the output's only reader is the caller: with the change allowed there is no problem
    assert pg.close(DG.dg, {out: np.array([1])}, allow_output_change=True).problems == []
    kinds = [p.kind for p in pg.close(DG.dg, {out: np.array([1])}).problems]
    assert kinds == ["model-output"]


def test_a_constant_is_blamed_on_the_op_that_reads_it():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)
            self.scale = torch.linspace(1, 2, 8).view(1, 8, 1, 1)  # a plain tensor attribute

        def forward(self, x):
            return self.head(self.conv(x) * self.scale)

    DG = _build(Scaled(), torch.randn(2, 3, 4, 4))
    conv = DG.graph.nodes[_node_of(DG, "conv")]
    cl = pg.close(DG.dg, {_vertex(DG, conv.outputs[0], 1): np.array([2])})
    [p] = [p for p in cl.problems if p.kind == "constant"]
    assert DG.graph.nodes[p.node].type == "mul"
    assert f"constant tensor of shape [1, 8, 1, 1] used by {p.node} along dim 1" in p.message


def test_op_names_in_messages():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1))
    DG = _build(model, torch.randn(1, 3, 4, 4))
    nid = _node_of(DG, "0")
    # a whole layer (an opaque layer's call), data leaving torch, an unknown call
    assert pg._op_name(DG.dg, (nid, -1)) == "Conv2d"
    assert pg._op_name(DG.dg, (nid, -2)) == "Tensor.Conv2d(), data leaving torch"
    assert pg._op_name(DG.dg, None) == pg._op_name(DG.dg, ("nowhere", 0)) == "unknown op"


def _same_closure(a, b):
    assert a.order == b.order  # the same visit, level by level, groups in seed order
    assert a.parent == b.parent and set(a.masks) == set(b.masks)
    for v in b.order:
        assert np.array_equal(a.masks[v], b.masks[v]), v
        assert a.count(v) == b.count(v) and a.pruned(v).tolist() == b.pruned(v).tolist()
    assert [p.message for p in a.problems] == [p.message for p in b.problems]


def test_union_of_identities_is_the_closure_of_all_seeds():
    """prune_model assembles its combined closure from each group's probe when every group
    meets identities only; it must be what closing all seeds at once gives, visit order and
    parents included (a plan lists its steps in that order)."""
    import torchvision
    from prune_explorer.groups import find_groups
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small().eval()
    DG = _build(model, torch.randn(1, 3, 64, 64))
    groups = [g for g in find_groups(DG) if g.prunable]
    identity = [g for g in groups if g.closure is not None]
    assert len(identity) >= 10
    rng = np.random.default_rng(0)
    seeds = []
    for g in identity:
        k = int(rng.integers(1, g.size))
        seeds.append((g, np.sort(rng.choice(g.size, k, replace=False))))
    got = pg.union_of_identities(DG.dg, [(g.closure, idxs) for g, idxs in seeds])
    want = pg.close(DG.dg, {g.vertex: idxs for g, idxs in seeds})
    assert got is not None and not want.problems
    _same_closure(got, want)
    # every channel of a group is close()'s case: nothing is assembled
    g = identity[0]
    assert pg.union_of_identities(DG.dg, [(g.closure, np.arange(g.size))]) is None


def test_groups_meeting_a_concat_keep_no_identity_closure():
    """A concat maps channels with an offset: its group is not assembled from identities."""
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 5, 1)
            self.c, self.d = nn.Conv2d(9, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.d(torch.relu(self.c(torch.cat([self.a(x), self.b(x)], 1))))

    from prune_explorer.groups import find_groups
    DG = _build(Cat(), torch.randn(1, 3, 8, 8))
    by_root = {g.root: g for g in find_groups(DG)}
    assert by_root["a"].closure is None and by_root["b"].closure is None
    assert by_root["c"].closure is not None and by_root["a"].channel_units
