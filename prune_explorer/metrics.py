"""Parameters and MACs (multiply-accumulates; "FLOPs" as torch-pruning and thop count them),
per node and in total, from the traced graph — before a plan, and predicted after it.

MACs come from PyTorch's own ``torch.utils.flop_counter`` formulas (convolutions, matmuls,
attention), applied to recorded shapes; predicting a plan's effect re-applies them to the
shapes the plan will leave, without running the model.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .graph import Call, Graph, Ref
from .module_walk import named_modules

try:
    from torch.utils.flop_counter import flop_registry as _FLOP_REGISTRY
except Exception:  # pragma: no cover
    _FLOP_REGISTRY = {}
# the packets that do multiply-accumulates: PyTorch's FLOP formulas, and the ones fast_macs knows
MAC_OPS = frozenset({getattr(p, "__name__", str(p)) for p in _FLOP_REGISTRY} | {
    "convolution", "_convolution", "mm", "addmm", "bmm", "baddbmm"})


def count_params(model: nn.Module) -> int:
    """Number of parameters (tied parameters counted once), as the classic ``tp.utils``."""
    seen: set[int] = set()
    total = 0
    for _name, m in named_modules(model):
        for p in m._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def node_macs(graph: Graph) -> dict[str, int]:
    """MACs of every node, as traced (kept with the graph after the first call)."""
    memo = graph.memo.get("node_macs")
    if memo is None:
        memo = graph.memo["node_macs"] = {
            nid: sum(c.macs for c in n.calls) for nid, n in graph.nodes.items()}
    return memo


def total_macs(graph: Graph, opaque_macs: Callable | None = None) -> int:
    total = sum(node_macs(graph).values())
    if opaque_macs is not None:
        total += sum(opaque_macs(n, {}) for n in graph.nodes.values() if n.opaque)
    return total


def _resolve(op: str):
    parts = op.split(".")
    if len(parts) < 2 or parts[0] != "aten":
        return None
    packet = getattr(torch.ops.aten, parts[1], None)
    return packet


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def fast_macs(packet: str, args: tuple, shape_of, out_shapes: list) -> int | None:
    """MACs of the common ops straight from shapes (what torch.utils.flop_counter counts,
    halved), without its pytree machinery; None for ops it does not cover."""
    if packet in ("convolution", "_convolution"):
        x, w = shape_of(args[0]), shape_of(args[1])
        transposed = bool(args[6]) if len(args) > 6 else False
        spatial = x[2:] if transposed else out_shapes[0][2:]
        return x[0] * _prod(w) * _prod(spatial)
    if packet in ("mm", "addmm"):
        a, b = (shape_of(args[0]), shape_of(args[1])) if packet == "mm" else (
            shape_of(args[1]), shape_of(args[2]))
        return a[0] * a[1] * b[1]
    if packet in ("bmm", "baddbmm"):
        a, b = (shape_of(args[0]), shape_of(args[1])) if packet == "bmm" else (
            shape_of(args[1]), shape_of(args[2]))
        return a[0] * a[1] * a[2] * b[2]
    if packet.startswith("_scaled_dot_product"):
        q, k, v = shape_of(args[0]), shape_of(args[1]), shape_of(args[2])
        if len(q) != 4:
            return None
        b, h, sq, dq = q
        return b * h * sq * k[-2] * (dq + v[-1])
    return None


def call_macs(call: Call, shapes: dict[int, tuple[int, ...]]) -> int:
    """MACs of one call with tensors of the given shapes (value id -> shape)."""
    def shape_of(x):
        return shapes[x.value] if isinstance(x, Ref) else x

    try:
        fast = fast_macs(call.packet, call.args, shape_of,
                         [shapes[o] for o in call.outputs if o is not None])
    except (IndexError, TypeError, KeyError):
        fast = None
    if fast is not None:
        return fast
    packet = _resolve(call.op)
    formula = _FLOP_REGISTRY.get(packet) if packet is not None else None
    if formula is None:
        return 0

    def sub(x):
        if isinstance(x, Ref):
            return torch.Size(shapes[x.value])
        if isinstance(x, (list, tuple)) and any(isinstance(i, Ref) for i in x):
            return type(x)(sub(i) for i in x)
        return x

    args = tuple(sub(a) for a in call.args)
    kwargs = {k: sub(v) for k, v in call.kwargs.items()}
    outs = [torch.Size(shapes[o]) if o is not None else None for o in call.outputs]
    out_val = outs[0] if len(outs) == 1 else tuple(outs)
    try:
        return int(formula(*args, **kwargs, out_val=out_val)) // 2
    except Exception:
        return call.macs


def predicted_node_macs(graph: Graph, shapes: dict[int, tuple[int, ...]],
                        nodes: list[str]) -> dict[str, int]:
    """MACs of ``nodes`` once their tensors have ``shapes`` (others as traced)."""
    full = dict(graph.shapes())
    full.update(shapes)
    return {nid: sum(call_macs(c, full) if c.packet in MAC_OPS else 0
                     for c in graph.nodes[nid].calls)
            for nid in nodes}


def params_of(model: nn.Module) -> dict[str, int]:
    """Parameters per module (its own tensors only)."""
    return {name: sum(p.numel() for p in m.parameters(recurse=False))
            for name, m in model.named_modules()}
