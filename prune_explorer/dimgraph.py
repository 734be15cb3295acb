"""The dim graph: one vertex per (tensor, dim) that channels can flow through, and the
relations the op rules declared between them.

A plan is a set of pruned indices per vertex, closed under every relation (see
``propagation``). This module only builds the structure and answers static questions:
which reader of a tensor handles which dim, which output dims a producer can shrink, and
which dims are *fixed* (batch, spatial, model inputs and outputs) and so can never be pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import index_mapping as im
from .graph import ACTIVATION, CONSTANT, INPUT, NODE_INPUT, NODE_OUTPUT, Graph, Node, Ref
from .op_rules import RuleContext, rule_for


@dataclass(slots=True)
class MapRel:
    a: int
    b: int
    owner: im.OwnerMap | None  # b[i] <- a[owner[i]]; None: identity
    node: str
    why: str


@dataclass(slots=True)
class BlockRel:
    left: list[int]
    right: list[int]
    node: str
    why: str


@dataclass(slots=True)
class AbsorbRel:
    v: int
    node: str
    why: str


@dataclass(slots=True)
class Virtual:
    """A dim that is no tensor's: the groups of a grouped conv, the heads of an opaque
    attention layer. ``attr`` names the module attribute that counts it (``groups``)."""

    node: str
    module: str | None
    name: str
    attr: str | None
    fixed: bool
    handler: Any = None  # opaque layers: what exec calls with the pruned indices


@dataclass
class DimGraph:
    graph: Graph
    size: list[int] = field(default_factory=list)
    key: list[Any] = field(default_factory=list)
    vertex_of: dict[tuple, int] = field(default_factory=dict)
    virtuals: dict[int, Virtual] = field(default_factory=dict)
    rels: list[Any] = field(default_factory=list)
    adj: list[list[int]] = field(default_factory=list)
    handled: dict[int, set] = field(default_factory=dict)  # vertex -> call keys handling it
    cover: dict[int, Any] = field(default_factory=dict)  # vertex -> True | bool mask
    readers: dict[int, list[tuple]] = field(default_factory=dict)  # value -> call keys
    producer_call: dict[int, tuple] = field(default_factory=dict)  # value -> call key
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (node id, op) with no rule
    fixed: np.ndarray | None = None
    _head_like: np.ndarray | None = None

    # ---- construction -----------------------------------------------------------------------
    def _new_vertex(self, key, size: int) -> int:
        vid = len(self.size)
        self.size.append(int(size))
        self.key.append(key)
        self.adj.append([])
        return vid

    def vertex_at(self, k: tuple[int, int], size: int) -> int:
        """A new vertex for ``k = (value, dim)`` of the given size (the caller looked it up)."""
        vid = self.vertex_of[k] = self._new_vertex(k, size)
        return vid

    def vertex(self, value: int, dim: int) -> int:
        k = (value, dim)
        vid = self.vertex_of.get(k)
        return vid if vid is not None else self.vertex_at(k, self.graph.values[value].shape[dim])

    def virtual(self, key, size, node: Node, attr, fixed, handler=None) -> int:
        k = ("virtual",) + tuple(key)
        vid = self.vertex_of.get(k)
        if vid is None:
            vid = self._new_vertex(k, size)
            self.vertex_of[k] = vid
            self.virtuals[vid] = Virtual(node.id, node.module, key[-1], attr, fixed, handler)
        return vid

    def _touch(self, v: int, ctx: RuleContext, owner=None, side_a: bool = False) -> None:
        """Record that the call handles ``v`` (an input dim it follows) or produces it (and
        which of its entries: those an owner map covers)."""
        value = self.key[v][0]
        if value == "virtual":
            return
        if value in ctx._inputs:
            h = self.handled.get(v)
            if h is None:
                self.handled[v] = {ctx.key}
            else:
                h.add(ctx.key)
        if value in ctx._outputs:
            if owner is None:
                self.cover[v] = True
                return
            prev = self.cover.get(v)
            if prev is not True:
                mask = _a_cover(owner) if side_a else owner.covered()
                self.cover[v] = mask if prev is None else (prev | mask)

    def add_map(self, a: int, b: int, owner, ctx: RuleContext, why: str) -> None:
        if owner is not None and owner.owner is None:
            owner = None
        ri = len(self.rels)
        self.rels.append(MapRel(a, b, owner, ctx.node.id, why))
        adj = self.adj
        adj[a].append(ri)
        if b != a:
            adj[b].append(ri)
        if owner is not None:
            self._touch(a, ctx, owner, True)
            self._touch(b, ctx, owner, False)
            return
        # an identity (most maps): _touch without an owner, inlined for both ends
        key, handled, ins, outs = self.key, self.handled, ctx._inputs, ctx._outputs
        for v in (a, b):
            value = key[v][0]
            if value == "virtual":
                continue
            if value in ins:
                h = handled.get(v)
                if h is None:
                    handled[v] = {ctx.key}
                else:
                    h.add(ctx.key)
            if value in outs:
                self.cover[v] = True

    def add_block(self, left: list[int], right: list[int], ctx: RuleContext, why: str) -> None:
        if im.product_size([self.size[v] for v in left]) != im.product_size(
                [self.size[v] for v in right]):
            return
        ri = len(self.rels)
        self.rels.append(BlockRel(list(left), list(right), ctx.node.id, why))
        for v in set(left) | set(right):
            self.adj[v].append(ri)
            self._touch(v, ctx)

    def add_absorb(self, v: int, ctx: RuleContext, why: str) -> None:
        ri = len(self.rels)
        self.rels.append(AbsorbRel(v, ctx.node.id, why))
        self.adj[v].append(ri)
        self._touch(v, ctx)

    # ---- static questions ---------------------------------------------------------------------
    def value_dim(self, v: int) -> tuple[int, int] | None:
        key = self.key[v]
        return None if key[0] == "virtual" else key

    def compute_fixed(self) -> None:
        """Dims that can never lose an index: model inputs and outputs, constants, dims no
        producer can shrink (conv spatial dims), and dims some reader cannot follow."""
        n = len(self.size)
        fixed = [False] * n
        outputs = set(self.graph.fixed_outputs)
        values, cover = self.graph.values, self.cover
        handled_get, readers_get = self.handled.get, self.readers.get
        for v, key in enumerate(self.key):
            vid = key[0]
            if vid == "virtual":
                fixed[v] = self.virtuals[v].fixed
                continue
            kind = values[vid].kind
            if kind == INPUT or kind == CONSTANT or vid in outputs:
                fixed[v] = True
            elif kind == ACTIVATION and v not in cover:
                fixed[v] = True
            else:
                readers = readers_get(vid)
                if readers:
                    h = handled_get(v, ())
                    for r in readers:
                        if r not in h:
                            fixed[v] = True
                            break
        # spread along identities, and across reshapes whose whole other side is fixed
        stack = [v for v in range(n) if fixed[v]]
        while stack:
            x = stack.pop()
            for ri in self.adj[x]:
                rel = self.rels[ri]
                if isinstance(rel, MapRel):
                    if rel.owner is None or _same_kind(rel):
                        y = rel.b if rel.a == x else rel.a
                        if not fixed[y]:
                            fixed[y] = True
                            stack.append(y)
                elif isinstance(rel, BlockRel):
                    for side, other in ((rel.left, rel.right), (rel.right, rel.left)):
                        if x in side and all(fixed[z] for z in side):
                            for z in other:
                                if not fixed[z]:
                                    fixed[z] = True
                                    stack.append(z)
        self.fixed = np.array(fixed, dtype=bool)


    def head_like(self) -> np.ndarray:
        """Dims that index attention heads: batch dims of a batched matmul or attention op,
        followed through identities and from a merged dim into its factors."""
        if self._head_like is not None:
            return self._head_like
        n = len(self.size)
        heads = np.zeros(n, dtype=bool)
        stack = []
        for rel in self.rels:
            if isinstance(rel, MapRel) and rel.owner is None and rel.why in (
                    "batched matmul batch", "attention batch/heads"):
                for x in (rel.a, rel.b):
                    if not heads[x] and not self.fixed[x]:
                        heads[x] = True
                        stack.append(x)
        for vid, vi in self.virtuals.items():
            if vi.name == "heads" and not heads[vid]:
                heads[vid] = True
                stack.append(vid)
        while stack:
            x = stack.pop()
            for ri in self.adj[x]:
                rel = self.rels[ri]
                nxt = []
                if isinstance(rel, MapRel) and (rel.owner is None or rel.why ==
                                                "grouped-query attention"):
                    nxt = [rel.b if rel.a == x else rel.a]
                elif isinstance(rel, BlockRel):
                    for small, big in ((rel.left, rel.right), (rel.right, rel.left)):
                        if small == [x] and len(big) > 1:
                            nxt = list(big)
                for y in nxt:
                    if not heads[y] and not self.fixed[y]:
                        heads[y] = True
                        stack.append(y)
        self._head_like = heads
        return heads


def _same_kind(rel: MapRel) -> bool:
    """Maps that keep what a dim *is* (a rolled, flipped, padded or cropped spatial dim is
    still spatial), unlike a concat, whose output mixes pieces of different kinds."""
    return rel.why in ("roll", "flip", "pad", "slice") or (
        rel.owner.size_a == rel.owner.size_b and rel.owner.injective)


def _a_cover(owner: im.OwnerMap) -> np.ndarray:
    mask = np.zeros(owner.size_a, dtype=bool)
    o = owner.owner
    mask[o[o >= 0]] = True
    return mask


OpaqueRelations = Callable[[RuleContext, Any], None]


# Python calls through which tensor data leaves torch: whatever follows is invisible
ESCAPES = {"numpy", "tolist", "__array__", "__dlpack__", "__reduce_ex__", "cpu_numpy"}


def build_dim_graph(graph: Graph, opaque_relations: Callable[[Node], OpaqueRelations | None],
                    couplings: list[tuple] = ()) -> DimGraph:
    """Apply the op rules to every recorded call (and the registry to opaque layers), then
    the couplings the model's code implies (see ``couplings``)."""
    dg = DimGraph(graph)
    for node in graph.nodes.values():
        if node.type in ESCAPES:
            # the data leaves torch here: no rule can say where its channels go
            for v in set(node.inputs) | {o for c in node.calls for o in c.outputs if o is not None}:
                dg.readers.setdefault(v, []).append((node.id, -2))
            dg.unknown.append((node.id, f"Tensor.{node.type}()"))
        if node.kind in (NODE_INPUT, NODE_OUTPUT):
            if node.kind == NODE_OUTPUT:
                for v in node.inputs:
                    dg.readers.setdefault(v, []).append((node.id, -1))
            continue
        if node.opaque:
            key = (node.id, -1)
            for v in node.inputs:
                dg.readers.setdefault(v, []).append(key)
            for v in node.outputs:
                dg.producer_call[v] = key
            ctx = RuleContext(dg, node, None, key, set(node.inputs), set(node.outputs))
            fn = opaque_relations(node)
            if fn is None:
                dg.unknown.append((node.id, node.type))
            else:
                fn(ctx)
            continue
        for ci, call in enumerate(node.calls):
            key = (node.id, ci)
            ins = _tensor_args(call)
            outs = {o for o in call.outputs if o is not None}
            for v in ins:
                dg.readers.setdefault(v, []).append(key)
            for v in outs:
                dg.producer_call[v] = key
            fn = rule_for(call.op)
            if fn is None:
                if ins:
                    dg.unknown.append((node.id, call.op))
                continue
            ctx = RuleContext(dg, node, call, key, ins, outs)
            try:
                fn(ctx)
            except Exception:  # a rule that cannot read this call: treat the op as unknown
                dg.unknown.append((node.id, call.op))
    _absorb_dead_ends(dg)
    if couplings:
        comp = _components(dg)
        for coupling in couplings:
            _add_coupling(dg, coupling, comp)
    dg.compute_fixed()
    return dg


