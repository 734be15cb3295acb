"""Closure of a pruning request over the dim graph: iterative, monotone, and explained.

Starting from seed indices on some vertices, every relation is applied until nothing grows:
owner maps forward and backward, reshapes (blocks) through ``index_mapping.decompose``. Each
vertex remembers the relation that first reached it, so a plan can say *why* a layer is
coupled. Then every pruned vertex is checked: its producer must be able to shrink it, and
every op that reads it must know how to follow it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import index_mapping as im
from .dimgraph import AbsorbRel, BlockRel, DimGraph, MapRel
from .graph import BUFFER, CONSTANT, INPUT, PARAM


@dataclass
class Problem:
    """Why a closure cannot be executed. ``node`` is the op or layer to blame."""

    kind: str  # "all-channels" | "unsupported-op" | "fixed-dim" | "model-input" | ...
    node: str | None
    message: str
    vertex: int | None = None


@dataclass
class Closure:
    dg: DimGraph
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    parent: dict[int, tuple[int, int] | None] = field(default_factory=dict)  # v -> (prev, rel)
    order: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    expanded: bool = False  # a reshape widened the request (heads, groups, shuffles)
    widened_by: list[str] = field(default_factory=list)  # the nodes whose reshape widened it
    # per vertex, read many times by groups, plans and checks once the masks are final (set
    # by ``_check``, the last thing ``close`` does; nothing writes a mask after it)
    _counts: dict[int, int] = field(default_factory=dict, repr=False)
    _pruned: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def pruned(self, v: int) -> np.ndarray:
        """The pruned indices of ``v``, ascending (one array per vertex: do not write it)."""
        p = self._pruned.get(v)
        if p is None:
            m = self.masks.get(v)
            p = np.zeros(0, dtype=im.INDEX) if m is None else m.nonzero()[0]
            p.flags.writeable = False  # shared by every reader
            self._pruned[v] = p
        return p

    def count(self, v: int) -> int:
        c = self._counts.get(v)
        if c is None:
            m = self.masks.get(v)
            c = self._counts[v] = 0 if m is None else int(np.count_nonzero(m))
        return c

    def path(self, v: int) -> list[tuple[int, int]]:
        """(vertex, relation) steps from the seed to ``v``."""
        steps = []
        seen = set()
        while v is not None and v not in seen:
            seen.add(v)
            p = self.parent.get(v)
            if p is None:
                break
            steps.append(p)
            v = p[0]
        return steps[::-1]


def close(dg: DimGraph, seeds: dict[int, np.ndarray], *, allow_output_change: bool = False,
          policy: str = "cheapest", max_steps: int = 2_000_000) -> Closure:
    """Close ``seeds`` (vertex -> indices) under every relation.

    ``policy`` decides how a reshape widens a request that is not made of whole slices:
    ``"cheapest"`` adds the fewest elements, ``"heads"`` prefers whole attention heads,
    ``"dims"`` prefers the same head_dim slots in every head.
    """
    cl = Closure(dg)
    size = dg.size
    masks = cl.masks
    queue: deque = deque()

    order, parents = cl.order, cl.parent

    def add(v: int, idxs: np.ndarray, parent) -> None:
        if not len(idxs):
            return
        m = masks.get(v)
        if m is None:  # first visit: every index is new (idxs are unique)
            m = masks[v] = np.zeros(size[v], dtype=bool)
            order.append(v)
            parents[v] = parent
            m[idxs] = True
            queue.append((v, idxs))
            return
        new = idxs[~m[idxs]]
        if len(new):
            m[new] = True
            queue.append((v, new))

    for v, idxs in seeds.items():
        add(v, np.unique(np.asarray(idxs, dtype=im.INDEX)), None)

    steps = 0
    fixed = dg.fixed
    adj, rels = dg.adj, dg.rels
    while queue:
        steps += 1
        if steps > max_steps:  # pragma: no cover - a safety net, never seen
            cl.problems.append(Problem("too-large", None, "the plan did not converge"))
            break
        v, delta = queue.popleft()
        for ri in adj[v]:
            rel = rels[ri]
            if type(rel) is MapRel:
                owner = rel.owner
                if owner is None:
                    add(rel.b if rel.a == v else rel.a, delta, (v, ri))
                else:
                    if rel.a == v:
                        add(rel.b, owner.forward(delta), (v, ri))
                    if rel.b == v:
                        add(rel.a, owner.inverse(delta), (v, ri))
            elif isinstance(rel, BlockRel):
                _apply_block(dg, rel, ri, v, masks, add, fixed, cl, policy)
            elif isinstance(rel, AbsorbRel):
                pass
    _check(cl, allow_output_change)
    return cl


def union_of_identities(dg: DimGraph, parts: list[tuple[Closure, np.ndarray]]) -> Closure | None:
    """What ``close(dg, {root: idxs, ...})`` gives when each part's root reaches its members
    through identities only: ``parts`` pairs each root's closure of all its channels but the
    first (``probe``: every relation it met an identity map) with the indices to remove.

    Then every member loses exactly ``idxs``, and one closure over all seeds visits the
    vertices breadth first, level by level, the parts in seed order: each part's own visit
    order and parents, merged by level. No relation is applied again. Only what depends on
    the indices themselves is checked (an output whose producer covers some of its entries);
    everything else ``_check`` asks was asked of the probe, whose group would not have been
    selected otherwise. None: a part's indices fall outside what a producer covers (let
    ``close`` say why)."""
    cl = Closure(dg)
    by_level: list[list[int]] = []  # the merged visit order, level by level
    cover, key, graph = dg.cover, dg.key, dg.graph
    for probe, idxs in parts:
        order = probe.order
        root = order[0]
        p = np.unique(np.asarray(idxs, dtype=im.INDEX))
        n = len(p)
        if not n or n >= dg.size[root]:
            return None  # nothing, or every channel: close() has the words for it
        p.flags.writeable = False
        m = np.zeros(dg.size[root], dtype=bool)
        m[p] = True
        m.flags.writeable = False  # shared by every member: nothing writes a final mask
        # (each member once; the dicts' own order is never read, only ``order``'s)
        cl.masks.update(dict.fromkeys(order, m))
        cl._counts.update(dict.fromkeys(order, n))
        cl._pruned.update(dict.fromkeys(order, p))
        parents = probe.parent
        cl.parent.update(parents)
        level: dict[int, int] = {}
        run_start, run_level = 0, 0
        for pos, v in enumerate(order):
            par = parents[v]
            lv = level[v] = 0 if par is None else level[par[0]] + 1
            if lv != run_level:  # breadth first: levels only grow along the order
                _extend(by_level, run_level, order[run_start:pos])
                run_start, run_level = pos, lv
            cov = cover.get(v)
            if cov is not True and key[v][0] != "virtual" and \
                    graph.values[key[v][0]].kind not in (PARAM, BUFFER) and not _covers(cov, m):
                return None
        _extend(by_level, run_level, order[run_start:])
    for vs in by_level:
        cl.order.extend(vs)
    return cl


def _covers(cover, mask: np.ndarray) -> bool:
    """Can the producer of a vertex shrink it at ``mask``? ``cover`` (``DimGraph.cover``):
    True for every entry, a bool mask of the entries its owner maps produce, None for none."""
    return cover is True or (cover is not None and bool(cover[mask].all()))


def _extend(by_level: list[list[int]], level: int, vs: list[int]) -> None:
    while len(by_level) <= level:
        by_level.append([])
    by_level[level].extend(vs)


def _apply_block(dg, rel: BlockRel, ri: int, v: int, masks, add, fixed, cl: Closure,
                 policy: str) -> None:
    sides = (rel.left, rel.right)
    elems = None
    for side in sides:
        sizes = [dg.size[x] for x in side]
        m = im.element_mask(sizes, [None if masks.get(x) is None else np.nonzero(masks[x])[0]
                                    for x in side])
        elems = m if elems is None else (elems | m)
    for side in sides:
        sizes = [dg.size[x] for x in side]
        expandable = [not fixed[x] for x in side]
        prefer = None
        if policy != "cheapest" and len(side) > 1:
            # "heads": whole attention heads, and whole groups of a GroupNorm (removing a whole
            # group leaves the other groups' statistics as they were; the same slot of every
            # group would change them all)
            heads = dg.head_like()
            whole = policy == "heads"
            prefer = [bool(heads[x]) == whole or (whole and _is_groups(dg, x)) for x in side]
        try:
            per_dim, widened = im.decompose(elems, sizes, expandable, prefer)
        except ValueError:
            cl.problems.append(Problem(
                "fixed-dim", rel.node,
                f"{rel.node} ({rel.why}) reshapes the pruned channels together with a dim that "
                f"cannot be pruned (batch, spatial or a model input), so they cannot be removed "
                f"as whole slices", v))
            return
        if widened.sum() > elems.sum():
            cl.expanded = True
            if rel.node not in cl.widened_by:
                cl.widened_by.append(rel.node)
            elems = widened
        for x, idxs in zip(side, per_dim):
            add(x, idxs, (v, ri))


def _is_groups(dg: DimGraph, v: int) -> bool:
    """A GroupNorm's groups (a grouped conv's are exact either way: left to the cost)."""
    vi = dg.virtuals.get(v)
    return vi is not None and vi.name == "groups" and vi.attr == "num_groups"


def _check(cl: Closure, allow_output_change: bool) -> None:
    dg = cl.dg
    graph = dg.graph
    outputs = set(graph.fixed_outputs)
    counts = cl._counts
    for v in cl.order:
        m = cl.masks[v]
        n = counts[v] = int(np.count_nonzero(m))
        if n == 0:
            continue
        key = dg.key[v]
        if n >= dg.size[v]:
            cl.problems.append(Problem(
                "all-channels", _owner_node(dg, v),
                f"the plan would remove all {dg.size[v]} entries of {describe_vertex(dg, v)}; "
                f"prune fewer channels so that every coupled layer keeps at least one", v))
        if key[0] == "virtual":
            continue
        value = graph.values[key[0]]
        if value.kind == INPUT:
            cl.problems.append(Problem(
                "model-input", value.name,
                f"the plan would change the model input `{value.name}` along dim {key[1]} "
                f"(shape {list(value.shape)}); the channels coupled to it cannot be pruned", v))
            continue
        if value.kind == CONSTANT:
            node = _reader_node(dg, value.id)
            cl.problems.append(Problem(
                "constant", node,
                f"the plan would have to shrink a constant tensor of shape {list(value.shape)} "
                f"used by {node} along dim {key[1]}; it is not a parameter or buffer", v))
            continue
        if value.id in outputs and not allow_output_change:
            path = graph.output_paths.get(value.id, "the model output")
            cl.problems.append(Problem(
                "model-output", path,
                f"the plan would change the model output"
                f"{'' if path == 'output' else ' ' + path} (shape {list(value.shape)}, "
                f"produced by {value.producer}) along dim {key[1]}; if the model returns it "
                f"only for its loss, name the outputs to keep (fixed_outputs=lambda out: ...), "
                f"else add its layer to ignored_layers", v))
        if value.kind not in (PARAM, BUFFER):
            if not _covers(dg.cover.get(v), m):
                producer = dg.producer_call.get(value.id, (value.producer, -1))[0]
                op = _op_name(dg, dg.producer_call.get(value.id))
                cl.problems.append(Problem(
                    "unsupported-op", producer,
                    f"{producer} ({op}) produces {describe_vertex(dg, v)}, and prune_explorer "
                    f"cannot shrink its output along dim {key[1]} (it does not come from "
                    f"pruned channels)", v))
                continue
        for reader in dg.readers.get(value.id, ()):
            if reader[1] == -1 and reader[0] == "output":
                continue
            if reader not in dg.handled.get(v, ()):
                op = _op_name(dg, reader)
                cl.problems.append(Problem(
                    "unsupported-op", reader[0],
                    f"{reader[0]} ({op}) reads {describe_vertex(dg, v)} and prune_explorer "
                    f"does not know how channels along dim {key[1]} map through {op}; add it "
                    f"to ignored_layers or register a rule for it", v))
                break


def _op_name(dg: DimGraph, call_key) -> str:
    if call_key is None:
        return "unknown op"
    node = dg.graph.nodes.get(call_key[0])
    if node is None:
        return "unknown op"
    if call_key[1] == -2:
        return f"Tensor.{node.type}(), data leaving torch"
    if call_key[1] < 0 or not node.calls:
        return node.type
    op = node.calls[call_key[1]].op
    return f"{node.type}, {op}" if node.kind == "layer" else op


def _reader_node(dg: DimGraph, value: int) -> str | None:
    readers = dg.readers.get(value)
    return readers[0][0] if readers else None


def _owner_node(dg: DimGraph, v: int) -> str | None:
    key = dg.key[v]
    if key[0] == "virtual":
        return dg.virtuals[v].node
    value = dg.graph.values[key[0]]
    return value.name if value.kind in (PARAM, BUFFER) else value.producer


def describe_vertex(dg: DimGraph, v: int) -> str:
    key = dg.key[v]
    if key[0] == "virtual":
        vi = dg.virtuals[v]
        return f"the {vi.name} of {vi.node}"
    value = dg.graph.values[key[0]]
    if value.kind in (PARAM, BUFFER):
        return f"{value.name} (dim {key[1]} of {list(value.shape)})"
    if value.kind == INPUT:
        return f"input {value.name} (dim {key[1]})"
    return f"the output of {value.producer} (dim {key[1]} of {list(value.shape)})"
