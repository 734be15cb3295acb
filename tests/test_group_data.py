"""group_data: the engine's coupling data the one-file report plans from, checked without a
browser. The page's replay of the whole plan is checked in Chromium (test_report_page.py);
here, that the data is the engine's: its relations replayed by the engine's own closure give
the engine's masks, its picks are select_channels', its problems _check's, its costs the
registry's."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer import index_mapping as im
from prune_explorer import propagation
from prune_explorer.dimgraph import BlockRel, DimGraph, MapRel
from prune_explorer.group_data import (decode_indices, decode_owner, encode_indices,
                                       encode_owner, group_data)
from prune_explorer.select import select_channels

tv = pytest.importorskip("torchvision")


def build(model, x):
    return tp.DependencyGraph().build_dependency(model.eval(), x, verbose=False)


class GroupedShuffle(nn.Module):
    """conv -> grouped conv (4 groups) -> channel shuffle -> depthwise -> conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.b = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = self.g(self.a(x))
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.b(self.dw(x))


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 64)
        self.mha = nn.MultiheadAttention(64, 4, batch_first=True)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        h = self.inp(x)
        return self.out(self.mha(h, h, h)[0])


class Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), torch.relu(self.b(x))], 1))


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return build(tv.models.resnet18(), torch.randn(1, 3, 64, 64))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return {"grouped": build(GroupedShuffle(), torch.randn(1, 3, 8, 8)),
            "attn": build(Attn(), torch.randn(1, 5, 16)),
            "cat": build(Cat(), torch.randn(1, 3, 8, 8))}


_DATA: dict[int, dict] = {}


def data_of(DG) -> dict:
    """group_data(DG) at the defaults, once per graph (as JSON, the way the page reads it)."""
    if id(DG) not in _DATA:
        _DATA[id(DG)] = json.loads(json.dumps(group_data(DG)))
    return _DATA[id(DG)]


# ---- encodings ----------------------------------------------------------------------------------
def test_owner_runs_round_trip_and_stay_small():
    cases = {  # owner array -> how many runs it must take
        "identity": (np.arange(2048), 1),
        "concat piece": (im.concat_maps([64, 32, 128])[1].owner, 3),
        "flatten": (im.flatten_owner(512, 49).owner, 1),
        "repeat": (im.repeat_map(16, 4).owner, 4),
        "repeat_interleave": (im.repeat_interleave_map(8, 3).owner, 1),
        "split piece": (im.split_maps(96, [32, 64])[1].owner, 1),
    }
    for name, (owner, runs) in cases.items():
        enc = encode_owner(owner)
        assert len(enc) == runs, (name, enc)
        assert np.array_equal(decode_owner(enc), owner), name
    rng = np.random.default_rng(0)
    for _ in range(50):
        o = rng.integers(-1, 6, size=int(rng.integers(1, 40)))
        assert np.array_equal(decode_owner(encode_owner(o)), o)
    assert encode_owner(np.array([-1, -1, 0, 1, 2])) == [[2, -1, 0, 1], [3, 0, 1, 1]]


def test_indices_encoding_round_trips():
    assert encode_indices([2, 6, 9], 64) == [2, 6, 9]  # short lists stay lists
    big = list(range(0, 2048, 3))
    enc = encode_indices(big, 2048)
    assert isinstance(enc, str) and enc.startswith("b64:") and len(enc) < 400
    assert decode_indices(enc, 2048) == big
    assert decode_indices([2, 6, 9], 64) == [2, 6, 9]


# ---- the data is the engine's ---------------------------------------------------------------
def replayed(data) -> DimGraph:
    """A DimGraph made only from the exported data: sizes, fixed and head flags, relations
    (owner maps decoded from runs), adjacency rebuilt as the page rebuilds it."""
    dg = DimGraph(None)
    dg.size = list(data["size"])
    dg.fixed = np.array([c == "1" for c in data["fixed"]])
    dg._head_like = np.array([c == "1" for c in data["head"]])
    dg.adj = [[] for _ in dg.size]
    for ri, r in enumerate(data["rels"]):
        if r == 0:
            dg.rels.append(None)
            continue
        if r[0] == "m":
            owner = None if r[3] is None else im.OwnerMap(
                dg.size[r[1]], dg.size[r[2]], decode_owner(r[3]))
            dg.rels.append(MapRel(r[1], r[2], owner, data["nodes"][r[4]][0], ""))
            dg.adj[r[1]].append(ri)
            if r[2] != r[1]:
                dg.adj[r[2]].append(ri)
        else:
            dg.rels.append(BlockRel(r[1], r[2], data["nodes"][r[3]][0], r[4]))
            for x in set(r[1]) | set(r[2]):
                dg.adj[x].append(ri)
    return dg


def engine_adjacency(dg) -> list[list[int]]:
    """The engine's adjacency without the relations closure skips (AbsorbRel)."""
    return [[ri for ri in a if isinstance(dg.rels[ri], (MapRel, BlockRel))] for a in dg.adj]


