"""The Explorer: preview a pruning plan on the model's graph before committing it.

    from prune_explorer import Explorer
    ex = Explorer(model, example_inputs)      # in Jupyter, the cell's output is the explorer
    ex.select("layer1.0.conv1")               # previews a plan with the current controls
    ex.set_indices([2, 6, 9])                 # or "2, 6, 9" / "0-15"
    ex.set_strategy("l1", amount=0.3, round_to=8)
    ex.plan, ex.highlighted, ex.svg           # the previewed plan, node -> role/indices, SVG
    ex.preview_model(amount=0.3)              # whole-model mode (prune_model dry run)
    ex.commit(); ex.undo(); ex.export("out/")

This class is the state machine and the programmatic twin of the widget: the widget's
controls call exactly these methods, so everything is testable without a browser. It holds
no pruning logic of its own: plans come from the engine (``DG.get_pruning_plan``,
``select_channels``, ``prune_model``), pictures from ``prune_explorer.viz``. ipywidgets,
anywidget and plotly are imported only when the explorer is displayed (``.widget``).
"""

from __future__ import annotations

import copy
import json
import pathlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..dependency import DependencyGraph
from ..errors import PruningError
from ..graph import NODE_LAYER
from ..viz.boxes import element_boxes, plan_fit
from ..viz.dot import DEFAULT_BUDGET, GraphView, Layout, highlight_svg, idx_text, parse_indices

_UNSET = object()
STRATEGY_LABELS = OrderedDict([("l1", "L1 norm"), ("l2", "L2 norm"), ("random", "random"),
                               ("bn_scale", "BN scale"), ("lamp", "LAMP"),
                               ("taylor", "Taylor (needs loss_fn)")])


POLICIES = {None: "auto", "heads": "whole heads / groups", "dims": "same slots per head",
            "cheapest": "fewest channels"}


@dataclass
class Controls:
    """What the next preview uses. ``indices`` set -> those channels; else the strategy."""

    strategy: str = "l1"
    amount: float = 0.3
    round_to: int | None = None
    side: str = "out"
    indices: list[int] | None = None
    # how channels tied by a reshape (heads, groups) widen: None = fewest channels for typed
    # indices and whole heads for a strategy; or "cheapest", "heads", "dims"
    policy: str | None = None


@dataclass
class HistoryEntry:
    description: str
    plan: Any  # the executed PruningPlan
    kind: str  # "layer" | "model"
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"description": self.description, "kind": self.kind,
                "params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "plan": self.plan.to_dict()}


@dataclass
class ModelControls:
    amount: float = 0.3
    strategy: str = "l1"
    ignored_layers: list[str] = field(default_factory=list)
    round_to: int | None = None
    global_pruning: bool = False


