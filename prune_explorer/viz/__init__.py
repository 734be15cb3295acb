"""Rendering of traced graphs and pruning plans: DOT/SVG (``dot``), plotly charts (``charts``)
and the standalone HTML audit report (``report``).

Only ``prune_explorer.viz.dot`` is imported eagerly here and it needs nothing optional until
it lays a graph out; plotly and the graphviz package are imported inside the functions that
use them.
"""

from .dot import GraphView, Layout, ViewState, highlight_svg, render


def standalone_svg(svg: str) -> str:
    """``svg`` with the highlight styles embedded (see ``report.standalone_svg``)."""
    from .report import standalone_svg as _standalone
    return _standalone(svg)


__all__ = ["GraphView", "Layout", "ViewState", "highlight_svg", "render", "standalone_svg"]