def test_exported_relations_replay_the_engine_closure(r18, small, monkeypatch):
    rng = random.Random(0)
    for name, DG in [("resnet18", r18)] + list(small.items()):
        data = data_of(DG)
        copy = replayed(data)
        assert [[ri for ri in a] for a in copy.adj] == engine_adjacency(DG.dg), name
        for layer, entry in data["layers"].items():
            v = entry.get("out")
            if not isinstance(v, int):
                continue
            n = DG.dg.size[v]
            for policy in ("cheapest", "heads", "dims"):
                idxs = np.array(sorted(rng.sample(range(n), rng.randint(1, max(1, n - 1)))))
                want = propagation.close(DG.dg, {v: idxs}, policy=policy)
                with monkeypatch.context() as m:  # _check reads the graph: not exported
                    m.setattr(propagation, "_check", lambda cl, allow: None)
                    got = propagation.close(copy, {v: idxs}, policy=policy)
                assert got.order == want.order, (name, layer, policy)
                assert all(np.array_equal(got.masks[x], want.masks[x]) for x in want.order)
                assert got.parent == want.parent and got.expanded == want.expanded
                # every vertex a plan reaches has the facts the page needs
                assert all(str(x) in data["vx"] for x in want.order if want.count(x))


def test_a_layer_belongs_to_the_group_of_its_output_channels(r18):
    data = data_of(r18)
    group = lambda layer: data["groups"][data["layers"][layer]["group"]]  # noqa: E731
    # layer1's blocks add their conv2/bn2 outputs to the stem's channels: one residual group
    assert group("layer1.1.bn2")["root"] == "conv1" and group("layer1.1.bn2")["kind"] == "residual"
    # layer2.0.conv1 *reads* that stream, but its own output channels are a group of their own
    assert group("layer2.0.conv1")["root"] == "layer2.0.conv1"
    assert group("layer2.0.conv1")["kind"] == "channels" and group("layer2.0.conv1")["size"] == 128
    assert isinstance(data["layers"]["relu"]["out"], str)  # a ReLU has no channels to plan from


def test_picks_are_select_channels(r18, small):
    for DG in [r18] + list(small.values()):
        data, scores = data_of(DG), {}
        for layer, entry in data["layers"].items():
            if not isinstance(entry.get("out"), int):
                continue
            try:
                sel = select_channels(DG, layer, "l1", 0.3, cache=scores)
            except tp.errors.PruningError as exc:
                assert entry["pick"] == str(exc)
                continue
            if sel.idxs:
                assert decode_indices(entry["pick"], DG.dg.size[entry["out"]]) == sel.idxs, layer


def page_problems(data, cl) -> list[str]:
    """The page's check (report_engine.js check()), from the exported per-vertex facts."""
    out = []
    for v in cl.order:
        m, f = cl.masks[v], data["vx"][str(v)]
        if not m.any():
            continue
        if m.sum() >= len(m):
            out.append(f"the plan would remove all {len(m)} entries of {f['lab']}; prune fewer "
                       f"channels so that every coupled layer keeps at least one")
        bad = "cov" in f and not decode_owner(f["cov"])[m].all()
        out += f.get("pru", []) if bad else f.get("pr", [])
    return out


def test_problems_are_the_engines_messages(r18, small):
    for DG, layer, idxs in [(r18, "fc", [3]), (r18, "fc", list(range(999))),
                            (small["cat"], "c", [1]), (small["attn"], "out", [0, 1])]:
        data = data_of(DG)
        plan = DG.get_pruning_plan(layer, "out", idxs, strict=False)
        assert plan.problems, layer  # the classifier's output is the model's: pinned
        assert page_problems(data, plan._closure) == [p.message for p in plan.problems]
    assert "the model output" in page_problems(
        data_of(r18), r18.get_pruning_plan("fc", "out", [3], strict=False)._closure)[0]


def test_opaque_costs_are_the_registry_polynomial(small):
    """nn.MultiheadAttention(64): removing n embedding dims removes 3n rows and n columns of
    in_proj (6*64n - 3n^2), 3n biases, n rows and columns of out_proj (2*64n - n^2) and n
    biases: 516 n - 4 n^2 parameters."""
    data = data_of(small["attn"])
    costs = data["opaque"]["mha"]
    names = [small["attn"].dg.virtuals[v].name for v in costs["verts"]]
    e = names.index("embed")
    assert sorted(costs["params"]) == sorted([[[e], 516], [[e, e], -4]])
    assert costs["macs"]  # fitted exactly on the registry's MAC formula too


def test_data_is_compact_json(r18):
    data = data_of(r18)
    assert len(json.dumps(data, separators=(",", ":"))) < 400_000
    # a residual stage is one relation per edge, not one index array per member
    assert all(r == 0 or r[0] != "m" or r[3] is None for r in data["rels"])