class Explorer:
    """Interactive pruning explorer for ``model`` traced with ``example_inputs``.

    ``evaluate``: optional ``lambda model: metric`` for the sensitivity sweep (run on copies);
    ``loss_fn``: optional ``lambda model: loss`` to enable the Taylor strategy;
    ``node_budget``: beyond this many drawn nodes, repeated blocks fold and modules collapse;
    ``DG``: an existing DependencyGraph of ``model`` (skips tracing).
    """

    def __init__(self, model: nn.Module, example_inputs: Any = None, *,
                 evaluate: Callable[[nn.Module], float] | None = None,
                 loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
                 strategy: str = "l1", amount: float = 0.3, round_to: int | None = None,
                 node_budget: int = DEFAULT_BUDGET, ignored_layers: Iterable | None = None,
                 title: str | None = None, DG: DependencyGraph | None = None,
                 verbose: bool = False):
        t0 = time.perf_counter()
        if DG is None:
            DG = DependencyGraph().build_dependency(model, example_inputs, verbose=verbose)
        elif DG.model is not model:
            raise ValueError("DG was built for another model")
        self.DG = DG
        self.model = model
        self.example_inputs = DG.example_inputs
        self.evaluate = evaluate
        self.loss_fn = loss_fn
        self.node_budget = int(node_budget)
        self.title = title or type(model).__name__
        self.timings: dict[str, float] = {"trace": time.perf_counter() - t0}
        self.controls = Controls(strategy=strategy, amount=float(amount), round_to=round_to)
        self.model_controls = ModelControls(
            amount=float(amount), strategy=strategy,
            ignored_layers=[DG.module_name(m) for m in ignored_layers]
            if ignored_layers is not None else self.default_ignored())
        self.mode = "layer"  # "layer" | "model"
        self.root: str | None = None
        self.plan = None
        self.selection = None
        self.report = None
        self.error: str | None = None
        self.message: str = ""
        self.history: list[HistoryEntry] = []
        self.sensitivity_results: dict[str, list[tuple[float, float | None]]] = {}
        self.sensitivity_baseline: float | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._sel_cache: OrderedDict = OrderedDict()
        self._taylor_version = -1
        self._view: GraphView | None = None
        self._view_version = -1
        self._layout: Layout | None = None
        self._boxes: dict | None = None
        self._spec: dict = {}
        self._heat: dict[str, float] | None = None
        self._widget = None
        self._canvas = None
        self._pane = None
        self.focused: str | None = None
        self.coupling_spec: dict = {}
        self._relayout(reset=True)
        self.timings["first_render"] = self._layout.seconds
        self.timings["total"] = time.perf_counter() - t0

    # ---- listeners (the widget subscribes) ----------------------------------------------------
    def on_change(self, callback: Callable[[str], None]) -> None:
        """``callback(what)`` after each change; ``what`` in layout, plan, history, status,
        sensitivity, focus."""
        self._listeners.append(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # ---- graph layout -------------------------------------------------------------------------
    @property
    def view(self) -> GraphView:
        if self._view is None or self._view_version != self.DG.version:
            self._view = GraphView(self.DG.graph, self.DG.model)
            self._view_version = self.DG.version
        return self._view

    @property
    def layout(self) -> Layout:
        return self._layout

    def _relayout(self, state=None, reset: bool = False) -> None:
        view = self.view
        if reset or self._layout is None:
            state = view.default_state(self.node_budget) if state is None else state
        elif state is None:
            state = self._layout.state.copy()
            state.collapsed &= set(view.subtree)
            state.folded &= set(view.folds)
        self._layout = view.layout(state)
        self._boxes = None
        self.timings["last_render"] = self._layout.seconds
        self._refresh_highlight()
        self._emit("layout")

    def expand(self, key: str) -> None:
        """Open a collapsed module ("layer3" or "module:layer3") or a fold ("fold:layer3.2")."""
        if not key.startswith(("module:", "fold:")):
            key = "module:" + key
        self._relayout(self.view.expand(self._layout.state, key, self.node_budget))

    def collapse(self, module: str) -> None:
        """Draw a module as one node."""
        self._relayout(self.view.collapse(self._layout.state, module))

    def expand_all(self) -> None:
        from ..viz.dot import ViewState
        self._relayout(ViewState())

    def reset_view(self) -> None:
        """Back to the default (folded/collapsed beyond the node budget)."""
        self._relayout(reset=True)

    def reveal(self, node: str, focus: bool = True) -> None:
        """Expand whatever hides ``node`` and (optionally) scroll the canvas to it."""
        if node in self.DG.graph.module_nodes and node not in self.view.order:
            node = self.DG.graph.module_nodes[node][0]
        if self._layout.visible.get(node) != node:
            self._relayout(self.view.reveal(self._layout.state, node))
        if focus:
            self.focus(node)

    def focus(self, node: str) -> None:
        self.focused = node
        self._emit("focus")

    def search(self, query: str) -> list[str]:
        """Node ids whose name or type contains ``query`` (case-insensitive), graph order."""
        q = query.strip().lower()
        if not q:
            return []
        g = self.DG.graph
        out = [nid for nid, n in g.nodes.items() if q in nid.lower() or q in n.type.lower()]
        out += [p for p in self.view.params if q in p.lower()]
        return out

    @property
    def svg(self) -> str:
        """The current SVG, with the previewed plan's classes applied."""
        return highlight_svg(self._layout.svg, self._spec)

    @property
    def base_svg(self) -> str:
        return self._layout.svg

    @property
    def highlight_spec(self) -> dict:
        return self._spec

    @property
    def boxes(self) -> dict[str, tuple[float, float, float, float]]:
        """Drawn element -> its box in the SVG's viewBox units (``viz.boxes``)."""
        if self._boxes is None:
            self._boxes = element_boxes(self._layout.svg)
        return self._boxes

    def plan_box(self) -> dict | None:
        """What "fit plan" shows: ``{"root": box, "steps": [...]}``, the root's box and the
        growing boxes of the root and its nearest coupled layers, the last the whole plan
        (viewBox units; None without a layer plan)."""
        return self._spec.get("fit")

    def _highlight(self, highlighted, heat=None) -> dict:
        spec = self.view.highlight_spec(self._layout, highlighted, heat)
        if self.mode == "layer" and spec["active"]:
            spec["fit"] = plan_fit(self.boxes, spec)
        return spec

    def _refresh_highlight(self) -> None:
        plan = self.plan
        self._spec = self._highlight(plan.highlighted if plan is not None else None,
                                     self._heat if self.mode == "model" else None)

    # ---- the twin API -------------------------------------------------------------------------
    @property
    def highlighted(self) -> dict[str, dict]:
        """Node (graph node id, or parameter name for a bare parameter) -> {"role", "idxs",
        "why", "fn"} for every node the previewed plan touches (empty without a plan)."""
        if self.plan is None:
            return {}
        return {k: {"role": h["role"], "idxs": list(h["idxs"]), "why": h.get("why", ""),
                    "fn": h.get("fn", "")} for k, h in self.plan.highlighted.items()}

    def select(self, node: str | nn.Module, side: str | None = None) -> "Explorer":
        """Make a layer the plan's root and preview a plan with the current controls."""
        name = self._module_of(node)
        if name != self.root:
            self.controls.indices = None  # typed indices belong to the previous layer
        self.mode = "layer"
        self.root = name
        if side is not None:
            self.controls.side = side
        self._preview()
        return self

    def set_indices(self, idxs: str | Iterable[int] | None) -> "Explorer":
        """Prune exactly these channels of the selected layer ("2, 6, 9", "0-15", [2, 6, 9]).
        ``None`` or "" goes back to the strategy."""
        if idxs is None or (isinstance(idxs, str) and not idxs.strip()):
            self.controls.indices = None
        else:
            try:
                self.controls.indices = parse_indices(idxs)
            except ValueError as exc:
                self._fail(str(exc))
                return self
        self.mode = "layer"
        self._preview()
        return self

    def set_strategy(self, strategy: str | None = None, amount: float | None = None,
                     round_to: Any = _UNSET, side: str | None = None) -> "Explorer":
        """Pick channels with a strategy (l1, l2, random, bn_scale, lamp, taylor): ``amount``
        of the layer's channels, keeping a multiple of ``round_to``."""
        if strategy is not None:
            if strategy not in STRATEGY_LABELS:
                self._fail(f"unknown strategy {strategy!r}; use one of {list(STRATEGY_LABELS)}")
                return self
            self.controls.strategy = strategy
        if amount is not None:
            self.controls.amount = float(amount)
        if round_to is not _UNSET:
            self.controls.round_to = int(round_to) if round_to else None
        if side is not None:
            self.controls.side = side
        self.controls.indices = None
        self.mode = "layer"
        self._preview()
        return self

    def set_policy(self, policy: str | None) -> "Explorer":
        """How indices tied together by a reshape widen: ``"heads"`` (whole attention heads
        or conv groups), ``"dims"`` (the same slots in every head), ``"cheapest"`` (fewest
        extra channels), or ``None`` (cheapest for typed indices, heads for a strategy)."""
        if policy not in POLICIES:
            self._fail(f"unknown policy {policy!r}; use one of {list(POLICIES)}")
            return self
        self.controls.policy = policy
        self._preview()
        return self

    def clear(self) -> "Explorer":
        """No selection, no plan."""
        self.root = None
        self.mode = "layer"
        self._set_plan(None, None, None)
        return self

    def preview_model(self, amount: float | None = None, strategy: str | None = None,
                      ignored_layers: Iterable | None | object = _UNSET,
                      round_to: Any = _UNSET, global_pruning: bool | None = None):
        """Whole-model mode: preview ``prune_model(..., dry_run=True)``; layers are coloured by
        the fraction of parameters they lose. Returns the PruneReport."""
        from ..whole_model import prune_model
        from ..viz.report import heat_fractions
        mc = self.model_controls
        if amount is not None:
            mc.amount = float(amount)
        if strategy is not None:
            mc.strategy = strategy
        if ignored_layers is not _UNSET:
            mc.ignored_layers = [self.DG.module_name(m) for m in (ignored_layers or ())]
        if round_to is not _UNSET:
            mc.round_to = int(round_to) if round_to else None
        if global_pruning is not None:
            mc.global_pruning = bool(global_pruning)
        self.mode = "model"
        t0 = time.perf_counter()
        try:
            report = prune_model(self.model, self.example_inputs, amount=mc.amount,
                                 strategy=mc.strategy, ignored_layers=mc.ignored_layers,
                                 round_to=mc.round_to, global_pruning=mc.global_pruning,
                                 loss_fn=self.loss_fn, DG=self.DG, dry_run=True)
        except (PruningError, ValueError) as exc:
            self.report = None
            self._heat = None
            self._set_plan(None, None, str(exc))
            return None
        self.report = report
        self._heat = heat_fractions(self.DG, report.plan)
        self.timings["preview_model"] = time.perf_counter() - t0
        msg = None if report.plan is not None else "nothing to prune with these settings"
        self._set_plan(report.plan, None, msg)
        return report

    def commit(self):
        """Execute the previewed plan (transactional: on failure the model is unchanged and
        PlanExecutionError is raised), re-lay out the smaller graph, push onto the history."""
        plan = self.plan
        if plan is None:
            raise PruningError("nothing to commit: select a layer (or preview the whole model) "
                               "first")
        if plan.problems:
            raise PruningError("this plan cannot run: " + plan.problems[0].message)
        from ..viz.charts import totals
        before = totals(self.DG)
        t0 = time.perf_counter()
        try:
            plan.exec()
        except PruningError as exc:
            self._fail(str(exc))
            raise
        after = totals(self.DG)
        if self.mode == "model":
            mc = self.model_controls
            desc = (f"whole model: {mc.strategy} {mc.amount:.0%}"
                    f"{f' round_to={mc.round_to}' if mc.round_to else ''}, "
                    f"{plan.groups} groups, -{plan.params_removed:,} params")
        else:
            desc = (f"{plan.root} ({plan.side}): {self._how()}, {len(plan.idxs)} channels, "
                    f"-{plan.params_removed:,} params")
        self.history.append(HistoryEntry(desc, plan, self.mode, before["params_before"],
                                         after["params_before"], before["macs_before"],
                                         after["macs_before"], time.perf_counter() - t0))
        self._model_changed(f"committed: {desc}")
        return plan

    def undo(self):
        """Undo the last commit: the model gets back its exact previous tensors."""
        if not self.history:
            raise PruningError("nothing to undo")
        entry = self.history[-1]
        self.DG.undo(entry.plan)
        self.history.pop()
        self._model_changed(f"undone: {entry.description}")
        return entry.plan

    def _model_changed(self, message: str) -> None:
        """After a commit or an undo: previews and scores of the old model are gone; lay the
        new graph out and tell the views."""
        self._sel_cache.clear()
        self.report = None
        self._heat = None
        self.plan = None
        self.selection = None
        self.message = message
        self._relayout()
        self._emit("plan")
        self._emit("history")

    def export(self, directory) -> dict[str, pathlib.Path]:
        """Write ``plan.json`` (the previewed plan, else the last committed one),
        ``history.json`` (every commit), the model (``model.pt`` via torch.save, and a
        ``model/`` folder via ``tp.save`` when available), ``graph.svg`` and the interactive
        one-file ``report.html`` (a click on a layer plans it at the current amount and
        strategy). Returns the paths by name."""
        from ..viz.report import write_report
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out: dict[str, pathlib.Path] = {}
        plan = self.plan if self.plan is not None else (
            self.history[-1].plan if self.history else None)
        if plan is not None:
            out["plan"] = d / "plan.json"
            out["plan"].write_text(json.dumps(plan.to_dict(), indent=1))
        out["history"] = d / "history.json"
        out["history"].write_text(json.dumps([h.to_dict() for h in self.history], indent=1))
        out["model"] = d / "model.pt"
        torch.save(self.model, out["model"])
        try:
            from .. import serialization
        except ImportError:  # pragma: no cover - older engine
            serialization = None
        if serialization is not None and hasattr(serialization, "save"):
            try:
                serialization.save(self.model, str(d / "model"))
                out["saved"] = d / "model"
            except Exception as exc:  # keep the export usable; say what failed
                self.message = f"tp.save failed ({exc}); model.pt was written"
        out["svg"] = d / "graph.svg"
        out["svg"].write_text(self.svg)
        history = [h.description for h in self.history]
        out["report"] = write_report(d / "report.html", self.DG, plan if self.plan is not None
                                     else None, report=self.report if self.mode == "model"
                                     else None, title=f"prune_explorer: {self.title}",
                                     history=history, amount=self.controls.amount,
                                     round_to=self.controls.round_to, strategy="l1" if
                                     self.controls.strategy == "taylor" else self.controls.strategy)
        self.message = f"exported to {d}"
        self._emit("status")
        return out

    # ---- sensitivity --------------------------------------------------------------------------
    def sensitivity(self, layers: Iterable[str] | str | None = None,
                    amounts: Iterable[float] = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
                    strategy: str | None = None,
                    progress: Callable[[int, int], None] | None = None
                    ) -> dict[str, list[tuple[float, float | None]]]:
        """Metric against amount for each layer (default: the selected one), each point on a
        copy of the model pruned with the current strategy; the model itself is untouched."""
        if self.evaluate is None:
            raise PruningError("pass evaluate=lambda model: metric to Explorer(...) to run a "
                               "sensitivity sweep")
        from ..select import select_channels
        if layers is None:
            if self.root is None:
                raise PruningError("select a layer first (or pass layers=[...])")
            layers = [self.root]
        elif isinstance(layers, str):
            layers = [layers]
        layers = [self._module_of(n) for n in layers]
        amounts = [float(a) for a in amounts]
        strategy = strategy or self.controls.strategy
        work = copy.deepcopy(self.model)
        dg = DependencyGraph().build_dependency(work, self.example_inputs, verbose=False)
        if self.sensitivity_baseline is None:
            self.sensitivity_baseline = float(self.evaluate(work))
        total, done = len(layers) * len(amounts), 0
        for layer in layers:
            pts: list[tuple[float, float | None]] = [(0.0, self.sensitivity_baseline)]
            for a in amounts:
                metric = None
                try:
                    sel = select_channels(dg, layer, strategy, a, self.controls.round_to,
                                          side=self.controls.side)
                    if sel.idxs:
                        p = sel.plan(strict=True)
                        p.exec()
                        try:
                            metric = float(self.evaluate(dg.model))
                        finally:
                            dg.undo(p)
                except PruningError:
                    metric = None
                pts.append((a, metric))
                done += 1
                if progress is not None:
                    progress(done, total)
            self.sensitivity_results[layer] = pts
        self._emit("sensitivity")
        return {k: self.sensitivity_results[k] for k in layers}

    # ---- figures and facts --------------------------------------------------------------------
    def layer_details(self, name: str | None = None) -> dict:
        """Facts about a layer: type, channels, params, MACs, its group, nodes."""
        name = name or self.root
        if not name:
            return {}
        g = self.DG.graph
        nodes = g.module_nodes.get(name, (name,) if name in g.nodes else ())
        info = self.view.node_info(nodes[0]) if nodes and nodes[0] in self.view.order else {}
        out = {"name": name, "type": info.get("type", ""), "lines": info.get("lines", []),
               "params": info.get("params", 0),
               "macs": sum(self.view.macs.get(n, 0) for n in nodes),
               "channels": info.get("channels"), "nodes": list(nodes)}
        try:
            m = self.model.get_submodule(name)
            out["repr"] = repr(m) if not list(m.children()) else f"{type(m).__name__}(...)"
        except AttributeError:
            out["repr"] = ""
        if self.selection is not None:
            out["group"] = self.selection.kind
            out["group_size"] = len(self.selection.scores)
        return out

    def figures(self, which: Iterable[str] | None = None) -> dict:
        """The plotly figures of the current state: params, macs, totals (and "plan", the
        three side by side), importance, losses (the layers a whole-model preview cuts
        most), "detail" (importance for a layer, losses for the whole model) and
        sensitivity."""
        from ..viz import charts
        want = set(which) if which is not None else {"params", "macs", "totals", "plan",
                                                      "importance", "losses", "detail",
                                                      "sensitivity"}
        rows = charts.layer_rows(self.DG, self.plan)
        t = charts.totals(self.DG, self.plan)
        losses = lambda: charts.losses_figure(rows)  # noqa: E731
        makers = {"params": lambda: charts.params_figure(rows),
                  "macs": lambda: charts.macs_figure(rows),
                  "totals": lambda: charts.totals_figure(t),
                  "plan": lambda: charts.plan_figure(rows, t),
                  "importance": self.importance_figure, "losses": losses,
                  "detail": losses if self.mode == "model" else self.importance_figure}
        figs = {k: f() for k, f in makers.items() if k in want}
        if "sensitivity" in want and self.sensitivity_results:
            figs["sensitivity"] = charts.sensitivity_figure(self.sensitivity_results)
        return figs

    def importance_figure(self):
        from ..viz import charts
        sel = self.importance()
        if sel is None:
            return charts.importance_figure(None, (), "", "")
        pruned = self.plan.idxs if (self.plan is not None and self.mode == "layer") else sel.idxs
        return charts.importance_figure(sel.scores, pruned, sel.layer,
                                        STRATEGY_LABELS.get(self.controls.strategy, ""))

    def importance(self):
        """The Selection whose scores explain the chosen channels (None without a root)."""
        if self.root is None or self.mode != "layer":
            return None
        if self.selection is not None:
            return self.selection
        try:
            return self._select()
        except (PruningError, ValueError):
            return None

    def summary(self) -> dict:
        from ..viz.charts import totals
        t = totals(self.DG, self.plan)
        t.update(steps=len(self.plan.steps) if self.plan is not None else 0,
                 layers=len([s for s in self.plan.steps if s.kind != "pass"])
                 if self.plan is not None else 0,
                 valid=self.plan is not None and not self.plan.problems)
        return t

    # ---- internals ----------------------------------------------------------------------------
    def _module_of(self, node) -> str:
        if isinstance(node, nn.Module):
            return self.DG.module_name(node)
        g = self.DG.graph
        if node in g.nodes and g.nodes[node].module:
            return g.nodes[node].module
        if node in self.view.params:
            raise PruningError(f"{node} is a bare parameter: a plan starts from a layer, and "
                               f"the parameter is cut along with the layers it is coupled to")
        if node in g.nodes:
            n = g.nodes[node]
            raise PruningError(f"{node} is an op ({n.type}): it has no channels of its own. "
                               f"Click a layer with weights (conv, linear, norm).")
        return self.DG.module_name(node)

    def _how(self) -> str:
        c = self.controls
        if c.indices is not None:
            return "indices " + idx_text(c.indices, 60)
        return (f"{STRATEGY_LABELS.get(c.strategy, c.strategy)} {c.amount:.0%}"
                + (f" round_to={c.round_to}" if c.round_to else ""))

    def _fail(self, message: str) -> None:
        self.error = message
        self._emit("status")

    def _sel_key(self) -> tuple:
        c = self.controls
        return (self.DG.version, self.root, c.side, c.strategy, round(c.amount, 6), c.round_to,
                c.policy)

    def _show_coupling(self) -> None:
        """Scoring a big group's channels can take a second (every tensor of a ResNet-152
        stage); the coupled layers do not depend on which channels go. So a displayed
        explorer first shows the group (a plan of all channels but one: same layers, same
        roles) and then the plan. The twin's state only ever holds the real plan."""
        try:
            size = self.DG.dg.size[self.DG.root_vertex(self.root, self.controls.side)]
            if size < 2:
                return
            probe = self.DG.get_pruning_plan(self.root, self.controls.side,
                                             list(range(1, size)), strict=False)
        except (PruningError, ValueError):
            return
        spec = self._highlight({k: h["role"] for k, h in probe.highlighted.items()})
        spec["pending"] = True
        self.coupling_spec = spec
        self._emit("coupling")

    def _select(self):
        from ..select import select_channels
        c = self.controls
        if c.strategy == "taylor":
            if self.loss_fn is None:
                raise PruningError("the Taylor strategy needs Explorer(..., loss_fn=lambda "
                                   "model: loss)")
            if self._taylor_version != self.DG.version:
                self.model.zero_grad(set_to_none=True)
                self.loss_fn(self.model).backward()
                self._taylor_version = self.DG.version
        key = self._sel_key()
        sel = self._sel_cache.get(key)
        if sel is None:
            sel = select_channels(self.DG, self.root, strategy=c.strategy, amount=c.amount,
                                  round_to=c.round_to, side=c.side, policy=c.policy or "heads")
            self._sel_cache[key] = sel
            while len(self._sel_cache) > 64:
                self._sel_cache.popitem(last=False)
        else:
            self._sel_cache.move_to_end(key)
        return sel

    def _preview(self) -> None:
        if self.root is None:
            self._set_plan(None, None, None)
            return
        t0 = time.perf_counter()
        c = self.controls
        plan, sel, err = None, None, None
        try:
            if c.indices is not None:
                plan = self.DG.get_pruning_plan(self.root, c.side, c.indices, strict=False,
                                                policy=c.policy or "cheapest")
            else:
                if self._listeners and self._sel_key() not in self._sel_cache:
                    self._show_coupling()  # a displayed explorer: highlight before scoring
                sel = self._select()
                if not sel.idxs:
                    err = (f"{c.amount:.0%} of {self.root}'s {len(sel.scores)} channels rounds "
                           f"to none: raise the amount")
                else:
                    plan = sel.plan(strict=False)
        except (PruningError, ValueError) as exc:
            err = str(exc)
        if plan is not None and plan.problems:
            err = "this plan cannot run: " + "; ".join(p.message for p in plan.problems[:3])
        self.timings["preview"] = time.perf_counter() - t0
        self._set_plan(plan, sel, err)

    def _set_plan(self, plan, sel, err) -> None:
        self.plan = plan
        self.selection = sel
        self.error = err
        if self.mode == "layer":
            self.report = None
            self._heat = None
        self._refresh_highlight()
        self._emit("plan")

    # ---- display ------------------------------------------------------------------------------
    @property
    def canvas(self):
        """The graph canvas (an anywidget) kept in step with this explorer: a click in it
        previews that layer's plan. Every front-end shows this one (marimo:
        ``mo.ui.anywidget(ex.canvas)``)."""
        if self._canvas is None:
            from .canvas import CanvasBinding
            self._canvas = CanvasBinding(self).canvas
        return self._canvas

    @property
    def widget(self):
        """The ipywidgets UI (built on first use)."""
        if self._widget is None:
            from .ui import ExplorerUI
            self._widget = ExplorerUI(self)
        return self._widget

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget.root._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):  # front-ends without widgets show this line instead
            bundle["text/plain"] = self.text_line()
        return bundle

    def text_line(self) -> str:
        """What a front-end that cannot show widgets (a terminal, a notebook without the
        widget manager) prints instead of an empty output: one line that says so."""
        return (f"{self!r}: an interactive widget this front-end cannot show; open it in "
                f"JupyterLab, VS Code or marimo, or run `prune-explorer explore MODEL`")

    def _display_(self):
        """marimo: the graph and a live plan pane (marimo renders anywidgets, not ipywidgets'
        controls; notebooks/explore_marimo.py adds controls and charts)."""
        import marimo as mo
        if self._pane is None:
            from .canvas import plan_pane
            self._pane = plan_pane(self)
        return mo.vstack([mo.ui.anywidget(self.canvas), mo.ui.anywidget(self._pane)])

    def default_ignored(self) -> list[str]:
        """The classifier: the last layer of the graph (its outputs are the model's)."""
        layers = [n for n in self.DG.graph.nodes.values() if n.kind == NODE_LAYER and n.module]
        return [layers[-1].module] if layers else []

    def __repr__(self) -> str:
        p = f", plan={self.plan!r}" if self.plan is not None else ""
        return (f"<Explorer {self.title}: {len(self.DG.graph.nodes)} nodes, "
                f"root={self.root}{p}, {len(self.history)} commits>")
