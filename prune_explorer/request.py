"""What a single-layer request (``DG.get_pruning_plan(layer, fn, idxs)``) means at its edges:

- ``idxs=[]`` is a no-op plan (the classic scripts loop until a layer has one channel left
  and then ask for nothing);
- a layer with one channel has no dim-graph vertex (size-1 dims carry no index, so tracing
  skips them: giving every batch-1 and 1x1 dim a vertex would cost ~40% of the graph build);
  its width is read from the layer itself, so a request on it is validated like any other;
- an explicit request may change the model's output shape (pruning a classifier or a
  segmentation head, a transformer's hidden size): it is obeyed with a warning that says
  which output changes, as the classic API did. Whole-model pruning keeps refusing.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from torch import nn

from .plan import ROLE_ROOT, Actions, PruningPlan, Step
from .plan_builder import _short

if TYPE_CHECKING:  # pragma: no cover
    from .propagation import Closure


def layer_width(registry, m: nn.Module, side: str) -> int | None:
    """The layer's channel count on ``side``, from its own attributes (None if unknown)."""
    spec = registry.lookup(m)
    if spec is None:
        return None
    count = spec.out_channels if side == "out" else spec.in_channels
    try:
        n = count(m)
    except Exception:
        n = None
    if n is None:
        dims = spec.out_params(m) if side == "out" else spec.in_params(m)
        for attr, dim in dims:
            t = getattr(m, attr, None)
            if t is not None and t.dim() > dim:
                return int(t.shape[dim])
    return n


def empty_plan(G, name: str, side: str, fn_name: str, m: nn.Module,
               problems: list | None = None) -> PruningPlan:
    """A plan that changes nothing: one root step with no indices."""
    nodes = tuple(G.graph.module_nodes.get(name, ()))
    step = Step(target=name, kind=side, fn=fn_name, idxs=[], params=0, macs=0, trigger=fn_name,
                why="the root of the plan (no indices: nothing to prune)",
                module_repr=_short(m), nodes=nodes, role=ROLE_ROOT)
    plan = PruningPlan(G, name, side, [], [step], Actions(), 0, 0, list(problems or []), {}, 0)
    plan._version = G.version
    plan._closure = None
    plan.suspect_nodes = []
    plan.needs_verification = False
    plan.touched_nodes = set()
    return plan


def output_changes(dg, cl: "Closure") -> list[str]:
    """How the closure changes the model's fixed outputs, in words (one per changed dim)."""
    graph = dg.graph
    outputs = set(graph.fixed_outputs)
    changes = []
    for v in cl.order:
        n = cl.count(v)
        key = dg.key[v]
        if not n or key[0] == "virtual" or key[0] not in outputs:
            continue
        value = graph.values[key[0]]
        after = list(value.shape)
        after[key[1]] -= n
        changes.append(f"{list(value.shape)} -> {after} (the output of {value.producer})")
    return changes


def warn_output_change(root: str, changes: list[str]) -> None:
    if changes:
        warnings.warn(
            f"pruning {root} changes the model's output shape: {'; '.join(changes[:4])}. "
            f"Code that reads the output must expect the new size; pass "
            f"allow_output_change=False to refuse such plans", UserWarning, stacklevel=4)
