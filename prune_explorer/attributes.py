"""Python attributes a forward reads to build shapes (``num_heads``, ``head_dim``,
``all_head_size``, ``split_size``, ``nf``): find the ones a plan makes stale.

After pruning, a ``view(B, N, self.num_heads, self.head_dim)`` must see new numbers. For every
recorded reshape/split whose target size changes, we look for an int attribute with the old
value in the module that made the call (and its parents) and plan to set the new value.
Where the Python call passed ``-1`` (or a size read from the tensor), nothing is needed.
Exec checks the model with a forward afterwards, so anything missed is caught and rolled back.
"""

from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from .graph import Call, Graph, Node, Ref

_HINT = re.compile(r"head|dim|size|channel|feature|embed|hidden|width|group|split|attn|inner|"
                   r"^nf$|^nx$|^n_|num_|shape|planes|ratio|heads", re.I)
_SHAPE_OPS = {"view", "_unsafe_view", "reshape", "expand", "_reshape_alias", "view_copy",
              "expand_copy", "new_zeros", "new_ones", "new_empty", "new_full"}
_SIZE_LIST_OPS = _SHAPE_OPS | {"split_with_sizes", "split_with_sizes_copy"}


def _changed_ints(call: Call, graph: Graph, shapes: dict[int, tuple], pruned_of=None
                  ) -> list[tuple[int, int, int]]:
    """(position, old, new) for the int arguments of a call that the new shapes change."""
    packet = call.packet
    out = call.outputs[0] if call.outputs else None
    if packet in _SHAPE_OPS and len(call.args) > 1 and out is not None:
        target = call.args[1]
        if not isinstance(target, (list, tuple)):
            return []
        new = shapes.get(out, graph.values[out].shape)
        if len(new) != len(target):
            return []
        return [(i, int(o), int(n)) for i, (o, n) in enumerate(zip(target, new))
                if isinstance(o, int) and o != -1 and o != n]
    if packet in ("split", "split_copy") and len(call.args) > 1 and isinstance(call.args[1], int):
        src = call.args[0]
        dim = call.args[2] if len(call.args) > 2 else 0
        first = call.outputs[0]
        nd = len(graph.values[first].shape)
        old = call.args[1]
        new = shapes.get(first, graph.values[first].shape)[dim % nd]
        return [(0, int(old), int(new))] if old != new and isinstance(src, Ref) else []
    if packet in ("split_with_sizes", "split_with_sizes_copy") and len(call.args) > 1:
        dim = call.args[2] if len(call.args) > 2 else 0
        res = []
        for i, (o, v) in enumerate(zip(call.args[1], call.outputs)):
            nd = len(graph.values[v].shape)
            n = shapes.get(v, graph.values[v].shape)[dim % nd]
            if o != n:
                res.append((i, int(o), int(n)))
        return res
    if packet in ("slice", "slice_copy") and isinstance(call.args[0], Ref) and pruned_of:
        src = call.args[0].value
        dim = call.args[1] if len(call.args) > 1 else 0
        dim %= max(len(graph.values[src].shape), 1)
        gone = pruned_of(src, dim)
        if not len(gone):
            return []
        size = graph.values[src].shape[dim]
        res = []
        for pos in (2, 3):
            bound = call.args[pos] if len(call.args) > pos else None
            if isinstance(bound, int) and not isinstance(bound, bool):
                b = bound + size if bound < 0 else bound
                if 0 < b < size:
                    new = b - int((gone < b).sum())
                    new = new - (size - len(gone)) if bound < 0 else new
                    if new != bound:
                        res.append((pos, bound, int(new)))
        return res
    if packet in ("native_layer_norm", "layer_norm") and len(call.args) > 1:
        src = call.args[0]
        norm = list(call.args[1])
        if isinstance(src, Ref):
            xs = shapes.get(src.value, graph.values[src.value].shape)
            new = list(xs[len(xs) - len(norm):])
            return [(i, int(o), int(n)) for i, (o, n) in enumerate(zip(norm, new)) if o != n]
    return []


