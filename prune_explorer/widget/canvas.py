"""The graph canvas: an anywidget showing the SVG, with pan/zoom/fit, hover, click and
search in a small ES module (``canvas.js``); highlight changes only toggle classes.

``CanvasBinding`` keeps a canvas showing an ``Explorer``: every front-end (JupyterLab's
ipywidgets UI, Voilà, marimo) shows the same canvas through it. A click writes the
``selected`` trait (a state change every front-end syncs, and marimo turns into a reactive
re-run); the other gestures are custom messages.
"""

from __future__ import annotations

import pathlib
import traceback

import anywidget
import traitlets as t

from ..viz.dot import HEAT_STOPS

_HERE = pathlib.Path(__file__).parent


def _css() -> str:
    return (_HERE.parent / "viz" / "highlight.css").read_text() + "\n" + \
        (_HERE / "canvas.css").read_text()


class GraphCanvas(anywidget.AnyWidget):
    _esm = (_HERE / "canvas.js").read_text()
    _css = _css()
    svg = t.Unicode("").tag(sync=True)  # laid out once per structural change
    info = t.Dict().tag(sync=True)  # element key -> {"title", "lines"} for tooltips
    index = t.List().tag(sync=True)  # [[node id, type, drawn key], ...] for search
    highlight = t.Dict().tag(sync=True)  # Explorer.highlight_spec (roles, fit boxes)
    selected = t.Unicode("").tag(sync=True)  # the root; a click in the page sets it
    focus = t.Dict().tag(sync=True)  # {"node": id, "token": n}
    busy = t.Bool(False).tag(sync=True)
    height = t.Unicode("620px").tag(sync=True)
    heat_stops = t.List(HEAT_STOPS).tag(sync=True)


class HtmlPane(anywidget.AnyWidget):
    """HTML that Python replaces: the plan pane of front-ends that show anywidgets but not
    ipywidgets' own controls (marimo)."""
    _esm = ("export default { render({ model, el }) {"
            " const show = () => { el.innerHTML = model.get('html'); };"
            " model.on('change:html', show); show(); } };")
    html = t.Unicode("").tag(sync=True)


def plan_pane(ex) -> HtmlPane:
    """An ``HtmlPane`` showing ``panels.plan_panel_html(ex)``, kept in step."""
    from . import panels
    pane = HtmlPane()

    def sync(what: str = "plan") -> None:
        if what in ("plan", "status", "history", "layout"):
            pane.html = panels.plan_panel_html(ex)
    ex.on_change(sync)
    sync()
    return pane


class CanvasBinding:
    """Keeps ``canvas`` showing ``ex``: layout -> svg, plan -> highlight (the canvas first:
    it is what a click waits for), and the page's gestures -> the explorer's methods.
    Errors go to ``ex.error`` (shown by the panels), never into the void."""

    def __init__(self, ex, canvas: GraphCanvas | None = None):
        self.ex = ex
        self.canvas = canvas if canvas is not None else GraphCanvas()
        self._focus_token = 0
        ex.on_change(self._on_change)
        self.canvas.observe(self._on_selected, "selected")
        self.canvas.on_msg(self._on_msg)
        self.sync_layout()

    # ---- explorer -> canvas
    def _on_change(self, what: str) -> None:
        c, ex = self.canvas, self.ex
        if what == "layout":
            self.sync_layout()
        elif what == "coupling":  # the group, while the channels are being scored
            c.selected = ex.root or ""
            c.highlight = ex.coupling_spec
        elif what == "plan":
            c.selected = ex.root or ""
            c.highlight = ex.highlight_spec
        elif what == "focus":
            self._focus_token += 1
            c.focus = {"node": ex.focused, "token": self._focus_token}

    def sync_layout(self) -> None:
        ex, L = self.ex, self.ex.layout
        nodes = ex.DG.graph.nodes
        index = [[k, nodes[k].type if k in nodes else "Parameter", L.visible.get(k, "")]
                 for k in ex.view.order]
        with self.canvas.hold_sync():
            self.canvas.info = {k: {"title": v.get("title", k), "lines": v.get("lines", [])}
                                for k, v in L.elements.items()}
            self.canvas.index = index
            self.canvas.svg = L.svg
            self.canvas.selected = ex.root or ""
            self.canvas.highlight = ex.highlight_spec

    # ---- canvas -> explorer
    def _guard(self, fn, *args) -> None:
        try:
            self.ex.message = ""
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, not lost in a log
            if "prune_explorer" not in type(exc).__module__:
                traceback.print_exc()
            self.ex._fail(f"{type(exc).__name__}: {exc}")

    def _on_selected(self, change) -> None:
        node = change["new"]
        if not node or node == (self.ex.root or ""):
            return
        self._guard(self.ex.select, node)
        if self.canvas.selected != (self.ex.root or ""):  # refused: back to the real root
            self.canvas.selected = self.ex.root or ""

    def _on_msg(self, _widget, content, _buffers) -> None:
        event = content.get("event")
        actions = {"expand": lambda: self.ex.expand(content["key"]),
                   "collapse": lambda: self.ex.collapse(content["module"]),
                   "reveal": lambda: self.ex.reveal(content["node"]),
                   "expand_all": self.ex.expand_all, "reset_view": self.ex.reset_view}
        if event in actions:
            self.canvas.busy = True
            try:
                self._guard(actions[event])
            finally:
                self.canvas.busy = False
