"""After exec, the graph follows the model without tracing it again.

A plan knows exactly what it changes: which indices leave which (tensor, dim) and every
virtual dim. So the traced graph and the dim graph are *projected*: shapes shrink, owner maps
and coverage masks keep the rows of the surviving indices, and the int arguments recorded
with each op (view targets, split sizes, conv groups, ...) take their new values. The result is
what a fresh trace of the pruned model records (``tests/test_graph_update.py`` compares the
two after many execs).

Where that cannot be guaranteed, ``project`` returns None and the graph is traced again when
next used: when the plan updates Python attributes or runs a layer's own prune code, when the
model's Python code read a size that changes (it may compute other ints from it), when a dim
shrinks to a single entry (op rules treat size-1 dims as broadcast), or when an op records an
int that equals a changing size and no rule below says what it means.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from . import index_mapping as im
from .attributes import _changed_ints
from .dimgraph import DimGraph, MapRel
from .graph import Call, Graph, Ref


class _Refuse(Exception):
    """The projection cannot be trusted for this plan."""


def project(graph: Graph, dg: DimGraph, closure, new_shapes: dict[int, tuple[int, ...]],
            actions, suspects) -> tuple[Graph, DimGraph] | None:
    """The (graph, dim graph) of the model after the plan, or None: trace again."""
    if actions.ints or actions.opaque or suspects:
        return None
    pruned = {v: closure.masks[v] for v in closure.order if closure.count(v)}
    for v, mask in pruned.items():
        if dg.size[v] - int(mask.sum()) <= 1:
            return None
    changed = {(value, d) for value, shape in new_shapes.items()
               for d, n in enumerate(shape) if n != graph.values[value].shape[d]}
    if changed & graph.shape_reads:
        return None
    try:
        new_graph = _project_graph(graph, dg, pruned, new_shapes, changed)
        return new_graph, _project_dim_graph(dg, new_graph, pruned)
    except _Refuse:
        return None


# ---------------------------------------------------------------------------------------------
# the traced graph
# ---------------------------------------------------------------------------------------------
def _project_graph(graph: Graph, dg: DimGraph, pruned, new_shapes, changed) -> Graph:
    values = dict(graph.values)
    for vid, shape in new_shapes.items():
        values[vid] = dataclasses.replace(values[vid], shape=tuple(shape))
    shapes = {vid: tuple(s) for vid, s in new_shapes.items()}
    changed_values = {v for v, _d in changed}

    def pruned_of(value: int, dim: int) -> np.ndarray:
        v = dg.vertex_of.get((value, dim))
        m = pruned.get(v) if v is not None else None
        return np.nonzero(m)[0] if m is not None else np.zeros(0, dtype=im.INDEX)

    def new_size(src) -> int:
        value, dim, num, den = src
        size = shapes.get(value, graph.values[value].shape)[dim] if value in values else None
        if size is None or (size * num) % den:
            raise _Refuse
        return size * num // den

    touched = set()
    for v in changed_values:
        producer = graph.values[v].producer
        if producer is not None:
            touched.add(producer)
        touched.update(r[0] for r in dg.readers.get(v, ()))
    nodes = dict(graph.nodes)
    for nid in touched:
        node = nodes.get(nid)
        if node is None or not node.calls:
            continue
        calls = tuple(_project_call(nid, ci, call, graph, dg, pruned, shapes, pruned_of,
                                    new_size)
                      for ci, call in enumerate(node.calls))
        py_ints = _project_ints(node.py_ints, node.int_sources, new_size)
        if calls != node.calls or py_ints != node.py_ints:
            nodes[nid] = dataclasses.replace(node, calls=calls, py_ints=py_ints)
    names = {graph.values[v].name: tuple(s) for v, s in new_shapes.items()
             if graph.values[v].name is not None}
    fingerprint = tuple((n, names.get(n, s)) for n, s in graph.fingerprint)
    new = dataclasses.replace(graph, nodes=nodes, values=values, fingerprint=fingerprint,
                              memo={})
    if "value_sized" in graph.memo:  # which values the model's values size: the same ops
        new.memo["value_sized"] = graph.memo["value_sized"]
    # the touched nodes' multiply-accumulates at their new shapes
    from .metrics import MAC_OPS, call_macs
    all_shapes = None
    for nid in touched:
        node = nodes.get(nid)
        if node is None or not any(c.packet in MAC_OPS for c in node.calls):
            continue
        if all_shapes is None:
            all_shapes = new.shapes()
        calls = tuple(dataclasses.replace(c, macs=call_macs(c, all_shapes))
                      if c.packet in MAC_OPS else c for c in node.calls)
        nodes[nid] = dataclasses.replace(node, calls=calls)
    old_macs = graph.memo.get("node_macs")
    if old_macs is not None:  # only the touched nodes' MACs change
        macs = dict(old_macs)
        for nid in touched:
            if nid in nodes:
                macs[nid] = sum(c.macs for c in nodes[nid].calls)
        new.memo["node_macs"] = macs
    return new


def _project_ints(ints: tuple, sources: tuple, new_size: Callable) -> tuple:
    """Python ints read from a tensor's shape follow that shape."""
    if not sources or not any(sources):
        return ints
    return tuple(i if src is None else new_size(src) for i, src in zip(ints, sources))


