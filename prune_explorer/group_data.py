"""The engine's coupling data as plain JSON, so a page with no kernel can replay
``DG.get_pruning_plan(layer, side, idxs, policy=...)`` exactly (the one-file report).

    data = group_data(DG, amount=0.3)          # a JSON-able dict
    json.dumps(data)

The page never decides a coupling. It runs the engine's closure (``propagation.close``) over
the relations the op rules declared, exported here as they are — owner maps (compressed to
runs), reshape blocks with their dims, which dims are fixed or index heads — and assembles the
steps as ``PlanBuilder`` does, from facts computed here per (tensor, dim) vertex: which step a
weight dim belongs to, which nodes a value touches, the problems a vertex raises when pruned
(the engine's own messages), the MAC formula of every node a plan can shrink, and the notes
``explain`` words the "why" from. So typed indices widen through heads and groups exactly as the
engine widens them, under any policy, from any layer of a group.

Format (``FORMAT``), every id an index into the lists named:

- ``size`` (per vertex), ``fixed`` and ``head`` (one "0"/"1" character per vertex);
- ``rels``: ``["m", a, b, owner, node, note, note_if_head]`` (``b[i] <- a[owner[i]]``, owner
  ``null`` for identity, else runs ``[length, start, step, repeat]``: ``start + step * (k //
  repeat)``; a start of -1 is "not from a"), ``["b", left, right, node, why, note, flatten]``
  (a reshape), or ``0`` (a relation closure ignores); a vertex's relations are, in order, those
  that name it (the engine's adjacency);
- ``nodes``: ``[id, is_op, type, activation_inputs, output_vertices]`` (``is_op`` -1: a name
  only); ``values``: ``{id: [kind, name, shape, vertex_per_dim]}``; ``tensors``: ``[name,
  shape, is_parameter]``; ``steps``: ``[target, kind, fn, module_repr, nodes]``;
- ``vx``: per vertex a plan can reach, ``{"k": "p"|"a"|"v", ...}`` (see ``_vertex_facts``);
- ``macs``: ``{node: [traced MACs, [[formula, ...], ...]]}``;
- ``layers``: ``{module: {"nodes", "out"/"in": vertex or the engine's error, "pick": the
  strategy's channels at ``amount`` (or why none), "group"}}``; ``groups``: ``DG.groups()``.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from torch import nn

from . import index_mapping as im
from .dimgraph import BlockRel, MapRel, union_find
from .errors import PruningError
from .explain import _RESHAPES, _note
from .graph import ACTIVATION, BUFFER, CONSTANT, INPUT, NODE_OP, PARAM
from .plan_builder import PlanBuilder, _classic_fn, _pass_fn, _short
from .cost_data import mac_formula, opaque_costs
from .propagation import Closure, _check, close, describe_vertex

if TYPE_CHECKING:  # pragma: no cover
    from .traced_view import TracedView

FORMAT = "prune_explorer.group_data/1"
_KIND = {PARAM: "p", BUFFER: "b", INPUT: "i", CONSTANT: "c", ACTIVATION: "a"}


# ---- owner maps as runs -----------------------------------------------------------------------
def encode_owner(owner: np.ndarray) -> list[list[int]]:
    """``owner`` as runs ``[length, start, step, repeat]``: identity, offsets, repeats and
    flatten's ``f // inner`` are one run each, a concat piece three."""
    o = np.asarray(owner, dtype=np.int64)
    if len(o) == 0:
        return []
    cut = np.flatnonzero(np.diff(o)) + 1
    starts = np.concatenate(([0], cut))
    vals = o[starts]
    counts = np.diff(np.concatenate((starts, [len(o)])))
    runs: list[list[int]] = []
    j, n = 0, len(vals)
    while j < n:
        v, rep = int(vals[j]), int(counts[j])
        k = j + 1
        step = 0
        if v >= 0 and k < n and vals[k] >= 0 and counts[k] == rep:
            step = int(vals[k] - v)
            while k < n and vals[k] >= 0 and counts[k] == rep and vals[k] - vals[k - 1] == step:
                k += 1
        if k == j + 1:
            runs.append([rep, v, 0, 1])
        else:
            runs.append([rep * (k - j), v, step, rep])
        j = k
    return runs


