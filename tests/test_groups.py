"""Groups read directly (prune_explorer/groups.py): their members, kind and labels on small
models whose answer can be written down."""

import numpy as np
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer import groups as gr


def _groups(model, x):
    DG = tp.DependencyGraph().build_dependency(model.eval(), x)
    return DG, {g.root: g for g in DG.groups()}


class Attention(nn.Module):
    """Single-head attention with bmm: no reshape into heads, but q and k are contracted."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(6, 8),
                                          nn.Linear(8, 6))

    def forward(self, x):
        a = torch.bmm(self.q(x), self.k(x).transpose(1, 2)).softmax(-1)
        return self.o(torch.bmm(a, self.v(x)))


def test_channels_read_by_an_attention_matmul_are_heads():
    _, groups = _groups(Attention(), torch.randn(2, 5, 6))
    assert groups["q"].kind == gr.KIND_HEADS and groups["v"].kind == gr.KIND_HEADS
    assert set(groups["q"].layers) == {"q", "k"}


class Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(7, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_labels_follow_a_concat_and_units_need_one_closure(monkeypatch):
    DG, groups = _groups(Cat(), torch.randn(1, 3, 4, 4))
    g = groups["a"]
    cat = next(n for n in DG.graph.nodes.values() if n.type == "cat")
    v = DG.dg.vertex_of[(cat.outputs[0], 1)]
    # channel c of a is channel c of the concat; b's channels 4..6 are not this group's
    assert gr.propagate_labels(DG, g)[v].tolist() == [0, 1, 2, 3, -1, -1, -1]
    # plain channels through one-to-one maps: the units are known after a single closure
    calls = []
    real = gr.close
    monkeypatch.setattr(gr, "close", lambda *a, **k: calls.append(1) or real(*a, **k))
    g.units = None
    units = gr.compute_units(DG, g)
    assert [u.tolist() for u in units] == [[0], [1], [2], [3]] and len(calls) == 1


class CatPlusC(nn.Module):
    """c is called first, so it roots the group; a and b reach it backwards through the
    concat that is added to c."""

    def __init__(self):
        super().__init__()
        self.c, self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        c = self.c(x)
        return self.head(torch.cat([self.a(x), self.b(x)], 1) + c)


def test_labels_follow_a_concat_backwards():
    DG, groups = _groups(CatPlusC(), torch.randn(1, 3, 4, 4))
    g = groups["c"]
    assert set(g.layers) >= {"a", "b", "c", "head"}
    labels = gr.propagate_labels(DG, g)
    out = lambda m: DG.dg.vertex_of[(DG.graph.nodes[next(  # noqa: E731
        n.id for n in DG.graph.nodes.values() if n.module == m)].outputs[0], 1)]
    # channel i of a is channel i of the concat; channel j of b is channel 4 + j
    assert labels[out("a")].tolist() == [0, 1, 2, 3]
    assert labels[out("b")].tolist() == [4, 5, 6, 7]