def _tensor_args(call) -> set[int]:
    """The value ids a call reads (``Call.tensor_args`` without a generator per arg)."""
    found = set()
    for a in call.args:
        t = type(a)
        if t is Ref:
            found.add(a.value)
        elif t is list or t is tuple:
            for x in a:
                if type(x) is Ref:
                    found.add(x.value)
                elif type(x) in (list, tuple):
                    found.update(_tensor_args_of(x))
    if call.kwargs:
        found.update(_tensor_args_of(tuple(call.kwargs.values())))
    return found


def _tensor_args_of(items) -> set[int]:
    out = set()
    for x in items:
        if type(x) is Ref:
            out.add(x.value)
        elif isinstance(x, (list, tuple)):
            out.update(_tensor_args_of(x))
    return out


def _absorb_dead_ends(dg: DimGraph) -> None:
    """A call whose outputs nobody reads (``inputs_embeds[:, :, -1]`` only to take its
    shape) cannot be broken by pruning its inputs: every input dim counts as handled. Only
    calls that made an unread value are looked at."""
    graph = dg.graph
    outputs = set(graph.outputs)
    readers = dg.readers
    candidates = {key for v, key in dg.producer_call.items()
                  if key[1] >= 0 and v not in readers and v not in outputs}
    for nid, ci in candidates:  # (``handled`` holds sets: the order is never read)
        call = graph.nodes[nid].calls[ci]
        if any(o is not None and (o in readers or o in outputs) for o in call.outputs):
            continue
        if rule_for(call.op) is not None and call.packet not in ("select", "index",
                                                                 "index_select"):
            continue
        for v in call.tensor_args():
            for d in range(len(graph.values[v].shape)):
                x = dg.vertex_of.get((v, d))
                if x is not None:
                    dg.handled.setdefault(x, set()).add((nid, ci))