def decode_owner(runs: Iterable[Iterable[int]]) -> np.ndarray:
    parts = []
    for length, start, step, rep in runs:
        k = np.arange(length, dtype=np.int64)
        parts.append(np.full(length, -1, dtype=np.int64) if start < 0
                     else start + step * (k // rep))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _mask_runs(mask: np.ndarray) -> list[list[int]]:
    """A boolean mask as owner-style runs of 0/1 (decoded with ``decode_owner``)."""
    return encode_owner(np.asarray(mask, dtype=np.int64))


def encode_indices(idxs: list[int], size: int) -> list[int] | str:
    """Sorted indices as a list, or as ``"b64:"`` + a little-endian bit mask when shorter."""
    bits = np.zeros(size, dtype=bool)
    bits[np.asarray(idxs, dtype=np.int64)] = True
    packed = "b64:" + base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()
    plain = [int(i) for i in idxs]
    return packed if len(packed) < len(",".join(map(str, plain))) else plain


def decode_indices(data: list[int] | str, size: int) -> list[int]:
    if not isinstance(data, str):
        return list(data)
    raw = np.frombuffer(base64.b64decode(data[4:]), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")[:size]).tolist()


# ---- the export -------------------------------------------------------------------------------
class _Tables:
    """Interned ids: graph nodes, steps, tensors, values."""

    def __init__(self, G: "TracedView"):
        self.G = G
        self.graph = G.graph
        self.dg = G.dg
        self.node_ix: dict[str, int] = {}
        self.nodes: list[list] = []
        self.step_ix: dict[tuple, int] = {}
        self.steps: list[list] = []
        self.tensor_ix: dict[str, int] = {}
        self.tensors: list[list] = []
        self.values: dict[int, list] = {}
        self.pb = PlanBuilder(G, None, "", "out", "")

    def node(self, nid: str) -> int:
        i = self.node_ix.get(nid)
        if i is None:
            i = self.node_ix[nid] = len(self.nodes)
            n = self.graph.nodes.get(nid)
            if n is None:
                self.nodes.append([nid, -1, "", 0, []])
            else:
                acts = sum(1 for x in n.inputs if self.graph.values[x].kind == ACTIVATION)
                outs = [self.dg.vertex_of[(o, d)] for o in n.outputs
                        for d in range(len(self.graph.values[o].shape))
                        if (o, d) in self.dg.vertex_of]
                self.nodes.append([nid, int(n.kind == NODE_OP), n.type, acts, outs])
        return i

    def value(self, vid: int) -> int:
        if vid not in self.values:
            v = self.graph.values[vid]
            name = v.name if v.kind in (PARAM, BUFFER, INPUT) else v.producer
            dims = [self.dg.vertex_of.get((vid, d), -1) for d in range(len(v.shape))]
            self.values[vid] = [_KIND.get(v.kind, "a"), name, list(v.shape), dims]
        return vid

    def tensor(self, name: str) -> int:
        i = self.tensor_ix.get(name)
        if i is None:
            t = self.G.tensor(name)
            own: list[int] = []
            for owner, _a in self.G.owners_of(name):
                own += [self.node(n) for n in self.graph.module_nodes.get(owner, ())]
            i = self.tensor_ix[name] = len(self.tensors)
            self.tensors.append([name, list(t.shape), int(isinstance(t, nn.Parameter)), own])
        return i

    def step(self, key: tuple) -> int:
        """A step as ``PlanBuilder._finish_steps`` describes it (target, kind, fn, repr,
        nodes before tied owners are added)."""
        i = self.step_ix.get(key)
        if i is not None:
            return i
        G, graph = self.G, self.graph
        if key[0] == "pass":
            node = graph.nodes[key[1]]
            row = [key[1], "pass", _pass_fn(node), node.type, [self.node(key[1])]]
        elif key[0] == "param":
            t = G.tensor(key[1])
            readers = [r[0] for r in self.dg.readers.get(graph.param_values.get(key[1]), ())]
            nodes = [key[1]] + list(dict.fromkeys(readers))
            row = [key[1], "param", "prune_parameter", f"Parameter{list(t.shape)}",
                   [self.node(n) for n in nodes]]
        else:  # ("module", mod, side) or ("opaque", mod)
            mod = key[1]
            kind = key[2] if key[0] == "module" else "opaque"
            m = G.model.get_submodule(mod) if mod else G.model
            spec = G.registry.lookup(m)
            row = [mod, kind, _classic_fn(spec, m, kind), _short(m),
                   [self.node(n) for n in graph.module_nodes.get(mod, ())]]
        i = self.step_ix[key] = len(self.steps)
        self.steps.append(row)
        return i


def _vertex_facts(T: _Tables, v: int) -> dict[str, Any]:
    """What PlanBuilder and _check read about vertex ``v``:

    - ``"k": "v"`` (a virtual dim): ``n`` its node, ``s`` the opaque layer's step if any;
    - ``"k": "p"`` (a weight dim): ``val``, ``s`` its step, ``t`` its tensor, ``rn`` the nodes
      that rank the step (its module's calls);
    - ``"k": "a"`` (an activation dim): ``val``, ``nv`` the nodes the value touches (producer,
      then readers) and ``ps`` their pass steps (-1: a layer, no step);
    - ``lab``: how problems name it; ``pr``: the problems pruning it raises (besides "all
      channels"); ``cov``/``pru``: where only some indices can shrink, the covered indices and
      the problems of an uncovered one.
    """
    graph, dg = T.graph, T.dg
    key = dg.key[v]
    out: dict[str, Any] = {"lab": describe_vertex(dg, v)}
    if key[0] == "virtual":
        vi = dg.virtuals[v]
        node = graph.nodes[vi.node]
        out.update(k="v", n=T.node(node.id))
        if node.opaque and vi.module is not None:
            out["s"] = T.step(("opaque", vi.module))
    else:
        value = graph.values[key[0]]
        out["val"] = T.value(value.id)
        if value.kind in (PARAM, BUFFER):
            mod, _, attr = value.name.rpartition(".")
            skey = T.pb._module_side(mod, attr, key[1])
            out.update(k="p", s=T.step(skey), t=T.tensor(value.name), d=key[1],
                       rn=[T.node(n) for n in graph.module_nodes.get(mod, ())])
        else:
            nv = T.pb._nodes_of_value(value.id)
            out.update(k="a", nv=[T.node(n) for n in nv],
                       ps=[T.step(("pass", n)) if graph.nodes[n].kind == NODE_OP else -1
                           for n in nv])
    # problems: the engine's own _check on one index (its messages do not depend on which,
    # except whether the producer can shrink that index: "cov")
    cov = dg.cover.get(v)
    size = dg.size[v]
    if cov is not None and cov is not True and not cov.all() and cov.any():
        out["cov"] = _mask_runs(cov)
        out["pru"] = _problems_at(dg, v, int(np.argmin(cov)))
        out["pr"] = _problems_at(dg, v, int(np.argmax(cov)))
    else:
        out["pr"] = _problems_at(dg, v, 0)
    if size == 1:  # one index is all of them: drop the "all channels" message _check added
        out["pr"] = [p for p in out["pr"] if not p.startswith("the plan would remove all")]
        if "pru" in out:
            out["pru"] = [p for p in out["pru"] if not p.startswith("the plan would remove all")]
    if not out["pr"]:
        del out["pr"]
    return out


def _problems_at(dg, v: int, i: int) -> list[str]:
    cl = Closure(dg)
    m = np.zeros(dg.size[v], dtype=bool)
    m[i] = True
    cl.masks[v] = m
    cl.order.append(v)
    _check(cl, False)
    return [p.message for p in cl.problems]


def _rel_row(T: _Tables, dg, rel) -> Any:
    node = T.graph.nodes.get(rel.node)
    if isinstance(rel, MapRel):
        own = None if rel.owner is None else encode_owner(rel.owner.owner)
        note, head = None, 0
        if node is not None:
            # _note reads the closure only for head_like; ask it with a head-like and a plain
            # previous vertex to learn whether the note depends on it
            note = _note(_NoMasks(dg), rel.a, rel, node)
            if rel.why in ("batched matmul batch", "attention batch/heads"):
                head = 1
                note = (f"the same heads as its partner in the {node.type} at {node.id}"
                        if node.kind == NODE_OP else None)
        return ["m", rel.a, rel.b, own, T.node(rel.node), note, head]
    if isinstance(rel, BlockRel):
        note, flat = None, None
        if node is not None:
            note, flat = _block_note(dg, rel, node)
        return ["b", list(rel.left), list(rel.right), T.node(rel.node), rel.why, note, flat]
    return 0


class _NoMasks:
    """A closure with no masks, for notes that do not read them."""

    def __init__(self, dg):
        self.dg = dg
        self.masks: dict = {}


def _block_note(dg, rel: BlockRel, node) -> tuple[str | None, list | None]:
    """``explain._note`` for a reshape: its text when the closure's masks do not matter, and
    for a flatten (channels × fixed dims) what the page needs to word "channel c → features"."""
    small, big = (rel.left, rel.right) if len(rel.left) <= len(rel.right) else (
        rel.right, rel.left)
    static = _note(_NoMasks(dg), -1, rel, node)
    flat = None
    if (len(small) == 1 and len(big) >= 2 and not rel.why.startswith(
            ("grouped conv", "heads", "group norm", "sized by the code"))
            and (node.kind != NODE_OP or node.type in _RESHAPES)
            and not (sum(1 for x in big if not dg.fixed[x]) < 2
                     and not all(dg.fixed[x] for x in big[1:]))
            and all(dg.fixed[x] for x in big[1:])):
        inner = int(np.prod([dg.size[x] for x in big[1:]]))
        flat = [big[0], inner, list(big)]
    return static, flat


def _identity_classes(dg):
    """Vertex -> representative of the vertices tied to it index by index (identity maps: a
    norm's weight, the activation it scales, a residual add). A selection made from one of
    them is the selection made from any: the same closures, units and scores."""
    find, union = union_find(len(dg.size))
    for rel in dg.rels:
        if isinstance(rel, MapRel) and rel.owner is None:
            union(rel.a, rel.b)
    return find


def _reach(G: "TracedView", seeds: Iterable[int]) -> set[int]:
    """Every vertex a plan from these seeds can touch: the closure of all their channels
    (a subset of a seed's channels reaches a subset of it). A seed whose every channel an
    earlier closure already reached adds nothing: that closure is closed around it."""
    seen: set[int] = set()
    full: set[int] = set()
    for v in dict.fromkeys(seeds):
        if v in full:
            continue
        cl = close(G.dg, {v: np.arange(G.dg.size[v], dtype=im.INDEX)})
        for x in cl.order:
            n = cl.count(x)
            if n:
                seen.add(x)
                if n == G.dg.size[x]:
                    full.add(x)
    return seen


def group_data(DG: "TracedView", *, strategy: str = "l1", amount: float = 0.3,
               round_to: int | None = None, sides: Iterable[str] = ("out",),
               layers: Iterable[str] | None = None) -> dict:
    """The JSON-able data the report's page plans from (see the module docstring).

    ``layers``: the modules a reader may click (default: every traced module); each gets its
    ``sides`` seed vertices (or the engine's reason it cannot be a root) and the channels
    ``strategy`` picks at ``amount`` (``select_channels``, whole heads/groups as units).
    """
    from .select import select_channels
    DG._require_built()
    graph, dg = DG.graph, DG.dg
    T = _Tables(DG)
    names = list(layers) if layers is not None else list(graph.module_nodes)
    out_layers: dict[str, dict] = {}
    seeds: list[int] = []
    cache: dict = {}
    same = _identity_classes(dg)
    picks: dict[int, Any] = {}
    for name in names:
        m = DG.model.get_submodule(name) if name else DG.model
        entry: dict[str, Any] = {"nodes": list(graph.module_nodes.get(name, ())),
                                 "type": type(m).__name__}
        out_layers[name] = entry
        for side in sides:
            try:
                v = DG.root_vertex(name, side)
            except PruningError as exc:
                entry[side] = str(exc)
                continue
            entry[side] = v
            seeds.append(v)
        v = entry.get("out")
        if isinstance(v, int):
            cls = same(v)
            if cls in picks:  # the same channels as a layer already picked: same selection
                entry["pick"] = picks[cls]
                continue
            try:
                sel = select_channels(DG, name, strategy, amount, round_to, cache=cache)
            except (PruningError, ValueError) as exc:
                entry["pick"] = str(exc)
            else:
                if sel.idxs:
                    entry["pick"] = picks[cls] = encode_indices(sel.idxs, len(sel.scores))
                else:
                    entry["pick"] = (f"{amount:.0%} of {name}'s {len(sel.scores)} channels "
                                     f"rounds to none")
    reach = _reach(DG, seeds)
    vx = {v: _vertex_facts(T, v) for v in sorted(reach)}
    rels = [_rel_row(T, dg, r) for r in dg.rels]
    macs = _macs(T, vx)
    rng = np.random.default_rng(0)
    opaque = {row[0]: opaque_costs(DG, row[0], rng) for row in T.steps if row[1] == "opaque"}
    for costs in opaque.values():
        costs["nodes"] = [T.node(n) for n in costs["nodes"]]
    groups, group_of = _groups(DG)
    for entry in out_layers.values():
        if entry.get("out") in group_of:
            entry["group"] = group_of[entry["out"]]
    return {
        "format": FORMAT,
        "options": {"strategy": strategy, "amount": amount, "round_to": round_to,
                    "pick_policy": "heads", "typed_policy": "cheapest"},
        "size": list(dg.size),
        "fixed": "".join("1" if f else "0" for f in dg.fixed),
        "head": "".join("1" if h else "0" for h in dg.head_like()),
        "rels": rels,
        "nodes": T.nodes,
        "values": {str(k): v for k, v in T.values.items()},
        "tensors": T.tensors,
        "steps": T.steps,
        "vx": {str(k): v for k, v in vx.items()},
        "macs": macs,
        "opaque": opaque,
        "layers": out_layers,
        "groups": groups,
    }


def _macs(T: _Tables, vx: dict) -> dict:
    """MAC formulas of every node a plan from these vertices can shrink: the nodes its values
    touch and the calls of the layers whose weights it cuts."""
    graph = T.graph
    cand: list[str] = []
    for facts in list(vx.values()):
        if facts["k"] == "a":
            cand += [T.nodes[i][0] for i in facts["nv"]]
        elif facts["k"] in ("p", "v") and "s" in facts:
            step = T.steps[facts["s"]]
            cand += list(graph.module_nodes.get(step[0], ()))
    out = {}
    for nid in dict.fromkeys(cand):
        node = graph.nodes.get(nid)
        if node is None:
            continue
        before = sum(c.macs for c in node.calls)
        calls = [mac_formula(c, T.graph, T.value) for c in node.calls if c.macs]
        if before or calls:
            out[str(T.node(nid))] = [before, calls]
    return out


def _groups(DG) -> tuple[list[dict], dict[int, int]]:
    """``DG.groups()`` as rows, and which group each output-channel vertex belongs to."""
    out, of = [], {}
    for i, g in enumerate(DG.groups()):
        out.append({"root": g.root, "kind": g.kind, "size": g.size,
                    "units": len(g.units or ()), "layers": len(g.layers),
                    "problem": g.problem})
        for v in g.members:
            of.setdefault(v, i)
    return out, of
