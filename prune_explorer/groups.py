"""Groups: the sets of coupled layers that must be pruned together, found from every layer's
output channels, with the *units* a strategy may remove and their group-level importance.

A unit is usually one channel. Where a reshape ties channels together (attention heads,
grouped convs, channel shuffles, GQA), a unit is what one channel drags along: a whole head,
the same slot in every group.

A unit's importance is the **sum** over *every parameter tensor* of its group of that
tensor's score for the unit's slices: the root's rows, biases, norm scales and shifts, every
consumer's input-side columns, bare ``nn.Parameter``s (buffers such as BatchNorm statistics
are not scored). Per strategy:

- ``l1``: sum of |w| over everything the unit removes;
- ``l2``: the L2 norm of everything it removes, sqrt(sum of w**2);
- ``bn_scale``: sum of |gamma| over the group's BatchNorm/GroupNorm/LayerNorm scales (a group
  without a norm falls back to ``l1``);
- ``lamp``: LAMP (Lee et al. 2021) over the groups' summed w**2: a unit's score divided by the
  sum of the scores not smaller than it, so scores of different groups compare;
- ``taylor``: |sum of w * dL/dw| over everything the unit removes, the first-order change of
  the loss (Molchanov et al. 2019);
- ``random``: uniform draws (seeded).

Torch-Pruning 1.6.1 reduces per layer with the mean by default (``group_reduction="mean"``);
within a group that only divides every unit by the same count, so it ranks as the sum does.
It leaves biases out (``bias=False``), scores L2 as the sum of squares (no square root: the
same order within a group, not across groups), and its default Taylor sums |w * dL/dw|
element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
from torch import nn

from . import index_mapping as im
from .dimgraph import BlockRel, MapRel
from .graph import ACTIVATION, BUFFER, NODE_LAYER, PARAM
from .propagation import Closure, close

if TYPE_CHECKING:  # pragma: no cover
    from .traced_view import TracedView

KIND_HEADS = "heads"
KIND_RESIDUAL = "residual"
KIND_CHANNELS = "channels"
_JOIN_TYPES = {"add", "add_", "sub", "sub_"}


@dataclass
class Group:
    root: str  # module whose output channels define the group
    vertex: int
    size: int
    members: list[int]
    kind: str = KIND_CHANNELS
    units: list[np.ndarray] | None = None
    problem: str | None = None  # why the group cannot be pruned
    layers: list[str] = field(default_factory=list)
    # what pins it: the op or layer to blame, an ignored layer, or a model output by its path
    # (``output[1]['feats'][0]``); None when the group is prunable
    pinned_by: str | None = None
    # the closure of all channels but the first, kept when every relation it met is an
    # identity: any selection then closes to the same indices on every member, and a
    # combined closure is assembled from these (``propagation.union_of_identities``)
    closure: Closure | None = field(default=None, repr=False, compare=False)
    channel_units: bool = field(default=False, repr=False)  # ``units[k]`` is channel k alone

    @property
    def prunable(self) -> bool:
        return self.problem is None


def _flatten(items) -> list:
    out = []
    for item in items or ():
        if isinstance(item, (list, tuple, set)):
            out.extend(_flatten(item))
        elif isinstance(item, nn.ModuleList) or isinstance(item, nn.ModuleDict):
            out.extend(item.values() if isinstance(item, nn.ModuleDict) else list(item))
        else:
            out.append(item)
    return out


def _ignored_names(dg: "TracedView", ignored: Iterable) -> set[str]:
    names = set()
    for item in _flatten(ignored):
        if isinstance(item, nn.Parameter) or item is None:
            continue
        if not isinstance(item, (nn.Module, str)):
            raise TypeError(f"ignored_layers must hold modules (or module names), got "
                            f"{type(item).__name__}")
        name = dg.module_name(item)
        names.add(name)
        m = dg.submodule(name)
        names.update(f"{name}.{n}" if name else n for n, _ in m.named_modules() if n)
    return names


def find_groups(dg: "TracedView", ignored_layers: Iterable = (), policy: str = "heads",
                param_roots: bool = False) -> list[Group]:
    """Every group of the model, in graph order, each from its first layer. With
    ``param_roots`` also the prunable dims of parameters no layer owns (fused MoE experts'
    ``gate_up_proj``), each rooted at its parameter."""
    graph = dg.graph
    ignored = _ignored_names(dg, ignored_layers)
    ignored_out = set()
    for name in ignored:
        m = dg.submodule(name)
        spec = dg.registry.lookup(m)
        if spec is not None and spec.coupled(m) and name not in _top(ignored):
            continue  # a norm inside an ignored head produces no channels of its own
        try:
            ignored_out.add(dg.root_vertex(name, "out"))
        except Exception:
            pass
    covered: set[int] = set()
    groups: list[Group] = []
    scopes: dict[str, bool] = {}
    for node in graph.nodes.values():
        name = _layer_of(dg, node, scopes)
        if name is None or name in ignored:
            continue
        try:
            root = dg.root_vertex(name, "out")
        except Exception:
            continue
        if root in covered:
            continue
        group = _group_at(dg, name, root, policy, ignored_out, covered)
        groups.append(group)
    if param_roots:
        groups.extend(_param_groups(dg, policy, ignored, ignored_out, covered))
    return groups


def _param_groups(dg, policy, ignored, ignored_out, covered) -> list[Group]:
    """Groups rooted at the dims of bare parameters (of modules that are not layers) that
    no layer's group covers; only the prunable ones (a dim that reaches an op nobody
    described, such as the experts dim gathered by routing, is no group)."""
    G, graph = dg.dg, dg.graph
    layer_owned = {n.module for n in graph.nodes.values() if n.kind == NODE_LAYER and n.module}
    out = []
    for value in graph.values.values():
        if value.kind != PARAM:
            continue
        owner = value.name.rpartition(".")[0]
        if owner in layer_owned or owner in ignored:
            continue
        for dim in range(len(value.shape)):
            root = G.vertex_of.get((value.id, dim))
            if root is None or root in covered or G.size[root] < 2:
                continue
            group = _group_at(dg, value.name, root, policy, ignored_out, covered)
            if group.prunable:
                out.append(group)
    return out


def _group_at(dg, name: str, root: int, policy, ignored_out, covered) -> Group:
    """The group of everything coupled to vertex ``root`` (``name``'s channels)."""
    G = dg.dg
    size = G.size[root]
    group = Group(name, root, size, [])
    # every channel but one: removing *all* of them at once would also empty the dims a
    # reshape merged them with (InstanceNorm's view(1, B * C, H, W) takes the batch along,
    # and with it every other group), which no selection does: one unit always stays
    all_but_one = close(G, {root: np.arange(min(1, size - 1), size, dtype=im.INDEX)},
                        policy=policy)
    maps = _channel_maps(all_but_one, root, size)
    if maps is not None:
        units, touched = list(np.arange(size, dtype=im.INDEX).reshape(-1, 1)), None
        group.channel_units = True
        if maps == "identity":
            group.closure = all_but_one
    else:
        units, touched = compute_units(dg, group, policy, with_touched=True)
    if touched is not None:
        # whole heads, group slots: the members are what the units reach, and the group is
        # judged by what one unit does (removing *every* channel at once widens through
        # reshapes into dims no real selection touches: a rotary table shared by all layers)
        members = list(touched)
        probe = close(G, {root: units[0]}, policy=policy)
    else:
        probe = all_but_one
        members = [v for v in probe.order if probe.count(v)]
    group.members = members
    group.units = units
    group.layers = _layers(dg, members)
    covered.update(members)
    bad = [p for p in probe.problems if p.kind != "all-channels"]
    hit_ignored = [v for v in members if v in ignored_out]
    if hit_ignored:
        group.pinned_by = _vertex_module(dg, hit_ignored[0])
        group.problem = f"coupled to the output channels of ignored layer {group.pinned_by}"
    elif bad:
        group.problem = bad[0].message
        group.pinned_by = bad[0].node
    elif size < 2:
        group.problem = "has a single channel"
    elif len(units) < 2:
        widened = close(G, {root: units[0][:1]}, policy=policy).widened_by
        group.pinned_by = widened[0] if widened else None
        group.problem = "its channels form a single unit" + (
            f": {', '.join(widened[:3])}{' ...' if len(widened) > 3 else ''} widen one "
            f"channel to all {size} (whole heads or groups that do not line up)"
            if widened else "")
    group.kind = _kind(dg, probe, members)
    return group


def _layer_of(dg: "TracedView", node, scopes: dict[str, bool]) -> str | None:
    """The layer a node is the first call of: a leaf layer, or a layer with children of its
    own whose ops ran in its scope (a conv subclass that pads with a child module first)."""
    if node.kind == NODE_LAYER:
        return node.module if node.module and not node.call_index else None
    scope = node.scope
    if node.kind != "op" or not scope or scope in dg.graph.module_nodes:
        return None
    known = scopes.get(scope)
    if known is None:
        try:
            m = dg.submodule(scope)
        except AttributeError:
            m = None
        known = scopes[scope] = bool(m is not None and m._parameters and
                                     dg.owns_traced_params(m))
    return scope if known else None


def _top(names: set[str]) -> set[str]:
    """The ignored names the user gave (not the submodules added under them)."""
    return {n for n in names if not any(n.startswith(o + ".") for o in names if o != n)}


def _layers(dg: "TracedView", members: list[int]) -> list[str]:
    out = []
    for v in members:
        key = dg.dg.key[v]
        if key[0] == "virtual":
            mod = dg.dg.virtuals[v].module
        else:
            val = dg.graph.values[key[0]]
            mod = None
            if val.kind in (PARAM, BUFFER):
                # a bare parameter of the model itself (cls_token) is named by itself
                mod = val.name.rpartition(".")[0] or val.name
        if mod is not None and mod not in out:
            out.append(mod)
    return out


def _vertex_module(dg, v: int) -> str:
    key = dg.dg.key[v]
    if key[0] == "virtual":
        return dg.dg.virtuals[v].module or "?"
    return dg.graph.values[key[0]].name.rpartition(".")[0]


def _kind(dg: "TracedView", probe: Closure, members: list[int]) -> str:
    """residual (a join of two branches from different layers: the residual stream), heads
    (attention heads or head dims), or plain channels."""
    G = dg.dg
    graph = dg.graph
    member_values = {G.key[v][0] for v in members if G.key[v][0] != "virtual"}
    for value in member_values:
        for reader in G.readers.get(value, ()):
            node = graph.nodes.get(reader[0])
            if node is None or node.type not in _JOIN_TYPES:
                continue
            acts = [x for x in node.inputs if graph.values[x].kind == ACTIVATION
                    and x in member_values]
            if len({_source_layer(graph, x) for x in acts}) >= 2:
                return KIND_RESIDUAL
    heads = G.head_like()
    if any(heads[v] for v in members):
        return KIND_HEADS
    for value in member_values:
        for reader in G.readers.get(value, ()):
            node = graph.nodes.get(reader[0])
            if node is not None and reader[1] >= 0 and node.calls and node.calls[
                    reader[1]].packet in _ATTENTION_OPS and len(graph.values[value].shape) >= 3:
                return KIND_HEADS
    return KIND_CHANNELS


_ATTENTION_OPS = {"bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_attention_math",
                  "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention"}


def _source_layer(graph, value: int, limit: int = 400) -> str | None:
    """The nearest layer a value comes from, following first inputs through ops."""
    for _ in range(limit):
        v = graph.values[value]
        node = graph.nodes.get(v.producer) if v.producer else None
        if node is None:
            return v.name or f"value{value}"
        if node.kind != "op":
            return node.id
        acts = [x for x in node.inputs if graph.values[x].kind in (ACTIVATION, "input")]
        if not acts:
            return node.id
        value = acts[0]
    return None


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------
def compute_units(dg: "TracedView", group: Group, policy: str = "heads",
                  max_closures: int = 4096, with_touched: bool = False):
    """Minimal prunable index sets of the root (singletons for plain channels). With
    ``with_touched`` also the vertices the units reach (None for plain channels)."""
    if group.units is not None and not with_touched:
        return group.units
    G = dg.dg
    first = close(G, {group.vertex: np.array([0], dtype=im.INDEX)}, policy=policy)
    if not first.expanded and first.pruned(group.vertex).tolist() == [0] and not _repeats(first):
        units = list(np.arange(group.size, dtype=im.INDEX).reshape(-1, 1))
        return (units, None) if with_touched else units
    remaining = np.ones(group.size, dtype=bool)
    units = []
    touched: dict[int, None] = {}  # in the order the closures reach them
    while remaining.any() and len(units) < max_closures:
        i = int(np.argmax(remaining))
        cl = first if i == 0 else close(G, {group.vertex: np.array([i], dtype=im.INDEX)},
                                        policy=policy)
        touched.update((v, None) for v in cl.order if cl.count(v))
        u = cl.pruned(group.vertex)
        u = u[remaining[u]]
        if len(u) == 0:
            u = np.array([i], dtype=im.INDEX)
        remaining[u] = False
        units.append(u)
    if remaining.any():
        units.extend(np.array([i], dtype=im.INDEX) for i in np.nonzero(remaining)[0])
    return (units, touched) if with_touched else units


def _channel_maps(cl: Closure, root: int, size: int) -> str | None:
    """Is every channel a unit of its own, judged from the closure of all channels but the
    first? Channels are tied only through a reshape or a many-to-one map: where the closure
    met neither, left the first channel alone and refused nothing, each channel closes to
    itself (``"maps"``; ``"identity"`` when every relation it met is an identity, so every
    member loses exactly the root's indices). None: decided channel by channel in
    ``compute_units``."""
    if size < 2 or cl.expanded or cl.count(root) != size - 1 or cl.masks[root][0] or any(
            p.kind != "all-channels" for p in cl.problems):
        return None
    identity = True
    for rel in _rels_met(cl):
        if not isinstance(rel, MapRel) or _many_to_one(rel):
            return None
        if rel.owner is not None:
            identity = False
    return "identity" if identity else "maps"


def _repeats(cl: Closure) -> bool:
    """Did the closure pass a many-to-one map (a repeat, GQA's shared heads)?"""
    return any(isinstance(rel, MapRel) and _many_to_one(rel) for rel in _rels_met(cl))


def _rels_met(cl: Closure):
    """Every relation at a vertex the closure reached."""
    rels, adj = cl.dg.rels, cl.dg.adj
    return (rels[ri] for v in cl.order for ri in adj[v])


def _many_to_one(rel: MapRel) -> bool:
    return rel.owner is not None and not rel.owner.injective


# ---------------------------------------------------------------------------------------------
# importance
# ---------------------------------------------------------------------------------------------
ScoreFn = Callable[[str, torch.Tensor, int, nn.Module], np.ndarray | None]


_CHUNK = 1 << 18  # elements of |w| held at once (1 MB): allocated once, stays in cache


def _row_col_sums(w2: torch.Tensor, p: int, cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of |w|^p over each row and each column of a 2-D view, a block of rows at a time
    through one small reused buffer: one read of the weight, and no large temporary (a fresh
    one per weight costs page faults worth more than the sums)."""
    n_rows, n_cols = w2.shape
    step = max(1, _CHUNK // max(n_cols, 1))
    scratch = cache.get("_scratch")
    need = min(step, n_rows) * n_cols
    if scratch is None or scratch.numel() < need or scratch.dtype != w2.dtype:
        scratch = cache["_scratch"] = torch.empty(max(need, _CHUNK), dtype=w2.dtype)
    rows = torch.empty(n_rows, dtype=w2.dtype)
    cols = None
    for r0 in range(0, n_rows, step):
        block = w2[r0:r0 + step]
        a = scratch[:block.numel()].view(block.shape)
        torch.abs(block, out=a) if p == 1 else torch.mul(block, block, out=a)
        torch.sum(a, 1, out=rows[r0:r0 + step])
        cols = a.sum(0) if cols is None else cols.add_(a.sum(0))
    return rows, cols


def slice_scores(kind: str, cache: dict | None = None) -> ScoreFn:
    """Per-index score of a tensor along a dim, for one strategy. With a ``cache``, a weight's
    rows and columns are scored from one pass over it."""

    def dim_sum(a, dim):
        # two contiguous reductions (leading dims first, then each channel's block) are
        # 3-7x faster than one reduction over the non-contiguous dims (a conv's input side)
        c = a.shape[dim]
        if dim == 0 or a.dim() == 1:
            return a.reshape(c, -1).sum(1)
        before = 1
        for d in a.shape[:dim]:
            before *= d
        return a.reshape(before, -1).sum(0).reshape(c, -1).sum(1)

    def powered_norm(name, t, dim, p):
        """sum |t|^p over every dim but ``dim``: L1 for p=1, squared L2 for p=2. A weight's
        two sides (rows and columns) come from one pass over it, kept in ``cache``."""
        key = (name, "sides", p)
        sides = cache.get(key) if cache is not None else None
        if sides is not None and dim in sides:
            return sides[dim]
        w = t.detach()
        if w.dtype != torch.float32:
            w = w.float()
        if w.dim() < 2:  # a norm's scale, a bias: one entry per channel already
            if w.device.type == "cpu":  # in numpy, straight to the float64 of the totals
                a = w.numpy()
                # (|x| is exact in float64; x*x is rounded in float32, as torch does it)
                return np.abs(a, dtype=np.float64) if p == 1 else np.square(a).astype(np.float64)
            return (w.abs() if p == 1 else w * w).numpy()
        if cache is None or dim > 1:
            return dim_sum(w.abs() if p == 1 else w * w, dim).numpy()
        rows, cols = _row_col_sums(w.reshape(w.shape[0], -1), p, cache)
        sides = {0: rows.numpy(), 1: cols.reshape(w.shape[1], -1).sum(1).numpy()}
        cache[key] = sides
        return sides[dim]

    def l1(name, t, dim, module):
        return powered_norm(name, t, dim, 1)

    def l2(name, t, dim, module):
        return powered_norm(name, t, dim, 2)

    def bn_scale(name, t, dim, module):
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)) \
                and name.endswith("weight"):
            return t.detach().abs().float().numpy().reshape(-1)
        return None

    def taylor(name, t, dim, module):
        # signed: a unit's first-order loss change is |sum of g*w over everything it
        # removes| (Molchanov et al. 2019), so the sign is dropped after aggregation
        if t.grad is None:
            return None
        with torch.no_grad():
            return dim_sum((t.detach() * t.grad.detach()).float(), dim).numpy()

    return {"l1": l1, "l2": l2, "bn_scale": bn_scale, "lamp": l2, "taylor": taylor,
            "random": l1}.get(kind, l1)


def _lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP: a unit's squared magnitude over the sum of those not smaller than it. Applied to
    a group's aggregated scores, it keeps the group's own order (local pruning ranks as L2)
    and makes scores of different groups comparable (global pruning)."""
    order = np.argsort(scores, kind="stable")  # ties: the lower index counts as smaller
    sorted_s = scores[order]
    suffix = np.cumsum(sorted_s[::-1])[::-1]
    out = np.empty_like(scores, dtype=float)
    out[order] = sorted_s / np.maximum(suffix, 1e-12)
    return out


def unit_importance(dg: "TracedView", group: Group, units: list[np.ndarray],
                    strategy: str = "l1", policy: str = "heads",
                    rng: np.random.Generator | None = None,
                    cache: dict | None = None) -> np.ndarray:
    """One score per unit; lower is pruned first. ``cache`` keeps per-tensor scores across
    groups (a DenseNet layer's weight is a member of dozens of groups)."""
    if strategy == "random":
        rng = rng or np.random.default_rng(0)
        return rng.random(len(units))
    G = dg.dg
    n = len(units)
    totals = np.zeros(n)
    singletons = n == group.size  # units partition the channels: one channel each
    per_vertex_scores: dict[int, np.ndarray] = {}
    for v in group.members:
        key = G.key[v]
        if key[0] == "virtual":
            continue
        val = dg.graph.values[key[0]]
        if val.kind != PARAM:
            continue
        ckey = (val.name, key[1], strategy)
        if cache is not None and ckey in cache:
            s = cache[ckey]
        else:
            s = dg.channel_scores(val.name, key[1], strategy, cache)
            if s is not None:
                s = np.asarray(s, dtype=float)
            if cache is not None:
                cache[ckey] = s
        if s is None:
            continue
        per_vertex_scores[v] = s
    if not per_vertex_scores and strategy in ("bn_scale", "taylor"):
        return unit_importance(dg, group, units, "l1", policy, cache=cache)
    if singletons:
        labels = propagate_labels(dg, group)
        root = labels[group.vertex]  # arange: members reached by identities share it
        for v, s in per_vertex_scores.items():
            lab = labels.get(v)
            if lab is None:
                continue
            if lab is root:  # channel i follows root channel i: no reordering to sum
                totals += s
                continue
            ok = lab >= 0
            totals += np.bincount(lab[ok], weights=s[ok], minlength=n)[:n]
    else:
        for k, u in enumerate(units):
            cl = close(G, {group.vertex: u}, policy=policy)
            for v, s in per_vertex_scores.items():
                m = cl.masks.get(v)
                if m is not None:
                    totals[k] += s[m].sum()
    if strategy == "l2":
        totals = np.sqrt(totals)
    elif strategy == "lamp":  # LAMP over the group's squared L2 norms (Lee et al. 2021)
        totals = _lamp(totals)
    elif strategy == "taylor":
        totals = np.abs(totals)
    return totals


def propagate_labels(dg: "TracedView", group: Group) -> dict[int, np.ndarray]:
    """For a group of single-channel units: which root channel every member index follows."""
    G = dg.dg
    members = set(group.members)
    labels: dict[int, np.ndarray] = {group.vertex: np.arange(group.size, dtype=im.INDEX)}
    # vertices whose every index is labelled: their labels never change again, so an
    # identity passes the very array on (shared, never written) and nothing is compared
    full = {group.vertex}
    queue = [group.vertex]
    while queue:
        v = queue.pop()
        lab = labels[v]
        for ri in G.adj[v]:
            rel = G.rels[ri]
            updates = []
            if isinstance(rel, MapRel):
                other = rel.b if rel.a == v else rel.a
                if other not in members:
                    continue
                if rel.owner is None:
                    updates.append((other, lab))
                elif rel.a == v:
                    o = rel.owner.owner
                    new = np.where(o >= 0, lab[np.clip(o, 0, None)], -1)
                    updates.append((other, new))
                else:
                    new = np.full(G.size[other], -1, dtype=im.INDEX)
                    o = rel.owner.owner
                    ok = o >= 0
                    new[o[ok]] = lab[ok]
                    updates.append((other, new))
            elif isinstance(rel, BlockRel):
                updates.extend(_block_labels(G, rel, labels, members))
            for other, new in updates:
                if other in full:
                    continue
                cur = labels.get(other)
                if cur is None:
                    if new is lab and v in full:  # an identity from a complete labelling
                        labels[other] = lab
                        full.add(other)
                    else:  # first label: all of ``new`` (its own copy, filled later)
                        labels[other] = np.array(new, dtype=im.INDEX)
                    queue.append(other)
                    continue
                fill = (cur < 0) & (new >= 0)
                if fill.any():
                    cur[fill] = new[fill]
                    queue.append(other)
    return labels


def _block_labels(G, rel: BlockRel, labels, members):
    out = []
    for src, dst in ((rel.left, rel.right), (rel.right, rel.left)):
        have = [labels.get(x) for x in src]
        if all(h is None for h in have):
            continue
        sizes = [G.size[x] for x in src]
        elem = np.full(sizes, -1, dtype=im.INDEX)
        for axis, lab in enumerate(have):
            if lab is None:
                continue
            shape = [1] * len(sizes)
            shape[axis] = sizes[axis]
            elem = np.maximum(elem, lab.reshape(shape))
        elem = elem.reshape(-1)
        dsizes = [G.size[x] for x in dst]
        grid = elem.reshape(dsizes)
        for axis, x in enumerate(dst):
            if x not in members:
                continue
            other = tuple(a for a in range(len(dsizes)) if a != axis)
            lo = grid.min(axis=other) if other else grid
            hi = grid.max(axis=other) if other else grid
            out.append((x, np.where(lo == hi, hi, -1)))
    return out
