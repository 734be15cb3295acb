"""Plotly figures of a plan's effect, deterministic (same plan -> same figure JSON).

    rows = layer_rows(DG, plan)           # per layer: params and MACs before / after
    params_figure(rows); macs_figure(rows); totals_figure(totals(DG, plan))
    importance_figure(sel.scores, sel.idxs, "layer1.0.conv1", "l1")
    sensitivity_figure({"layer1.0.conv1": [(0.0, 0.71), (0.3, 0.69), ...]})

plotly is imported inside each figure function: the numbers (``layer_rows``, ``totals``)
need nothing optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .dot import human

BEFORE = "#94a3b8"
AFTER = "#2563eb"
PRUNED = "#dc2626"
KEPT = "#94a3b8"
LINE_COLORS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
               "#4d7c0f", "#9a3412", "#1e3a8a")
FONT = dict(family="Helvetica, Arial, sans-serif", size=11, color="#1e293b")


@dataclass
class LayerRow:
    layer: str
    kind: str  # "module", "param" or "op"
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def module_params(model, name: str, graph=None) -> int:
    """Parameters a graph layer owns: its own tensors, or all of them when its submodules are
    not drawn as layers of their own (MultiheadAttention's out_proj)."""
    try:
        m = model.get_submodule(name) if name else model
    except AttributeError:
        return 0
    recurse = True
    if graph is not None:
        prefix = name + "."
        recurse = not any(n.module and n.module.startswith(prefix) for n in graph.nodes.values())
    return sum(p.numel() for p in m.parameters(recurse=recurse))


def layer_rows(DG, plan) -> list[LayerRow]:
    """One row per layer (or bare parameter, or op with MACs) the plan changes, in plan
    order: parameters and MACs before and after."""
    from ..metrics import node_macs
    if plan is None:
        return []
    graph, model = DG.graph, DG.model
    macs = node_macs(graph)
    rows: dict[str, LayerRow] = {}
    for s in plan.steps:
        if s.kind == "pass":
            if not s.macs:
                continue
            before_p, kind = 0, "op"
            before_m = sum(macs.get(n, 0) for n in s.nodes if n in graph.nodes)
        elif s.kind == "param":
            kind = "param"
            try:
                before_p = int(DG.tensor(s.target).numel())
            except Exception:
                before_p = 0
            before_m = 0
        else:
            kind = "module"
            before_p = module_params(model, s.target, graph)
            before_m = sum(macs.get(n, 0) for n in graph.module_nodes.get(s.target, ()))
        row = rows.get(s.target)
        if row is None:
            row = rows[s.target] = LayerRow(s.target, kind, before_p, before_p, before_m,
                                            before_m)
        row.params_after -= s.params
        row.macs_after -= s.macs
    for row in rows.values():
        row.params_after = max(row.params_after, 0)
        row.macs_after = max(row.macs_after, 0)
    return list(rows.values())


def model_macs(DG) -> int:
    """Total MACs of the traced model (black-box layers through their registry formula)."""
    from ..metrics import total_macs

    def opaque(node, removed):
        try:
            m = DG.model.get_submodule(node.module)
            spec = DG.registry.lookup(m)
            return spec.macs(m, node, DG.graph, removed) if spec and spec.macs else 0
        except Exception:
            return 0
    return int(total_macs(DG.graph, opaque))


def totals(DG, plan=None) -> dict:
    params = sum(p.numel() for p in DG.model.parameters())
    macs = model_macs(DG)
    dp = plan.params_removed if plan is not None else 0
    dm = plan.macs_removed if plan is not None else 0
    return {"params_before": params, "params_after": params - dp,
            "macs_before": macs, "macs_after": macs - dm}


def _layout(title: str, height: int = 320, **kw) -> dict:
    base = dict(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=13)),
                template="plotly_white", height=height, font=FONT,
                margin=dict(l=56, r=16, t=48, b=40), bargap=0.2,
                legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    base.update(kw)
    return base


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _bars(rows: Sequence[LayerRow], before: list[int], after: list[int], title: str,
          unit: str):
    import plotly.graph_objects as go
    names = [_short(r.layer) for r in rows]
    full = [r.layer for r in rows]
    fig = go.Figure()
    fig.add_bar(name="before", x=names, y=before, marker_color=BEFORE, customdata=full,
                hovertemplate="%{customdata}<br>before: %{y:,}<extra></extra>")
    fig.add_bar(name="after", x=names, y=after, marker_color=AFTER, customdata=full,
                hovertemplate="%{customdata}<br>after: %{y:,}<extra></extra>")
    fig.update_layout(**_layout(title, barmode="group",
                                xaxis=dict(tickangle=-35, automargin=True, tickfont=dict(size=9)),
                                yaxis=dict(title=unit, rangemode="tozero")))
    if not rows:
        fig.add_annotation(text="no plan previewed: click a layer", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper",
                           font=dict(color="#64748b"))
    return fig


