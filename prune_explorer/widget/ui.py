"""The explorer's ipywidgets UI. Every control calls a method of ``Explorer`` (the twin API);
this module only shows state: it listens to the explorer and updates the canvas (classes
first, so a click is highlighted before tables and charts are rebuilt), panel, table and
charts."""

from __future__ import annotations

import traceback

import asyncio
import json

import ipywidgets as W

from ..viz.dot import idx_text
from . import panels
from .explorer import POLICIES, STRATEGY_LABELS




PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _chart(fig, width: int, height: int = 320):
    """An Output widget showing a plotly figure through the front-end's plotly renderer
    (JupyterLab's jupyterlab-plotly, VS Code's built-in one): plotly.js is loaded once by the
    front-end, not shipped with every chart (a FigureWidget carries 5 MB of JavaScript).
    Fixed sizes: the renderer cannot measure a flex child before it is drawn."""
    out = W.Output(layout=W.Layout(width=f"{width}px", height=f"{height + 8}px",
                                   overflow="hidden"))
    out._pe_size = (width, height)
    _set_fig(out, fig)
    return out


def _set_fig(out, fig):
    width, height = out._pe_size
    height = max(height, int(fig.layout.height or 0))  # a long list asks for more room
    out.layout.height = f"{height + 8}px"
    fig = fig.update_layout(width=width, height=height, autosize=False)
    spec = json.loads(fig.to_json())
    spec["config"] = {"displaylogo": False, "responsive": False}
    title = fig.layout.title.text or "chart"
    out.outputs = ({"output_type": "display_data", "metadata": {},
                    "data": {PLOTLY_MIME: spec, "text/plain": f"<plotly figure: {title}>"}},)


