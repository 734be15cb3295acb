"""Pick channels of one layer with a strategy, judged over the layer's whole coupled group.

    sel = tp.select_channels(DG, "layer1.0.conv1", strategy="l1", amount=0.3, round_to=8)
    sel.idxs       # channels of layer1.0.conv1 to remove (whole units: heads, group slots)
    sel.scores     # one importance score per channel of the layer (lower goes first)
    sel.plan()     # the PruningPlan those channels imply

The explorer's "why these channels" chart and ``prune_model`` use the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import index_mapping as im
from .errors import InvalidAmountError
from .groups import Group, compute_units, unit_importance, _kind, _layers
from .propagation import close
from .strategy import resolve_amount

STRATEGIES = ("l1", "l2", "random", "bn_scale", "lamp", "taylor")


@dataclass
class Selection:
    layer: str
    side: str
    idxs: list[int]
    scores: np.ndarray  # per channel of the layer
    units: list[np.ndarray]
    kind: str
    _dg: object = None
    policy: str = "heads"

    def plan(self, strict: bool = False):
        return self._dg.get_pruning_plan(self.layer, self.side, self.idxs, strict=strict,
                                         policy=self.policy)


def group_for(DG, module, side: str = "out", policy: str = "heads") -> Group:
    """The group of a layer's output (or input) channels, with the layer as its root."""
    name = DG.module_name(module)
    root = DG.root_vertex(name, side)
    size = DG.dg.size[root]
    probe = close(DG.dg, {root: np.arange(size, dtype=im.INDEX)}, policy=policy)
    members = [v for v in probe.order if probe.count(v)]
    g = Group(name, root, size, members, layers=_layers(DG, members))
    g.kind = _kind(DG, probe, members)
    bad = [p for p in probe.problems if p.kind != "all-channels"]
    if bad:
        g.problem = bad[0].message
    return g


def select_channels(DG, module, strategy: str = "l1", amount: float = 0.3,
                    round_to: int | None = None, side: str = "out", policy: str = "heads",
                    seed: int = 0, cache: dict | None = None) -> Selection:
    """``cache``: per-tensor scores kept across calls on the same, unchanged model (the
    report picks channels for every layer; a weight is scored once, not once per layer)."""
    if strategy not in STRATEGIES:
        raise InvalidAmountError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
    DG.check_fresh()  # a model changed behind the graph's back must not be scored
    g = group_for(DG, module, side, policy)
    units = compute_units(DG, g, policy)
    unit_scores = unit_importance(DG, g, units, strategy, policy,
                                  np.random.default_rng(seed), cache=cache)
    per_channel = np.zeros(g.size)
    for u, s in zip(units, unit_scores):
        per_channel[u] = s / max(len(u), 1)
    n = resolve_amount(amount, g.size, round_to or 1, g.root)
    order = np.lexsort((np.arange(len(units)), unit_scores))
    chosen, total = [], 0
    for k in order:
        if total >= n or len(chosen) >= len(units) - 1:
            break
        if total + len(units[k]) <= max(n, len(units[k]) if not chosen else n):
            chosen.append(units[k])
            total += len(units[k])
    idxs = sorted(int(i) for u in chosen for i in u)
    return Selection(g.root, side, idxs, per_channel, units, g.kind, DG, policy)