def params_figure(rows: Sequence[LayerRow], limit: int = 80):
    rows = list(rows)[:limit]
    return _bars(rows, [r.params_before for r in rows], [r.params_after for r in rows],
                 "Parameters per layer", "params")


def macs_figure(rows: Sequence[LayerRow], limit: int = 80):
    rows = [r for r in rows if r.macs_before][:limit]
    return _bars(rows, [r.macs_before for r in rows], [r.macs_after for r in rows],
                 "FLOPs (MACs) per layer", "MACs")


def totals_figure(t: dict):
    """Params and MACs of the whole model before and after, as % of the original."""
    import plotly.graph_objects as go
    cats = ["MACs", "Params"]
    before = [t["macs_before"], t["params_before"]]
    after = [t["macs_after"], t["params_after"]]
    pct_after = [100.0 * a / b if b else 100.0 for a, b in zip(after, before)]
    fig = go.Figure()
    # horizontal bars stack bottom-up: "after" first puts "before" on top
    fig.add_bar(name="after", y=cats, x=pct_after, orientation="h", marker_color=AFTER,
                text=[f"{human(a)} ({p - 100:+.1f}%)" for a, p in zip(after, pct_after)],
                textposition="inside", insidetextanchor="end",
                hovertemplate="%{y} after: %{text}<extra></extra>")
    fig.add_bar(name="before", y=cats, x=[100.0, 100.0], orientation="h", marker_color=BEFORE,
                text=[human(b) for b in before], textposition="inside", insidetextanchor="end",
                hovertemplate="%{y} before: %{text}<extra></extra>")
    fig.update_layout(**_layout("Totals", barmode="group",
                                xaxis=dict(title="% of original", range=[0, 100]),
                                yaxis=dict(automargin=True)))
    fig.update_layout(legend=dict(traceorder="reversed"))
    return fig


def plan_figure(rows: Sequence[LayerRow], t: dict, limit: int = 60):
    """Params per layer, MACs per layer and the totals, side by side in one figure (one
    plotly render instead of three: the explorer redraws it on every preview)."""
    from plotly.subplots import make_subplots
    rows = list(rows)[:limit]
    mrows = [r for r in rows if r.macs_before]
    fig = make_subplots(rows=1, cols=3, column_widths=[0.39, 0.39, 0.22],
                        horizontal_spacing=0.07,
                        subplot_titles=("Parameters per layer", "FLOPs (MACs) per layer",
                                        "Totals (% of original)"))
    for col, rs, get in ((1, rows, lambda r: (r.params_before, r.params_after)),
                         (2, mrows, lambda r: (r.macs_before, r.macs_after))):
        names = [_short(r.layer, 22) for r in rs]
        full = [r.layer for r in rs]
        for i, (label, color) in enumerate((("before", BEFORE), ("after", AFTER))):
            fig.add_bar(name=label, x=names, y=[get(r)[i] for r in rs], marker_color=color,
                        customdata=full, legendgroup=label, showlegend=col == 1,
                        hovertemplate="%{customdata}<br>" + label + ": %{y:,}<extra></extra>",
                        row=1, col=col)
    cats = ["MACs", "Params"]
    before = [t["macs_before"], t["params_before"]]
    after = [t["macs_after"], t["params_after"]]
    pct = [100.0 * a / b if b else 100.0 for a, b in zip(after, before)]
    fig.add_bar(name="after", y=cats, x=pct, orientation="h", marker_color=AFTER,
                legendgroup="after", showlegend=False, textposition="inside",
                text=[f"{human(a)} ({p - 100:+.1f}%)" for a, p in zip(after, pct)],
                insidetextanchor="end", hovertemplate="%{y} after: %{text}<extra></extra>",
                row=1, col=3)
    fig.add_bar(name="before", y=cats, x=[100.0, 100.0], orientation="h",
                marker_color=BEFORE, legendgroup="before", showlegend=False,
                text=[human(b) for b in before], textposition="inside", insidetextanchor="end",
                hovertemplate="%{y} before: %{text}<extra></extra>", row=1, col=3)
    fig.update_layout(**_layout("", barmode="group", margin=dict(l=56, r=16, t=64, b=40),
                                legend=dict(orientation="h", yanchor="bottom", y=1.1,
                                            xanchor="left", x=0.0)))
    many = len(rows) > 24  # whole-model plans: names on hover only
    fig.update_xaxes(tickangle=-35, automargin=True, tickfont=dict(size=9),
                     showticklabels=not many, row=1, col=1)
    fig.update_xaxes(tickangle=-35, automargin=True, tickfont=dict(size=9),
                     showticklabels=len(mrows) <= 24, row=1, col=2)
    if many:
        fig.update_xaxes(title_text=f"{len(rows)} layers (hover for names)", row=1, col=1)
        fig.update_xaxes(title_text=f"{len(mrows)} layers (hover for names)", row=1, col=2)
    fig.update_xaxes(range=[0, 100], row=1, col=3)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_annotations(font=dict(size=13), xanchor="left", x=None)
    for ann, x in zip(fig.layout.annotations, (0.0, 0.46, 0.85)):
        ann.update(x=x, y=1.02, yanchor="bottom")
    if not rows:
        fig.add_annotation(text="no plan previewed: click a layer", showarrow=False, x=0.4,
                           y=0.5, xref="paper", yref="paper", font=dict(color="#64748b"))
    return fig