# packets whose int arguments are dims, kernel sizes, strides or flags: never channel counts
_NO_SIZES = frozenset({
    "permute", "transpose", "t", "cat", "stack", "mean", "sum", "amax", "amin", "max", "min",
    "_softmax", "_log_softmax", "softmax", "log_softmax", "squeeze", "unsqueeze", "flatten",
    "max_pool2d_with_indices", "max_pool1d", "max_pool2d", "max_pool3d_with_indices",
    "avg_pool2d", "avg_pool1d", "avg_pool3d", "_adaptive_avg_pool2d", "adaptive_avg_pool1d",
    "_adaptive_avg_pool3d", "adaptive_max_pool2d", "mean.dim", "var", "std", "var_mean",
    "native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
    "addmm", "mm", "bmm", "baddbmm", "gelu", "hardtanh", "hardtanh_", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "clamp", "clamp_", "pow", "add", "add_", "sub", "sub_",
    "mul", "mul_", "div", "div_", "constant_pad_nd", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_dropout", "dropout", "_scaled_dot_product_flash_attention_for_cpu",
    "roll", "flip", "contiguous", "clone", "_to_copy", "upsample_nearest2d",
    "upsample_bilinear2d", "cumsum", "sort", "argmax", "argmin", "norm", "linalg_vector_norm",
    "unbind", "relu", "relu_", "hardswish", "hardswish_", "silu", "silu_", "sigmoid", "tanh",
    "alias", "detach", "where", "masked_fill", "threshold",
})


def _project_call(nid, ci, call: Call, graph: Graph, dg: DimGraph, pruned, shapes,
                  pruned_of, new_size) -> Call:
    ins = list(call.tensor_args())
    outs = [o for o in call.outputs if o is not None]
    if not any(v in shapes for v in ins + outs):
        return call
    packet = call.packet
    args = list(call.args)
    for pos, old, new in _changed_ints(call, graph, shapes, pruned_of):
        _set_int(args, packet, pos, old, new)
    if packet in ("convolution", "_convolution", "native_group_norm"):
        g = dg.vertex_of.get(("virtual", nid, ci, "groups"))
        if g is not None and g in pruned:
            pos = 8 if packet != "native_group_norm" else 6
            args[pos] = dg.size[g] - int(pruned[g].sum())
        if packet == "native_group_norm" and isinstance(args[0], Ref):
            args[4] = shapes.get(args[0].value, graph.values[args[0].value].shape)[1]
    elif packet in ("zeros", "ones", "empty", "full", "rand", "randn") and outs and \
            isinstance(args[0], (list, tuple)):
        args[0] = type(args[0])(shapes.get(outs[0], graph.values[outs[0]].shape))
    elif packet not in _NO_SIZES and packet not in _PATCHED and (
            _ints(args) or _ints(tuple(call.kwargs.values()))):
        raise _Refuse  # an int argument (a size? an index?) that no rule here updates
    py = call.py
    if py is not None and py[2] and any(py[2]):
        py = (py[0], _project_ints(py[1], py[2], new_size), py[2])
    args = tuple(args)
    if args == call.args and py == call.py:
        return call
    return dataclasses.replace(call, args=args, py=py)


# packets whose size arguments _changed_ints (or the branches above) update
_PATCHED = frozenset({"view", "_unsafe_view", "reshape", "expand", "_reshape_alias", "view_copy",
                      "expand_copy", "new_zeros", "new_ones", "new_empty", "new_full", "split",
                      "split_copy", "split_with_sizes", "split_with_sizes_copy", "slice",
                      "slice_copy", "native_layer_norm", "layer_norm", "convolution",
                      "_convolution", "native_group_norm", "zeros", "ones", "empty", "full",
                      "rand", "randn"})


def _set_int(args: list, packet: str, pos: int, old: int, new: int) -> None:
    """Apply one (position, old, new) of ``_changed_ints`` to a call's arguments."""
    if packet in ("split", "split_copy"):
        args[1] = new
    elif packet in ("slice", "slice_copy"):
        args[pos] = new
    else:  # a size list: view targets, split sizes, normalized_shape
        target = list(args[1])
        target[pos] = new
        args[1] = type(args[1])(target)


def _ints(obj) -> list[int]:
    out = []
    for x in obj:
        if isinstance(x, bool):
            continue
        if isinstance(x, int):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            out.extend(_ints(x))
    return out


# ---------------------------------------------------------------------------------------------
# the dim graph
# ---------------------------------------------------------------------------------------------
def _project_dim_graph(dg: DimGraph, graph: Graph, pruned) -> DimGraph:
    keep = {v: ~m for v, m in pruned.items()}
    size = list(dg.size)
    for v, k in keep.items():
        size[v] = int(k.sum())
    rels = list(dg.rels)
    touched = set()
    for v in pruned:
        touched.update(dg.adj[v])
    for ri in touched:
        rel = rels[ri]
        if isinstance(rel, MapRel) and rel.owner is not None:
            owner = _restrict(rel.owner, keep.get(rel.a), keep.get(rel.b))
            why = rel.why
            if why.startswith(_CONCAT):  # the words say where the piece now starts
                why = f"{_CONCAT}{int(np.argmax(owner.owner >= 0))}"
            rels[ri] = dataclasses.replace(rel, owner=owner, why=why)
    cover = dict(dg.cover)
    for v, k in keep.items():
        c = cover.get(v)
        if c is not None and c is not True:
            cover[v] = c[k]
    return dataclasses.replace(dg, graph=graph, size=size, rels=rels, cover=cover)


_CONCAT = "concatenated at offset "


def _restrict(owner: im.OwnerMap, keep_a, keep_b) -> im.OwnerMap:
    """The owner map between the surviving indices of both sides."""
    o = owner.owner
    size_a = owner.size_a if keep_a is None else int(keep_a.sum())
    if keep_b is not None:
        o = o[keep_b]
    if keep_a is not None:
        renumber = np.cumsum(keep_a) - 1
        valid = o >= 0
        if not keep_a[o[valid]].all():
            raise _Refuse  # a kept index would read a removed one: the closure disagrees
        o = np.where(valid, renumber[np.where(valid, o, 0)], -1).astype(im.INDEX)
    return im.OwnerMap(size_a, len(o), o)
