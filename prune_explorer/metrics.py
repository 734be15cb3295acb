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

try:
    from torch.utils.flop_counter import flop_registry as _FLOP_REGISTRY
except Exception:  # pragma: no cover
    _FLOP_REGISTRY = {}


def count_params(model: nn.Module) -> int:
    """Number of parameters (tied parameters counted once), as the classic ``tp.utils``."""
    return sum(p.numel() for p in model.parameters())


def node_macs(graph: Graph) -> dict[str, int]:
    """MACs of every node, as traced."""
    return {nid: sum(c.macs for c in n.calls) for nid, n in graph.nodes.items()}


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


def call_macs(call: Call, shapes: dict[int, tuple[int, ...]]) -> int:
    """MACs of one call with tensors of the given shapes (value id -> shape)."""
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
    full = {vid: v.shape for vid, v in graph.values.items()}
    full.update(shapes)
    return {nid: sum(call_macs(c, full) if c.macs else 0 for c in graph.nodes[nid].calls)
            for nid in nodes}


def params_of(model: nn.Module) -> dict[str, int]:
    """Parameters per module (its own tensors only)."""
    return {name: sum(p.numel() for p in m.parameters(recurse=False))
            for name, m in model.named_modules()}
