"""prune_model(): one call prunes every prunable group of a model (``tp.prune_model``).

    report = tp.prune_model(model, x, amount=0.5, strategy="l1", ignored_layers=[model.fc])

Per group (default) each group loses ``amount`` of its channels, chosen by the group-level
importance of its units; with ``global_pruning=True`` one ranking runs across all groups,
scores normalised per group, with a floor so that no layer loses every channel. All groups
are executed as one transactional plan (checked by a forward, rolled back on failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
from torch import nn

from . import index_mapping as im
from .dependency import DependencyGraph
from .errors import InvalidAmountError
from .groups import (KIND_RESIDUAL, Group, compute_units, find_groups, propagate_labels,
                     unit_importance)
from .metrics import count_params, total_macs
from .plan import PruningPlan
from .propagation import close, union_of_identities
from .forward_io import without_gc

STRATEGY_NAMES = ("l1", "l2", "random", "bn_scale", "lamp", "taylor")


@dataclass
class GroupResult:
    root: str
    kind: str
    channels: int
    pruned: int
    idxs: list[int]
    layers: list[str]


@dataclass
class PruneReport:
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    groups: list[GroupResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (root, reason)
    plan: PruningPlan | None = None

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(self.macs_before, 1)

    def to_dict(self) -> dict:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "groups": [g.__dict__ for g in self.groups],
                "skipped": [list(s) for s in self.skipped]}

    def __str__(self) -> str:
        lines = [f"params {self.params_before:,} -> {self.params_after:,} "
                 f"({100 * (1 - self.params_ratio):.1f}% fewer)",
                 f"MACs   {self.macs_before:,} -> {self.macs_after:,} "
                 f"({100 * (1 - self.macs_ratio):.1f}% fewer)",
                 f"{len(self.groups)} groups pruned, {len(self.skipped)} skipped"]
        for root, why in self.skipped[:10]:
            lines.append(f"  skipped {root}: {why}")
        return "\n".join(lines)


def _check_amount(amount) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or math.isnan(amount):
        raise InvalidAmountError(f"amount must be a fraction in (0, 1), got {amount!r}")
    if not 0 < amount < 1:
        raise InvalidAmountError(f"amount must be a fraction in (0, 1) of each group's channels, "
                                 f"got {amount}; e.g. amount=0.5 removes half")
    return float(amount)


def select_units(units: list[np.ndarray], scores: np.ndarray, amount: float,
                 round_to: int | None, size: int) -> list[int]:
    """The lowest-scored units adding up to ``amount`` of the channels (never more), leaving
    a multiple of ``round_to`` and at least one unit."""
    target = int(amount * size)
    if round_to and round_to > 1:
        target = im.round_remaining(size, target, round_to)
    order = np.lexsort((np.arange(len(units)), scores))
    if len(units) == size:  # one channel per unit: the ``target`` lowest, one unit kept
        return order[:max(0, min(target, size - 1))].tolist()
    sizes = [len(u) for u in units]
    chosen, total = [], 0
    for k in order:
        if len(chosen) >= len(units) - 1 or total >= target:
            break
        if total + sizes[k] <= target:
            chosen.append(int(k))
            total += sizes[k]
    return chosen


@without_gc
def prune_model(model: nn.Module, example_inputs: Any, amount: float = 0.5,
                strategy: str = "l1", ignored_layers: Iterable | None = None,
                round_to: int | None = None, global_pruning: bool = False, *,
                head_pruning: str = "heads", prune_hidden: bool = True,
                max_group_loss: float = 0.9, loss_fn: Callable | None = None,
                verbose: bool = False, DG: DependencyGraph | None = None,
                dry_run: bool = False, seed: int = 0,
                param_roots: bool = False, fixed_outputs="primary") -> PruneReport:
    """Prune every prunable group of ``model`` once by ``amount`` of its channels, in place.

    - ``strategy``: ``"l1"``, ``"l2"``, ``"random"``, ``"bn_scale"`` (network slimming),
      ``"lamp"`` or ``"taylor"`` (needs ``loss_fn(model)`` returning a loss to backprop).
    - ``ignored_layers``: their output channels are never pruned (e.g. the classifier).
    - ``round_to``: keep every group's remaining channel count a multiple of it.
    - ``global_pruning``: rank units across groups (scores normalised per group); no group
      loses more than ``max_group_loss`` of its channels.
    - ``head_pruning``: ``"heads"`` removes whole attention heads (and GQA groups),
      ``"dims"`` the same head_dim slots in every head.
    - ``prune_hidden=False`` keeps the residual stream (the hidden size of a transformer, the
      stage widths of a ResNet): only heads and MLP/intermediate channels shrink — the usual
      LLM recipe.
    Returns a ``PruneReport`` (params and MACs before/after, what each group lost, and the
    groups that were skipped and why). The model still runs and keeps its output shape.
    ``dry_run=True`` changes nothing: the report's ``plan`` is the combined plan, unexecuted,
    and ``params_after``/``macs_after`` are its predictions. ``seed`` drives
    ``strategy="random"``. ``param_roots=True`` also prunes dims of parameters that no layer
    owns (fused MoE experts' intermediate size), as ``prune_pretrained`` does.
    ``fixed_outputs``: which outputs keep their shape (``"primary"``, ``"all"`` or
    ``lambda out: ...``; see ``DependencyGraph.build_dependency``); a model that returns
    features only for its loss (a YOLO head's second output) prunes further with
    ``fixed_outputs=lambda out: out[0]``.
    """
    amount = _check_amount(amount)
    known = STRATEGY_NAMES + tuple(getattr(DG, "extra_strategies", ()))
    if strategy not in known:
        raise InvalidAmountError(f"unknown strategy {strategy!r}; use one of {known}")
    if head_pruning not in ("heads", "dims"):
        raise InvalidAmountError("head_pruning must be 'heads' or 'dims'")
    if round_to is not None and int(round_to) < 1:
        raise InvalidAmountError(f"round_to must be >= 1, got {round_to}")
    traced_now = DG is None and strategy != "taylor"  # (taylor runs the user's loss_fn)
    if DG is None:
        DG = DependencyGraph().build_dependency(model, example_inputs, verbose=verbose,
                                                fixed_outputs=fixed_outputs)
    params_before = count_params(model)
    macs_before = _macs(DG)
    if strategy == "taylor":
        if loss_fn is None:
            raise InvalidAmountError("strategy='taylor' needs loss_fn=lambda model: loss")
        model.zero_grad(set_to_none=True)
        loss_fn(model).backward()

    policy = head_pruning
    groups = find_groups(DG, ignored_layers or (), policy=policy, param_roots=param_roots)
    prunable = [g for g in groups if g.prunable]
    if round_to and prunable and all(round_to > g.size for g in prunable):
        largest = max(prunable, key=lambda g: g.size)
        raise InvalidAmountError(
            f"round_to={round_to} is larger than every prunable group (the largest, "
            f"{largest.root}, has {largest.size} channels); use a round_to of at most "
            f"{largest.size}")
    skipped: list[tuple[str, str]] = [
        (name, "in ignored_layers: its output channels are kept")
        for name in _ignored_roots(DG, ignored_layers or ())]
    candidates: list[tuple[Group, list[np.ndarray], np.ndarray]] = []
    rng = np.random.default_rng(seed)
    score_cache: dict = {}
    for g in groups:
        if not g.prunable:
            skipped.append((g.root, g.problem))
            continue
        if not prune_hidden and g.kind == KIND_RESIDUAL:
            skipped.append((g.root, "residual stream kept (prune_hidden=False)"))
            continue
        if round_to and round_to > g.size:
            skipped.append((g.root, f"round_to={round_to} is larger than its {g.size} "
                                    f"channels"))
            continue
        units = compute_units(DG, g, policy)
        if len(units) < 2:
            skipped.append((g.root, "its channels form a single unit"))
            continue
        scores = unit_importance(DG, g, units, strategy, policy, rng, score_cache)
        candidates.append((g, units, scores))

    if global_pruning:
        chosen = _global_choice(candidates, amount, round_to, max_group_loss)
    else:
        chosen = [select_units(u, s, amount, round_to, g.size) for g, u, s in candidates]

    picks = [(g, units, scores, pick) for (g, units, scores), pick in zip(candidates, chosen)
             if pick]
    active, combined = _select_all(DG, picks, skipped, amount, policy)

    if dry_run:
        plan = None
        if combined is None:
            combined = _combined_closure(DG, active, skipped, policy)
        if combined is not None:
            seeds = {g.vertex: idxs for g, idxs in active}
            plan = DG.plan_from_seeds(seeds, "prune_model", "out", "prune_model",
                                      closure=combined, groups=len(seeds))
        results = [GroupResult(g.root, g.kind, g.size, len(idxs), [int(i) for i in idxs],
                               g.layers) for g, idxs in active]
        removed = plan.params_removed if plan else 0
        return PruneReport(params_before, params_before - removed, macs_before,
                           macs_before - (plan.macs_removed if plan else 0), results, skipped,
                           plan)
    plan = _execute_groups(DG, active, skipped, policy, combined, traced_now)
    results = [GroupResult(g.root, g.kind, g.size, len(idxs), [int(i) for i in idxs], g.layers)
               for g, idxs in active]
    if plan is not None:
        from .execution import HISTORY_ATTR
        history = model.__dict__.get(HISTORY_ATTR)
        if history:
            history[-1]["kind"] = "prune_model"
            history[-1]["settings"] = {"amount": amount, "strategy": strategy,
                                       "round_to": round_to, "global_pruning": global_pruning,
                                       "head_pruning": head_pruning, "prune_hidden": prune_hidden}
    macs_after = macs_before - plan.macs_removed if plan is not None else macs_before
    report = PruneReport(params_before, count_params(model), macs_before, macs_after,
                         results, skipped, plan)
    if verbose:
        print(report)
    return report


class _Selected:
    """One group's selection. Its own closure (which layers and vertices it reaches) is
    computed only when a combined plan has to be narrowed down to the groups involved."""

    __slots__ = ("group", "idxs", "_cl", "_dg", "_policy")

    def __init__(self, DG: DependencyGraph, group: Group, idxs: np.ndarray, policy: str,
                 cl=None):
        self.group, self.idxs, self._cl, self._dg, self._policy = group, idxs, cl, DG, policy

    def __iter__(self):  # (group, idxs), as the results read it
        return iter((self.group, self.idxs))

    def closure(self):
        if self._cl is None:
            self._cl = close(self._dg.dg, {self.group.vertex: self.idxs}, policy=self._policy)
        return self._cl

    def nodes(self) -> set[str]:
        return _closure_nodes(self._dg, self.closure())

    def vertices(self) -> set[int]:
        cl = self.closure()
        return {v for v in cl.order if cl.count(v)}


def _select_all(DG: DependencyGraph, picks: list, skipped: list, amount: float, policy: str):
    """Every group's selection, and their combined closure when it needs no change. Usually
    all selections close together without a problem: one closure decides. Otherwise each
    group is closed alone, backs off where it empties a coupled layer, and the combined
    closure is taken again later (``_combined_closure``)."""
    selected = [(g, units, scores, pick, _union(g, units, pick))
                for g, units, scores, pick in picks]
    if selected:
        combined = None
        if all(s[0].closure is not None for s in selected):  # identities only: assembled
            combined = union_of_identities(DG.dg, [(s[0].closure, s[4]) for s in selected])
        if combined is None:
            combined = close(DG.dg, {s[0].vertex: s[4] for s in selected}, policy=policy)
        if not combined.problems:
            return [_Selected(DG, g, idxs, policy) for g, _u, _s, _p, idxs in selected], \
                combined
    active = []
    for g, units, scores, pick, idxs in selected:
        cl = close(DG.dg, {g.vertex: idxs}, policy=policy)
        while cl.problems and len(pick) > 1:  # too much for some coupled layer: back off
            pick = _back_off(DG, g, units, scores, pick, cl.problems[0], amount)
            idxs = _union(g, units, pick)
            cl = close(DG.dg, {g.vertex: idxs}, policy=policy)
        if cl.problems:
            skipped.append((g.root, cl.problems[0].message))
            continue
        active.append(_Selected(DG, g, idxs, policy, cl))
    return active, None


def _union(g: Group, units: list, pick: list[int]) -> np.ndarray:
    """The channels of the picked units, ascending."""
    if g.channel_units and units is g.units:  # unit k is channel k: no arrays to join
        return np.unique(np.asarray(pick, dtype=im.INDEX))
    return np.unique(np.concatenate([units[k] for k in pick]))


def _back_off(DG: DependencyGraph, g: Group, units, scores, pick: list[int], problem,
              amount: float) -> list[int]:
    """The selection would empty a coupled piece (one part of a split, RAFT's context next to
    its hidden state): the piece keeps the best-scored share ``1 - amount`` of the channels
    that feed it, as if it were a group of its own. Anything else: halve the selection."""
    if problem.kind == "all-channels" and problem.vertex is not None and all(
            len(u) == 1 for u in units):
        lab = propagate_labels(DG, g).get(problem.vertex)
        if lab is not None:
            feeding = {int(c) for c in lab if c >= 0}
            inside = [k for k in pick if int(units[k][0]) in feeding]
            keep = max(1, math.ceil(len(inside) * (1 - amount)))
            if inside and keep < len(pick):
                best = set(sorted(inside, key=lambda k: (-scores[k], k))[:keep])
                return [k for k in pick if k not in best]
    return pick[: len(pick) // 2]


def _ignored_roots(DG: DependencyGraph, ignored) -> list[str]:
    """The ignored layers that would otherwise root a group (traced, with output channels)."""
    from .groups import _flatten
    names = []
    for item in _flatten(ignored):
        if not isinstance(item, (nn.Module, str)):
            continue
        name = DG.module_name(item)
        if name in DG.graph.module_nodes and DG.graph.nodes[DG.graph.module_nodes[name][0]].kind \
                == "layer" and name not in names:
            names.append(name)
    return names


def _closure_nodes(DG: DependencyGraph, cl) -> set[str]:
    nodes = set()
    for v in cl.order:
        key = DG.dg.key[v]
        if key[0] == "virtual":
            nodes.add(DG.dg.virtuals[v].node)
            continue
        value = DG.graph.values[key[0]]
        if value.producer:
            nodes.add(value.producer)
        nodes.update(r[0] for r in DG.dg.readers.get(value.id, ()))
    return nodes


def _combined_closure(DG: DependencyGraph, active: list, skipped: list, policy: str):
    """The closure of every group's selection at once. Groups that are fine alone can widen
    each other through shared reshapes (ShuffleNet's shuffles and chunks): drop the latest
    group involved in a problem until none is left."""
    while active:
        seeds = {a.group.vertex: a.idxs for a in active}
        combined = close(DG.dg, seeds, policy=policy)
        if not combined.problems:
            return combined
        problem = combined.problems[0]
        involved = [a for a in active if problem.vertex in a.vertices()] or active[-1:]
        victim = involved[-1]
        active.remove(victim)
        skipped.append((victim.group.root, f"together with other groups: {problem.message}"))
    return None


def _execute_groups(DG: DependencyGraph, active: list, skipped: list, policy: str,
                    combined=None, traced_now: bool = False):
    """Execute all groups as one plan. If the model's own code breaks on the new sizes (a
    reshape to a size fixed in Python), drop the groups that touch the failing module (and,
    the first time, those touching suspect nodes in modules of the same class: the same code
    repeats) and try again; the model is restored between attempts."""
    from .errors import PlanExecutionError
    first_failure = True
    while active:
        if combined is None:
            combined = _combined_closure(DG, active, skipped, policy)
            if combined is None:
                return None
        seeds = {a.group.vertex: a.idxs for a in active}
        plan = DG.plan_from_seeds(seeds, "prune_model", "out", "prune_model",
                                  closure=combined, policy=policy, groups=len(seeds))
        try:
            DG.execute(plan, _traced_now=traced_now)
            return plan
        except PlanExecutionError as exc:
            scope = getattr(exc.__cause__, "scope", None)
            if scope is None:
                raise

            def inside(nid: str, where_scope: str) -> bool:
                node = DG._graph.nodes.get(nid)
                if not where_scope:  # the model's own forward: ops written there
                    return node is not None and node.scope == ""
                where = [nid] + ([node.scope, node.module or ""] if node else [])
                return any(w == where_scope or w.startswith(where_scope + ".")
                           for w in where if w)

            combined = None  # the groups change: closed again
            bad = [a for a in active if any(inside(n, scope) for n in a.nodes())]
            if first_failure and scope:
                first_failure = False
                cls = type(DG.model.get_submodule(scope))
                alike = {n for n in plan.suspect_nodes
                         if _scope_class(DG, DG._graph.nodes[n].scope) is cls}
                bad += [a for a in active if a not in bad and a.nodes() & alike]
            if not bad:
                raise
            reason = str(exc.__cause__).split(":", 1)[-1].strip()
            for a in bad:
                active.remove(a)
                skipped.append((a.group.root, f"the model's code breaks on the new size at {scope}:"
                                f" {reason[:160]}"))
    return None


def _scope_class(DG: DependencyGraph, scope: str):
    try:
        return type(DG.model.get_submodule(scope)) if scope else type(DG.model)
    except AttributeError:
        return None


def _macs(DG: DependencyGraph) -> int:
    def opaque(node, removed):
        m = DG.submodule(node.module)
        spec = DG.registry.lookup(m)
        return spec.macs(m, node, DG.graph, removed) if spec and spec.macs else 0
    return total_macs(DG.graph, opaque)


def _global_choice(candidates, amount: float, round_to, max_group_loss: float) -> list[list[int]]:
    """One ranking over all units (scores normalised by their group's mean)."""
    entries = []
    total_channels = 0
    for gi, (g, units, scores) in enumerate(candidates):
        mean = float(np.mean(scores)) or 1.0
        total_channels += g.size
        for k, (u, s) in enumerate(zip(units, scores)):
            entries.append((s / mean, gi, k, len(u)))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    budget = int(amount * total_channels)
    lost = [0] * len(candidates)
    chosen: list[list[int]] = [[] for _ in candidates]
    spent = 0
    for _score, gi, k, n in entries:
        if spent >= budget:
            break
        g, units, _ = candidates[gi]
        cap = min(int(max_group_loss * g.size), g.size - max(len(units[0]), 1))
        if lost[gi] + n > cap or len(chosen[gi]) >= len(units) - 1:
            continue
        chosen[gi].append(k)
        lost[gi] += n
        spent += n
    if round_to and round_to > 1:
        for gi, (g, units, _) in enumerate(candidates):
            if all(len(u) == 1 for u in units):
                while chosen[gi] and (g.size - lost[gi]) % round_to:
                    chosen[gi].pop()
                    lost[gi] -= 1
    return chosen