class ExplorerUI:
    DEFER_PANEL_S = 0.04  # the panel and table follow the highlight after this long
    DEFER_CHARTS_S = 0.35  # the charts once nothing changed for this long

    def __init__(self, ex):
        self.ex = ex
        self._pending: dict = {}
        self._syncing = False
        self.canvas = ex.canvas  # bound to ex first: a click's highlight goes out first
        ex.on_change(self._on_change)

        # ---- header
        self.title = W.HTML()
        self.commit_btn = W.Button(description="Commit", button_style="primary", icon="check",
                                   tooltip="execute the previewed plan (transactional)")
        self.undo_btn = W.Button(description="Undo", icon="undo",
                                 tooltip="restore the model before the last commit, exactly")
        self.export_dir = W.Text(value="explorer_export", layout=W.Layout(width="170px"),
                                 tooltip="directory to export to")
        self.export_btn = W.Button(description="Export", icon="download",
                                   tooltip="plan.json, model, graph.svg and a standalone "
                                           "report.html")
        for w, c in ((self.commit_btn, "pe-commit"), (self.undo_btn, "pe-undo"),
                     (self.export_btn, "pe-export"), (self.export_dir, "pe-export-dir")):
            w.add_class(c)
        self.commit_btn.on_click(lambda _b: self._guard(self.ex.commit))
        self.undo_btn.on_click(lambda _b: self._guard(self.ex.undo))
        self.export_btn.on_click(lambda _b: self._guard(self.ex.export, self.export_dir.value))
        self.status = W.HTML()
        self.status.add_class("pe-status")
        self.title.layout = W.Layout(flex="1 1 auto", min_width="0")
        header = W.HBox([self.title, self.commit_btn, self.undo_btn, self.export_dir,
                         self.export_btn])
        header.add_class("pe-header")

        # ---- side panel: layer mode
        c = ex.controls
        options = [(v, k) for k, v in STRATEGY_LABELS.items()
                   if k != "taylor" or ex.loss_fn is not None]
        self.mode = W.ToggleButtons(options=[("Layer", "layer"), ("Whole model", "model")],
                                    value="layer", style={"button_width": "120px"})
        self.mode.add_class("pe-mode")
        self.details = W.HTML()
        self.details.add_class("pe-details")
        self.strategy, self.amount, self.round_to = _strategy_controls(options, c)
        self.policy = W.Dropdown(options=[(label, key or "") for key, label in POLICIES.items()],
                                 value=c.policy or "", description="widen",
                                 tooltip="how channels tied by a reshape (attention heads, "
                                         "conv groups) are widened")
        self.indices = W.Text(value="", placeholder="e.g. 2, 6, 9 or 0-15 (Enter)",
                              description="indices", continuous_update=False)
        self.use_strategy = W.Button(description="use strategy", layout=W.Layout(width="110px"),
                                     tooltip="forget the typed indices")
        for w, cls in ((self.strategy, "pe-strategy"), (self.amount, "pe-amount"),
                       (self.round_to, "pe-round-to"), (self.policy, "pe-policy"),
                       (self.indices, "pe-indices")):
            w.add_class(cls)
            w.style.description_width = "70px"
            w.layout.width = "100%"
        self.strategy.observe(self._on_strategy, "value")
        self.amount.observe(self._on_strategy, "value")
        self.round_to.observe(self._on_strategy, "value")
        self.indices.observe(self._on_indices, "value")
        self.policy.observe(self._on_policy, "value")
        self.use_strategy.on_click(lambda _b: self._guard(self.ex.set_indices, None))
        self.sens_btn = W.Button(description="sensitivity sweep", icon="line-chart",
                                 tooltip="metric vs amount for this layer, on copies "
                                         "(needs evaluate=...)",
                                 disabled=ex.evaluate is None, layout=W.Layout(width="160px"))
        self.sens_btn.add_class("pe-sensitivity")
        self.sens_progress = W.IntProgress(value=0, min=0, max=1,
                                           layout=W.Layout(width="120px", visibility="hidden"))
        self.sens_btn.on_click(lambda _b: self._guard(self._run_sensitivity))
        self.layer_box = W.VBox([self.strategy, self.amount, self.round_to, self.policy,
                                 self.indices,
                                 self.use_strategy,
                                 W.HBox([self.sens_btn, self.sens_progress])])

        # ---- side panel: whole-model mode
        mc = ex.model_controls
        self.m_strategy, self.m_amount, self.m_round = _strategy_controls(options, mc)
        self.m_ignored = W.Text(value=", ".join(mc.ignored_layers), description="ignore",
                                placeholder="layers to keep, e.g. fc")
        self.m_global = W.Checkbox(value=mc.global_pruning, description="global ranking",
                                   indent=False)
        self.m_preview = W.Button(description="Preview whole model", button_style="info",
                                  icon="eye", layout=W.Layout(width="100%"))
        for w, cls in ((self.m_strategy, "pe-m-strategy"), (self.m_amount, "pe-m-amount"),
                       (self.m_round, "pe-m-round-to"), (self.m_ignored, "pe-m-ignored")):
            w.add_class(cls)
            w.style.description_width = "70px"
            w.layout.width = "100%"
        self.m_preview.add_class("pe-m-preview")
        self.m_preview.on_click(lambda _b: self._guard(self._preview_model))
        self.m_amount.observe(self._on_model_controls, "value")
        self.m_strategy.observe(self._on_model_controls, "value")
        self.m_round.observe(self._on_model_controls, "value")
        self.model_box = W.VBox([self.m_strategy, self.m_amount, self.m_round, self.m_ignored,
                                 self.m_global, self.m_preview])
        self.model_box.layout.display = "none"
        self.mode.observe(self._on_mode, "value")

        self.summary = W.HTML()
        self.summary.add_class("pe-summary")
        self.history = W.HTML()
        self.history.add_class("pe-history")
        panel = W.VBox([self.mode, self.details, self.layer_box, self.model_box, self.summary,
                        self.history],
                       layout=W.Layout(width="370px", min_width="330px", padding="8px 10px",
                                       overflow="hidden"))
        panel.add_class("pe-panel")
        self.canvas.layout = W.Layout(width="100%")
        canvas_box = W.Box([self.canvas], layout=W.Layout(flex="1 1 0", min_width="0",
                                                          width="100%"))

        # ---- table and charts
        self.table = W.HTML()
        self.table.add_class("pe-tablebox")
        figs = ex.figures(("plan", "detail"))
        self.fig_plan = _chart(figs["plan"], 1160)
        self.fig_importance = _chart(figs["detail"], 760)
        from ..viz.charts import sensitivity_figure
        self.fig_sensitivity = _chart(sensitivity_figure(ex.sensitivity_results), 440)
        shown = [self.fig_plan, self.fig_importance]
        if ex.evaluate is not None:  # the sweep needs a metric
            shown.append(self.fig_sensitivity)
        charts = W.Box(shown,
                       layout=W.Layout(display="flex", flex_flow="row wrap", gap="6px 10px",
                                       margin="10px 0 0 0"))
        self.root = W.VBox([W.HTML(f"<style>{panels.PANEL_CSS}</style>"), header, self.status,
                            W.HBox([canvas_box, panel], layout=W.Layout(gap="8px")),
                            W.HTML("<h4 style='margin:10px 0 4px 0;font:600 12px Helvetica;"
                                   "color:#475569'>PLAN</h4>"),
                            self.table, charts])
        self.root.add_class("pe-ui")
        self._sync_title()
        self._sync_plan(full=True)
        self._sync_history()
        self._sync_status()

    # ---- explorer -> widgets ------------------------------------------------------------------
    def _on_change(self, what: str) -> None:
        if what == "layout":
            self._sync_title()
        elif what == "plan":
            self._sync_plan()
        elif what == "history":
            self._sync_history()
        elif what == "status":
            self._sync_status()
        elif what == "sensitivity":
            from ..viz.charts import sensitivity_figure
            _set_fig(self.fig_sensitivity, sensitivity_figure(self.ex.sensitivity_results))

    def _sync_title(self) -> None:
        self.title.value = panels.title_html(self.ex)

    def _sync_plan(self, full: bool = False) -> None:
        ex = self.ex
        # 1. the canvas is already highlighted (CanvasBinding); 2. controls reflect the
        # state (without re-triggering previews)
        self._syncing = True
        try:
            c = ex.controls
            self.strategy.value = c.strategy
            self.amount.value = min(max(c.amount, 0.05), 0.95)
            self.round_to.value = c.round_to or 0
            self.policy.value = c.policy or ""
            self.indices.value = idx_text(c.indices, 10_000) if c.indices is not None else ""
            self.mode.value = ex.mode
            self.use_strategy.disabled = c.indices is None
        finally:
            self._syncing = False
        self._sync_status()
        # 3. panel and table a moment later, charts once the user pauses; both coalesced, so
        # a burst of clicks or slider steps is highlighted at once and the rest is rebuilt
        # (and redrawn by plotly in the browser, the costly part) only for the last one
        self._later("panel", self.DEFER_PANEL_S, self._sync_rest, immediate=full)
        self._later("charts", self.DEFER_CHARTS_S, self._sync_charts, immediate=full)

    def _later(self, name: str, delay: float, fn, immediate: bool = False) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (plain Python, tests): now
            loop = None
        if immediate or loop is None:
            fn()
            return
        pending = self._pending.pop(name, None)
        if pending is not None:
            pending.cancel()

        def run():
            self._pending.pop(name, None)
            try:
                fn()
            except Exception:  # pragma: no cover - shown in the log, never lost
                traceback.print_exc()
        self._pending[name] = loop.call_later(delay, run)

    def _sync_rest(self) -> None:
        ex = self.ex
        self.details.value = panels.details_html(ex)
        self.summary.value = panels.summary_html(ex)
        self.table.value = panels.table_html(ex)
        self._sync_status()

    def _sync_charts(self) -> None:
        figs = self.ex.figures(("plan", "detail"))
        _set_fig(self.fig_plan, figs["plan"])
        _set_fig(self.fig_importance, figs["detail"])

    def _sync_history(self) -> None:
        self.undo_btn.disabled = not self.ex.history
        self.history.value = panels.history_html(self.ex)
        self._sync_title()

    def _sync_status(self) -> None:
        ex = self.ex
        self.commit_btn.disabled = ex.plan is None or bool(ex.plan.problems)
        self.status.value = panels.status_html(ex)

    # ---- widgets -> explorer (the twin API) ----------------------------------------------------
    def _guard(self, fn, *args, **kw):
        try:
            self.ex.message = ""
            return fn(*args, **kw)
        except Exception as exc:  # shown, not lost in the browser console
            self.ex.error = f"{type(exc).__name__}: {exc}"
            self._sync_status()
            if not hasattr(exc, "__module__") or "prune_explorer" not in type(exc).__module__:
                traceback.print_exc()
            return None

    def _on_strategy(self, _change) -> None:
        if self._syncing:
            return
        if self.ex.root is None:  # remember the controls for the first click
            c = self.ex.controls
            c.strategy, c.amount = self.strategy.value, float(self.amount.value)
            c.round_to = self.round_to.value or None
            return
        self._guard(self.ex.set_strategy, self.strategy.value, float(self.amount.value),
                    self.round_to.value or None)

    def _on_policy(self, _change) -> None:
        if self._syncing:
            return
        if self.ex.root is None:  # remember it for the first click
            self.ex.controls.policy = self.policy.value or None
            return
        self._guard(self.ex.set_policy, self.policy.value or None)

    def _on_indices(self, change) -> None:
        if self._syncing:
            return
        if self.ex.root is None:
            self.ex.error = "click a layer first, then type its channel indices"
            self._sync_status()
            return
        self._guard(self.ex.set_indices, change["new"] or None)

    def _on_mode(self, change) -> None:
        model = change["new"] == "model"
        self.layer_box.layout.display = "none" if model else ""
        self.model_box.layout.display = "" if model else "none"
        if self._syncing:
            return
        if model:
            self._guard(self._preview_model)
        elif self.ex.root is not None:
            self._guard(self.ex.select, self.ex.root)
        else:
            self._guard(self.ex.clear)

    def _on_model_controls(self, _change) -> None:
        if self._syncing or self.mode.value != "model":
            return
        self._guard(self._preview_model)

    def _preview_model(self):
        ignored = [s.strip() for s in self.m_ignored.value.split(",") if s.strip()]
        return self.ex.preview_model(amount=float(self.m_amount.value),
                                     strategy=self.m_strategy.value, ignored_layers=ignored,
                                     round_to=self.m_round.value or None,
                                     global_pruning=bool(self.m_global.value))

    def _run_sensitivity(self):
        self.sens_progress.layout.visibility = "visible"
        self.sens_progress.value = 0

        def progress(done, total):
            self.sens_progress.max = total
            self.sens_progress.value = done
        try:
            return self.ex.sensitivity(progress=progress)
        finally:
            self.sens_progress.layout.visibility = "hidden"


def _strategy_controls(options, controls):
    """Strategy, amount and round_to widgets set from a Controls / ModelControls (the layer
    and whole-model panels share them)."""
    strategy = W.Dropdown(options=list(options), value=controls.strategy,
                          description="strategy")
    amount = W.FloatSlider(value=controls.amount, min=0.05, max=0.95, step=0.05,
                           description="amount", readout_format=".0%", continuous_update=False)
    round_to = W.Dropdown(options=[("none", 0)] + [(str(r), r) for r in (2, 4, 8, 16, 32, 64)],
                          value=controls.round_to or 0, description="round_to")
    return strategy, amount, round_to