def _pick(cands: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Scalar attributes before containers; names that talk about sizes first; a single
    candidate is taken even with an unhinted name."""
    for pool in ([c for c in cands if isinstance(c[1], int)],
                 [c for c in cands if not isinstance(c[1], int)]):
        hinted = [c for c in pool if _HINT.search(c[0])]
        if hinted:
            return hinted
        if len(pool) == 1:
            return pool
    return []


def _whole_list_update(model, node: Node, call: Call, changes):
    """An attribute holding the whole size list (``self.split_sizes = [4, 8]``,
    ``self.bias_shape = (49, 49, 4)`` passed to ``view``)."""
    if not changes or call.packet not in ("split_with_sizes", "split_with_sizes_copy",
                                          *_SHAPE_OPS):
        return None
    if call.packet in _SHAPE_OPS and (not call.py_ints or list(call.py_ints) != list(
            call.args[1])):
        return None
    old = list(call.args[1])
    new = list(old)
    for pos, _o, n in changes:
        new[pos] = n
    for scope in _scope_chain(node):
        try:
            module = model.get_submodule(scope) if scope else model
        except AttributeError:
            continue
        # the module itself, then its children (a helper method such as rel_pos.get_bias()
        # runs without a forward hook, so its ops carry the parent's scope)
        places = [(scope, module)] + [(f"{scope}.{n}" if scope else n, c)
                                      for n, c in module.named_children()]
        for where, m in places:
            for attr, val in vars(m).items():
                if not attr.startswith("_") and isinstance(val, (list, tuple)) and \
                        list(val) == old:
                    return (where, attr), val, type(val)(new)
    return None


def _scope_chain(node: Node) -> list[str]:
    chain = []
    if node.module:
        chain.append(node.module)
    scope = node.scope
    for _ in range(3):
        chain.append(scope)
        if not scope:
            break
        scope = scope.rpartition(".")[0]
    seen, out = set(), []
    for c in chain:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _candidates(module: nn.Module, old: int) -> list[tuple[str, object]]:
    found = []
    for attr, val in vars(module).items():
        if attr.startswith("_") or isinstance(val, bool):
            continue
        if isinstance(val, int) and val == old:
            found.append((attr, val))
        elif isinstance(val, (tuple, list)) and old in val and all(
                isinstance(x, int) for x in val):
            found.append((attr, val))
    return found


_COUNT = re.compile(r"num|heads$|^n_|groups|count", re.I)


def _by_position(hits, call: Call, pos: int, old: int, changes) -> list:
    """Several int attributes hold ``old`` (``num_heads == head_dim == 3``) while the reshape
    positions holding it end up with different sizes: a count-like name (``num_heads``, ``groups``)
    sizes an outer dim, any other (``head_dim``) the innermost one."""
    ints = [h for h in hits if isinstance(h[1], int)]
    if len(ints) < 2 or call.packet not in _SHAPE_OPS or len(call.args) < 2:
        return hits
    target = call.args[1]
    new_at = {p: n for p, _o, n in changes}
    if len({new_at.get(i, old) for i, t in enumerate(target) if t == old}) <= 1:
        return hits  # every position holding the value ends up the same: update them all
    inner = pos == len(target) - 1
    pick = [h for h in ints if bool(_COUNT.search(h[0])) != inner]
    return pick or hits


def infer_int_updates(model: nn.Module, graph: Graph, nodes: Iterable[str],
                      shapes: dict[int, tuple], pruned_of=None, knows_layer=None
                      ) -> tuple[list[tuple[str, str, object, object]], list[str]]:
    """Planned ``(module, attr, old, new)`` updates for the given touched nodes, and the nodes
    whose Python code passed a changing size that no attribute holds (likely to break)."""
    updates: dict[tuple[str, str], tuple[object, object]] = {}
    unexplained: list[str] = []
    pending: list[tuple] = []
    for nid in nodes:
        node = graph.nodes[nid]
        if node.module and knows_layer is not None and knows_layer(node.module):
            continue  # a known layer's sizes are re-derived from its tensors after exec
        for call in node.calls:
            changes = _changed_ints(call, graph, shapes, pruned_of)
            whole = _whole_list_update(model, node, call, changes)
            if whole is not None:
                key, val, newval = whole
                updates.setdefault(key, (val, newval))
                continue
            python_call = call.py is not None  # its Python call's ints were recorded
            if python_call and call.py_fn in ("chunk", "tensor_split") and call.packet in (
                    "split", "split_copy", "unsafe_split"):
                continue  # chunk(n) keeps n pieces: its int is the count, not the piece size
            for pos, old, new in changes:
                if python_call and old not in call.py_ints:
                    continue  # computed by torch from the tensor itself: adapts on its own
                if call.py_ints and -1 in call.py_ints and call.packet in _SHAPE_OPS:
                    py = call.py_ints
                    if len(py) == len(call.args[1]) and py[pos] == -1:
                        continue
                srcs = call.int_sources
                if python_call and srcs and call.packet in _SIZE_LIST_OPS and len(
                        srcs) == len(call.args[1]) and srcs[pos] is not None:
                    # read from a tensor's shape (c // self.groups, c - self.hidden): adapts
                    continue
                found = False
                for scope in _scope_chain(node):
                    try:
                        module = model.get_submodule(scope) if scope else model
                    except AttributeError:
                        continue
                    hits = _by_position(_pick(_candidates(module, old)), call, pos, old,
                                        changes)
                    if not hits:
                        continue
                    found = True
                    for attr, val in hits:
                        key = (scope, attr)
                        if key in updates:
                            continue
                        newval = new if isinstance(val, int) else type(val)(
                            new if x == old else x for x in val)
                        updates[key] = (val, newval)
                    break
                if not found:
                    found = _child_update(model, node, old, new, updates)
                if not found:  # after every direct update: it may explain this one
                    pending.append((nid, node, call, old, new))
    for nid, node, call, old, new in pending:
        found = _derived_update(model, graph, node, call, old, new, updates)
        if not found:
            found = _config_update(model, node, old, new, updates)
        if not found and nid not in unexplained:
            # an int the code passed (or, with no Python call recorded, one we cannot
            # place) that no attribute holds: exec must verify the model still runs
            unexplained.append(nid)
    return [(m, a, o, n) for (m, a), (o, n) in updates.items()], unexplained


def _child_update(model, node: Node, old: int, new: int, updates: dict) -> bool:
    """A helper method of a child module (``self.rel_pos.get_bias()``) runs without a forward
    hook, so its ops carry the parent's scope: look at the children's attributes, and take a
    size-like one only when exactly one child holds it."""
    scope = node.scope
    try:
        module = model.get_submodule(scope) if scope else model
    except AttributeError:
        return False
    hits = []
    for cname, child in module.named_children():
        for attr, val in vars(child).items():
            if not attr.startswith("_") and type(val) is int and val == old and \
                    _HINT.search(attr):
                hits.append((f"{scope}.{cname}" if scope else cname, attr))
    if len(hits) == 1:
        updates.setdefault(hits[0], (old, new))
        return True
    return False


_INPUT_SIDE = re.compile(r"(^|_)in(_|put|$)|^dim_in|inp", re.I)


def _derived_update(model, graph: Graph, node: Node, call: Call, old: int, new: int,
                    updates: dict) -> bool:
    """A size the code computes from two attributes: ``self.in_channels // self.num_paths``
    (timm's SelectiveKernel split) or ``self.dim * self.num_heads``. The count stays, the
    size-like attribute is updated; taken only when one pair explains ``old`` (or, when the
    op reads the module's input, one input-side name such as ``in_channels``)."""
    for scope in _scope_chain(node):
        try:
            module = model.get_submodule(scope) if scope else model
        except AttributeError:
            continue
        ints = [(a, v) for a, v in vars(module).items()
                if not a.startswith("_") and type(v) is int and v > 1]
        counts = [(a, v) for a, v in ints if _COUNT.search(a)]
        sizes = [(a, v) for a, v in ints if _HINT.search(a) and not _COUNT.search(a)]
        def now(attr, val):  # the value after the updates planned so far
            planned = updates.get((scope, attr))
            return planned[1] if planned is not None and type(planned[1]) is int else val

        hits = []
        for sa, sv in sizes:
            for ca, cv in counts:
                if sv % cv == 0 and sv // cv == old:
                    if now(sa, sv) // now(ca, cv) == new:
                        return True  # already consistent (the count itself changed)
                    hits.append(((scope, sa), sv, new * now(ca, cv)))
                elif sv * cv == old:
                    if now(sa, sv) * now(ca, cv) == new:
                        return True  # heads * head_dim after a head or slot update
                    if new % now(ca, cv) == 0:
                        hits.append(((scope, sa), sv, new // now(ca, cv)))
        if len(hits) > 1 and _reads_module_input(graph, call, scope):
            hits = [h for h in hits if _INPUT_SIDE.search(h[0][1])]
        if len(hits) == 1:
            key, sv, nv = hits[0]
            updates.setdefault(key, (sv, nv))
            return True
        if hits:
            return False
    return False


def _reads_module_input(graph: Graph, call: Call, scope: str) -> bool:
    """Is the call's tensor argument made outside ``scope`` (the module's input)?"""
    src = call.args[0] if call.args else None
    if not isinstance(src, Ref) or not scope:
        return False
    producer = graph.values[src.value].producer or ""
    return producer != scope and not producer.startswith(scope + ".")


def _config_update(model, node: Node, old: int, new: int, updates: dict) -> bool:
    """Hugging Face code sometimes reads sizes from ``self.config`` in forward
    (``reshape(B, -1, self.config.hidden_sizes[-1])``): update the config entry that holds
    the old size, when exactly one does."""
    for scope in _scope_chain(node):
        try:
            module = model.get_submodule(scope) if scope else model
        except AttributeError:
            continue
        config = getattr(module, "config", None)
        if config is None or isinstance(config, nn.Module):
            continue
        hits = []
        for attr, val in vars(config).items():
            if attr.startswith("_") or isinstance(val, bool):
                continue
            if isinstance(val, int) and val == old and _HINT.search(attr):
                hits.append((attr, val, new))
            elif isinstance(val, (list, tuple)) and all(isinstance(x, int) for x in val) \
                    and list(val).count(old) == 1 and _HINT.search(attr):
                hits.append((attr, val, type(val)(new if x == old else x for x in val)))
        if len(hits) == 1:
            attr, val, newval = hits[0]
            updates.setdefault((scope, f"config.{attr}"), (val, newval))
            return True
    return False


def check_updates(model: nn.Module, graph: Graph, shapes: dict[int, tuple],
                  planned: Iterable[tuple]) -> list[tuple[str, str, object, object]]:
    """Int attributes a module's code compared with a size it read (``assert
    hidden_states.shape[1] == self.channels`` in diffusers' Downsample2D): when the plan
    changes that size, the attribute follows it."""
    done = {(m, a) for m, a, _o, _n in planned}
    updates = []
    for where, value, dim, num, den in graph.shape_checks:
        new_shape = shapes.get(value)
        if new_shape is None or value not in graph.values:
            continue
        size_old, size_new = graph.values[value].shape[dim], new_shape[dim]
        old, new = size_old * num // den, size_new * num // den
        if size_old == size_new or new * den != size_new * num:
            continue
        try:
            module = model.get_submodule(where) if where else model
        except AttributeError:
            continue
        for attr, val in _pick([c for c in _candidates(module, old) if isinstance(c[1], int)]):
            if (where, attr) not in done:
                done.add((where, attr))
                updates.append((where, attr, val, new))
    return updates
