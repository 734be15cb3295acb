"""The graph canvas: an anywidget showing the SVG, with pan/zoom/fit, hover, click and
search in a small ES module (``canvas.js``); highlight changes only toggle classes."""

from __future__ import annotations

import pathlib

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
    highlight = t.Dict().tag(sync=True)  # GraphView.highlight_spec(...)
    selected = t.Unicode("").tag(sync=True)
    focus = t.Dict().tag(sync=True)  # {"node": id, "token": n}
    busy = t.Bool(False).tag(sync=True)
    height = t.Unicode("620px").tag(sync=True)
    heat_stops = t.List(HEAT_STOPS).tag(sync=True)
