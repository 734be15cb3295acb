"""Couplings the model's *code* implies, beyond what each op says.

Two sources, both read from the trace:

* ``view(B, N, self.num_heads, self.head_dim)`` in the q, k and v paths: dims sized by one
  attribute must stay equal, so they are coupled (``shared_size_dims``).
* ``x.transpose(1, 2).reshape(B, N, C)`` with ``C`` read from ``x.shape``: the attention's inner
  width is *defined by* the input's width, so the two are coupled index by index
  (``shape_provenance``), the way ``nn.MultiheadAttention`` couples ``embed_dim``.

Each coupling is returned as ``("map", [(value, dim), ...])`` (identities along the list) or
``("block", [(value, dim)], [(value, dim), ...])`` (a reshape-like product); a trailing
``"unless-related"`` skips it where the ops already relate those dims (a channel shuffle reads
its size from the very tensor it permutes).
"""

from __future__ import annotations

from math import prod

from torch import nn

from .attributes import _HINT
from .graph import Graph

_RESHAPES = ("view", "_unsafe_view", "reshape", "_reshape_alias")


def _reshape_calls(node):
    """Reshapes whose Python call passed exactly the target's ints (view(B, N, H, D))."""
    for call in node.calls:
        if call.packet not in _RESHAPES or len(call.args) < 2 or not call.outputs:
            continue
        target = call.args[1]
        if call.py_fn in _RESHAPES + ("view",) and isinstance(target, (list, tuple)) and \
                len(target) == len(call.py_ints):
            yield call, list(target)


def shared_size_dims(model: nn.Module, graph: Graph) -> list[list[tuple[int, int]]]:
    """Innermost reshape dims sized by the same attribute (``self.head_dim`` in the q, k and
    v views). After pruning they must stay equal, so they are coupled."""
    buckets: dict[tuple, list[tuple[int, int]]] = {}
    for node in graph.nodes.values():
        if not any(c.py_ints for c in node.calls):
            continue
        owner = node.module or node.scope  # a leaf module's own attributes, else its scope's
        try:
            scope = model.get_submodule(owner) if owner else model
        except AttributeError:
            continue
        attrs = {}
        for attr, val in vars(scope).items():
            if isinstance(val, int) and not isinstance(val, bool) and not attr.startswith("_") \
                    and _HINT.search(attr) and val > 1:
                attrs.setdefault(val, []).append(attr)
        if not attrs:
            continue
        for call, target in _reshape_calls(node):
            out = call.outputs[0]
            sources = call.int_sources or (None,) * len(target)
            for pos, (t, p) in enumerate(zip(target, call.py_ints)):
                if sources[pos] is not None or pos != len(target) - 1:
                    # only the innermost dim (the head dim): a literal 3 that splits q, k, v
                    # must not be taken for num_heads == 3
                    continue
                if p == t and t in attrs:
                    # several attributes may hold the value (num_heads == head_dim == 3):
                    # views sized by the same set of them are still sized alike
                    key = (owner, tuple(attrs[t]), pos - len(target))
                    buckets.setdefault(key, []).append((out, pos))
    return [("map", dims) for dims in buckets.values() if len(dims) > 1]


def equal_split_pieces(model: nn.Module, graph: Graph) -> list[tuple]:
    """``a, b = x.split((self.c, self.c), 1)`` (YOLO's C2PSA): one int attribute sizes every
    piece, so the pieces must stay equal and lose the same slots, as a chunk's do. Not when a
    list attribute holds the sizes (``self.split_sizes = [6, 6]``: each updated on its own),
    nor when a size was computed from the tensor (``C - self.hidden``: it adapts)."""
    found = []
    for node in graph.nodes.values():
        for call in node.calls:
            if call.packet not in ("split_with_sizes", "split_with_sizes_copy") or \
                    call.py is None:
                continue
            sizes = list(call.args[1])
            n = len(sizes)
            if n < 2 or len(set(sizes)) > 1 or list(call.py_ints[:n]) != sizes or any(
                    call.int_sources[:n]):
                continue
            owner = node.module or node.scope
            try:
                scope = model.get_submodule(owner) if owner else model
            except AttributeError:
                continue
            values = [v for a, v in vars(scope).items() if not a.startswith("_")]
            if any(isinstance(v, (list, tuple)) and list(v) == sizes for v in values) or not any(
                    type(v) is int and v == sizes[0] for v in values):
                continue
            outs = [o for o in call.outputs if o is not None]
            nd = len(graph.values[outs[0]].shape)
            dim = (call.args[2] if len(call.args) > 2 else call.kwargs.get("dim", 0)) % nd
            found.append(("map", [(o, dim) for o in outs]))
    return found




# ops that make a dim of a size the code passes: the size argument's position, per packet
_SIZED = {"expand": 1, "repeat": 1, "new_zeros": 1, "new_ones": 1, "new_empty": 1,
          "new_full": 1, "zeros": 0, "ones": 0, "empty": 0, "full": 0, "randn": 0, "rand": 0}


def _sized_calls(node):
    """``x.expand(B, N, C)``, ``ids.repeat(1, 1, C)``, ``torch.zeros(B, N, C)``: calls whose
    Python ints give the output's sizes (for repeat: the sizes of dims that were 1)."""
    for call in node.calls:
        pos = _SIZED.get(call.packet)
        if pos is None or len(call.args) <= pos or not call.outputs or \
                call.py_fn != call.packet:
            continue
        target = call.args[pos]
        if isinstance(target, (list, tuple)) and len(target) == len(call.py_ints):
            yield call, list(target)


def shape_provenance(graph: Graph) -> list[tuple]:
    """Target dims of reshapes (and of expand / repeat / factories) whose size the code read
    from another tensor's dim: they follow that dim when it is pruned."""
    found = []
    for node in graph.nodes.values():
        for call, target in list(_reshape_calls(node)) + list(_sized_calls(node)):
            if not any(call.int_sources):
                continue
            out = call.outputs[0]
            shape = graph.values[out].shape
            if len(shape) != len(target):
                continue
            for k, src in enumerate(call.int_sources):
                if src is None or shape[k] <= 1:
                    continue
                value, dim, num, den = src
                if value not in graph.values or graph.values[value].shape[dim] <= 1:
                    continue
                size = graph.values[value].shape[dim]
                if num == 1 and den == 1 and size == shape[k]:
                    found.append(("map", [(value, dim), (out, k)], "unless-related"))
                elif num == 1 and den > 1:
                    # C // heads: the dims just before it make up the rest of C
                    for j in range(k - 1, -1, -1):
                        if prod(shape[j:k + 1]) == size:
                            if all(call.int_sources[i] is None for i in range(j, k)):
                                found.append(("block", [(value, dim)],
                                              [(out, i) for i in range(j, k + 1)],
                                              "unless-related"))
                            break
                        if prod(shape[j:k + 1]) > size:
                            break
    return found