def union_find(n: int):
    """(find, union) over ``n`` items, with path halving."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        parent[find(a)] = find(b)

    return find, union


def _components(dg: DimGraph) -> list[int]:
    """Union-find labels over every relation: dims already tied by the ops themselves."""
    find, union = union_find(len(dg.size))
    for rel in dg.rels:
        if isinstance(rel, MapRel):
            union(rel.a, rel.b)
        elif isinstance(rel, BlockRel):
            for x in rel.left[1:] + rel.right:
                union(x, rel.left[0])
    return [find(x) for x in range(len(dg.size))]


def _add_coupling(dg: DimGraph, coupling: tuple, comp: list[int]) -> None:
    """Add a coupling the code implies, unless the ops already relate those dims (a channel
    shuffle reads its size from the tensor it permutes: same size, different indices)."""
    graph = dg.graph

    def known(vs):
        if coupling[-1] != "unless-related":
            return False
        labels = {comp[x] for x in vs if x < len(comp)}
        return len(labels) == 1 and all(x < len(comp) for x in vs)

    if coupling[0] == "map":
        dims = coupling[1]
        verts = [dg.vertex(v, d) for v, d in dims]
        if coupling[-1] == "unless-related" and dg.size[verts[0]] == dg.size[verts[-1]]:
            # a dim the code sized from a size it read at run time (expand / repeat / zeros
            # of x.shape[-1]) follows that size: it is not a fixed constant
            dg.cover.setdefault(verts[-1], True)
        if known(verts):
            return
        node = graph.values[dims[-1][0]].producer or ""
        for a, b in zip(verts, verts[1:]):
            if a != b and dg.size[a] == dg.size[b]:
                ri = len(dg.rels)
                dg.rels.append(MapRel(a, b, None, node, "sized the same by the code"))
                dg.adj[a].append(ri)
                dg.adj[b].append(ri)
    else:
        left = [dg.vertex(v, d) for v, d in coupling[1]]
        right = [dg.vertex(v, d) for v, d in coupling[2] if graph.values[v].shape[d] > 1]
        if im.product_size([dg.size[x] for x in left]) != im.product_size(
                [dg.size[x] for x in right]) or known(left + right):
            return
        node = graph.values[coupling[2][-1][0]].producer or ""
        ri = len(dg.rels)
        if len(right) == 1:
            dg.rels.append(MapRel(left[0], right[0], None, node, "sized the same by the code"))
        else:
            dg.rels.append(BlockRel(left, right, node, "sized by the code from another width"))
        for x in set(left) | set(right):
            dg.adj[x].append(ri)


__all__ = ["DimGraph", "MapRel", "BlockRel", "AbsorbRel", "Virtual", "build_dim_graph", "Ref"]