def importance_figure(scores: Iterable[float] | None, pruned: Iterable[int], layer: str = "",
                      strategy: str = ""):
    """The layer's channels sorted by importance (lowest first), the ones to prune in red."""
    import numpy as np
    import plotly.graph_objects as go
    fig = go.Figure()
    if scores is None or len(scores) == 0:
        fig.update_layout(**_layout("Why these channels"))
        fig.add_annotation(text="select a layer to see its channel importance",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                           font=dict(color="#64748b"))
        return fig
    scores = np.asarray(scores, dtype=float)
    pruned_set = {int(i) for i in pruned}
    order = np.lexsort((np.arange(len(scores)), scores))
    colors = [PRUNED if int(c) in pruned_set else KEPT for c in order]
    fig.add_bar(x=list(range(len(order))), y=[float(scores[c]) for c in order],
                marker_color=colors, marker_line_width=0,
                customdata=[[int(c), "pruned" if int(c) in pruned_set else "kept"]
                            for c in order],
                hovertemplate="channel %{customdata[0]}: %{y:.4g} (%{customdata[1]})"
                              "<extra></extra>", showlegend=False)
    for name, color in (("pruned", PRUNED), ("kept", KEPT)):  # legend entries
        fig.add_bar(x=[None], y=[None], name=name, marker_color=color)
    n = len(pruned_set)
    title = (f"Why these channels: {_short(layer, 40)} — {strategy or 'importance'}, "
             f"{n} of {len(scores)} pruned")
    fig.update_layout(**_layout(title, bargap=0.05, xaxis=dict(title="channels, least important "
                                                                     "first"),
                                yaxis=dict(title="importance")))
    return fig


def sensitivity_figure(results: dict[str, list[tuple[float, float | None]]],
                       metric: str = "metric"):
    """Metric against amount, one line per layer (amount 0 is the unpruned model)."""
    import plotly.graph_objects as go
    fig = go.Figure()
    for i, (layer, pts) in enumerate(results.items()):
        pts = [(a, m) for a, m in pts if m is not None]
        fig.add_scatter(x=[a for a, _ in pts], y=[m for _, m in pts], mode="lines+markers",
                        name=_short(layer, 32), line=dict(color=LINE_COLORS[i % len(
                            LINE_COLORS)]),
                        hovertemplate=f"{layer}<br>amount %{{x:.2f}}: %{{y:.4g}}<extra></extra>")
    fig.update_layout(**_layout("Sensitivity: metric against amount (on copies)",
                                xaxis=dict(title="amount pruned", range=[0, 1]),
                                yaxis=dict(title=metric)))
    if not results:
        fig.add_annotation(text="pass evaluate=lambda model: metric, then run a sweep",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                           font=dict(color="#64748b"))
    return fig
