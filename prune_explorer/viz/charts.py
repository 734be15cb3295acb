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


# ---- the words and numbers on the charts (plain functions: tested without plotly) ------------
MACS_HOVER = "MACs (multiply-accumulates; FLOPs ≈ 2 × MACs)"
LOG_RATIO = 30  # one bar this many times the smallest: a log axis, so every bar shows
LABEL_LIMIT = 24  # more bars than this: names and labels on hover only


def pct(p: float) -> str:
    """A share that never reads 0.0% when something is removed: 12.5%, 3.8%, 0.2%, 0.04%."""
    if p == 0:
        return "0%"
    if abs(p) >= 1:
        return f"{p:.1f}%"
    digits = 1
    while round(abs(p), digits) == 0 and digits < 3:
        digits += 1
    if round(abs(p), digits) == 0:
        return "<0.001%" if p > 0 else "−<0.001%"
    return f"{p:.{digits}f}%".replace("-", "−")


def change_label(before: float, after: float) -> str:
    """The label on an "after" bar: the change against "before" ("−30%", "−0.2%", "0%")."""
    if not before:
        return ""
    d = 100.0 * (after - before) / before
    return ("−" + pct(-d)) if d < 0 else ("+" + pct(d) if d > 0 else "0%")


def use_log(values: Iterable[float]) -> bool:
    """A log axis when the largest bar dwarfs the smallest (a conv's 36.9K parameters beside
    its BatchNorm's 128): on a linear axis the small ones would not show at all."""
    pos = [v for v in values if v > 0]
    return len(pos) > 1 and max(pos) >= LOG_RATIO * min(pos)


def importance_range(scores: Sequence[float]) -> tuple[float, float]:
    """The importance axis: from a little below the lowest score to a little above the
    highest, not from 0, so that 52 and 58 look different (the differences decide)."""
    lo, hi = float(min(scores)), float(max(scores))
    span = hi - lo if hi > lo else (abs(hi) * 0.1 or 1.0)
    return (lo - 0.12 * span, hi + 0.08 * span)


def importance_cut(sorted_scores: Sequence[float], sorted_pruned: Sequence[bool]
                   ) -> tuple[float, str] | None:
    """Where the sorted bars split into pruned and kept, and the two scores either side
    ("pruned ≤ 52.9 < 53.1 kept"); None when the pruned ones are not all the lowest (typed
    indices)."""
    n = sum(bool(p) for p in sorted_pruned)
    if n == 0 or n == len(sorted_pruned) or not all(sorted_pruned[:n]):
        return None
    a, b = sorted_scores[n - 1], sorted_scores[n]
    digits = 4
    while digits < 10 and f"{a:.{digits}g}" == f"{b:.{digits}g}" and a != b:
        digits += 1  # as many digits as it takes to tell them apart
    return (n - 0.5, f"pruned ≤ {a:.{digits}g} · {b:.{digits}g} ≤ kept")


def _placeholder(fig, text: str, x: float = 0.5):
    """An empty chart that says what to do, with no meaningless axes."""
    fig.add_annotation(text=text, showarrow=False, x=x, y=0.5, xref="paper", yref="paper",
                       font=dict(color="#64748b", size=12))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _bar_traces(fig, rows, get, unit_hover: str, row=None, col=None, legend=True):
    """Before / after bars, the change as a label on each "after" bar."""
    names = [_short(r.layer, 22) for r in rows]
    full = [r.layer for r in rows]
    before = [get(r)[0] for r in rows]
    after = [get(r)[1] for r in rows]
    labels = [change_label(b, a) for b, a in zip(before, after)]
    kw = dict(row=row, col=col) if row is not None else {}
    fig.add_bar(name="before", x=names, y=before, marker_color=BEFORE, customdata=full,
                legendgroup="before", showlegend=legend,
                hovertemplate="%{customdata}<br>before: %{y:,} " + unit_hover +
                              "<extra></extra>", **kw)
    fig.add_bar(name="after", x=names, y=after, marker_color=AFTER,
                customdata=[[f, lab] for f, lab in zip(full, labels)],
                text=labels if len(rows) <= LABEL_LIMIT else None, textposition="outside",
                textfont=dict(size=9, color="#1e3a8a"), cliponaxis=False,
                legendgroup="after", showlegend=legend,
                hovertemplate="%{customdata[0]}<br>after: %{y:,} " + unit_hover +
                              " (%{customdata[1]})<extra></extra>", **kw)
    return before + after


def _value_axis(values, title: str) -> dict:
    if use_log(values):
        return dict(title=title + " (log)", type="log", tickformat="~s")
    return dict(title=title, rangemode="tozero", tickformat="~s")


def _bars(rows: Sequence[LayerRow], get, title: str, unit: str, unit_hover: str):
    import plotly.graph_objects as go
    fig = go.Figure()
    values = _bar_traces(fig, rows, get, unit_hover)
    many = len(rows) > LABEL_LIMIT
    fig.update_layout(**_layout(title, barmode="group", uniformtext=dict(minsize=8, mode="hide"),
                                xaxis=dict(tickangle=-35, automargin=True, tickfont=dict(size=9),
                                           showticklabels=not many),
                                yaxis=_value_axis(values, unit)))
    if not rows:
        _placeholder(fig, "no plan previewed: click a layer")
    return fig


def params_figure(rows: Sequence[LayerRow], limit: int = 80):
    rows = list(rows)[:limit]
    return _bars(rows, lambda r: (r.params_before, r.params_after), "Parameters per layer",
                 "params", "params")


def macs_figure(rows: Sequence[LayerRow], limit: int = 80):
    rows = [r for r in rows if r.macs_before][:limit]
    return _bars(rows, lambda r: (r.macs_before, r.macs_after), "MACs per layer", "MACs",
                 MACS_HOVER)


def removed_rows(t: dict) -> list[tuple[str, float, str, str]]:
    """(what, % of the model removed, label, hover) for MACs and params: the totals chart."""
    out = []
    for key, what in (("macs", "MACs"), ("params", "params")):
        before, after = t[f"{key}_before"], t[f"{key}_after"]
        share = 100.0 * (before - after) / before if before else 0.0
        out.append((what, share, f"−{human(before - after)} ({pct(share)})",
                    f"{what}: {human(before)} → {human(after)}"))
    return out


def _removed_trace(fig, t: dict, **kw):
    rows = removed_rows(t)
    fig.add_bar(y=[r[0] for r in rows], x=[r[1] for r in rows], orientation="h",
                marker_color=PRUNED, text=[r[2] for r in rows], textposition="outside",
                textfont=dict(size=10), cliponaxis=False, showlegend=False,
                customdata=[r[3] for r in rows],
                hovertemplate="%{customdata}, %{text}<extra></extra>", **kw)
    top = max(r[1] for r in rows)
    return [0, max(top * 2.4, 0.5)]  # room for the labels


def totals_figure(t: dict):
    """How much of the whole model the plan removes, params and MACs, as labelled bars (a
    0.2% change reads "0.2%", not a hairline on a 0–100% axis)."""
    import plotly.graph_objects as go
    fig = go.Figure()
    rng = _removed_trace(fig, t)
    fig.update_layout(**_layout("Removed from the whole model", bargap=0.35,
                                xaxis=dict(title="% of the model", range=rng, ticksuffix="%"),
                                yaxis=dict(automargin=True)))
    return fig


def plan_figure(rows: Sequence[LayerRow], t: dict, limit: int = 60):
    """Params per layer, MACs per layer and what the whole model loses, side by side in one
    figure (one plotly render instead of three: the explorer redraws it on every preview)."""
    from plotly.subplots import make_subplots
    rows = list(rows)[:limit]
    mrows = [r for r in rows if r.macs_before]
    fig = make_subplots(rows=1, cols=3, column_widths=[0.36, 0.36, 0.28],
                        horizontal_spacing=0.07,
                        subplot_titles=("Parameters per layer", "MACs per layer",
                                        "Removed from the whole model"))
    pv = _bar_traces(fig, rows, lambda r: (r.params_before, r.params_after), "params", 1, 1)
    mv = _bar_traces(fig, mrows, lambda r: (r.macs_before, r.macs_after), MACS_HOVER, 1, 2,
                     legend=False)
    rng = _removed_trace(fig, t, row=1, col=3)
    fig.update_layout(**_layout("", barmode="group", margin=dict(l=56, r=16, t=64, b=40),
                                uniformtext=dict(minsize=8, mode="hide"),
                                legend=dict(orientation="h", yanchor="bottom", y=1.1,
                                            xanchor="left", x=0.0)))
    for col, rs in ((1, rows), (2, mrows)):
        many = len(rs) > LABEL_LIMIT  # whole-model plans: names on hover only
        fig.update_xaxes(tickangle=-35, automargin=True, tickfont=dict(size=9),
                         showticklabels=not many, row=1, col=col)
        if many:
            fig.update_xaxes(title_text=f"{len(rs)} layers (hover for names)", row=1, col=col)
    fig.update_yaxes(**_value_axis(pv, "params"), row=1, col=1)
    fig.update_yaxes(**_value_axis(mv, "MACs"), row=1, col=2)
    fig.update_xaxes(range=rng, ticksuffix="%", title_text="% of the model", row=1, col=3)
    fig.update_annotations(font=dict(size=13), xanchor="left", x=None)
    for ann, x in zip(fig.layout.annotations, (0.0, 0.43, 0.79)):
        ann.update(x=x, y=1.02, yanchor="bottom")
    if not rows:
        _placeholder(fig, "no plan previewed: click a layer", x=0.4)
    return fig


def importance_figure(scores: Iterable[float] | None, pruned: Iterable[int], layer: str = "",
                      strategy: str = ""):
    """The layer's channels sorted by importance (lowest first), the ones to prune in red, the
    axis spanning the scores (not 0–max) and the cut marked with the scores either side."""
    import numpy as np
    import plotly.graph_objects as go
    fig = go.Figure()
    if scores is None or len(scores) == 0:
        fig.update_layout(**_layout("Why these channels"))
        return _placeholder(fig, "click a layer to see why its channels are chosen")
    scores = np.asarray(scores, dtype=float)
    pruned_set = {int(i) for i in pruned}
    order = np.lexsort((np.arange(len(scores)), scores))
    colors = [PRUNED if int(c) in pruned_set else KEPT for c in order]
    sorted_scores = [float(scores[c]) for c in order]
    fig.add_bar(x=list(range(len(order))), y=sorted_scores,
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
    lo, hi = importance_range(sorted_scores)
    fig.update_layout(**_layout(title, bargap=0.05,
                                xaxis=dict(title="channels, least important first"),
                                yaxis=dict(title="importance (axis not from 0)",
                                           range=[lo, hi])))
    cut = importance_cut(sorted_scores, [int(c) in pruned_set for c in order])
    if cut is not None:
        fig.add_vline(x=cut[0], line=dict(color="#0f172a", width=1, dash="dot"))
        fig.add_annotation(x=cut[0], y=hi, yref="y", text=cut[1], showarrow=False,
                           xanchor="left", yanchor="top", xshift=4,
                           font=dict(size=10, color="#0f172a"),
                           bgcolor="rgba(255,255,255,.85)")
    return fig


def losses_figure(rows: Sequence[LayerRow], limit: int = 20):
    """Whole-model mode: the layers that lose the most parameters, with the share of their
    own parameters each loses (what a reviewer checks first: is a layer cut too hard?)."""
    import plotly.graph_objects as go
    rows = sorted((r for r in rows if r.params_before > r.params_after),
                  key=lambda r: (r.params_after - r.params_before, r.layer))[:limit]
    fig = go.Figure()
    title = f"Where the model loses most: the {len(rows)} layers losing most parameters"
    if not rows:
        fig.update_layout(**_layout("Where the model loses most"))
        return _placeholder(fig, "no whole-model preview: nothing is pruned")
    rows = rows[::-1]  # horizontal bars stack bottom-up: the biggest loss on top
    removed = [r.params_before - r.params_after for r in rows]
    share = [100.0 * d / r.params_before for d, r in zip(removed, rows)]
    fig.add_bar(y=[_short(r.layer, 34) for r in rows], x=removed, orientation="h",
                marker_color=PRUNED, text=[f"−{human(d)} ({pct(p)} of the layer)"
                                           for d, p in zip(removed, share)],
                textposition="outside", textfont=dict(size=9), cliponaxis=False,
                customdata=[r.layer for r in rows], showlegend=False,
                hovertemplate="%{customdata}: %{text}<extra></extra>")
    fig.update_layout(**_layout(title, height=max(320, 60 + 18 * len(rows)),
                                margin=dict(l=8, r=16, t=48, b=40),
                                xaxis=dict(title="parameters removed", tickformat="~s",
                                           range=[0, max(removed) * 1.45]),
                                yaxis=dict(automargin=True, tickfont=dict(size=9))))
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
        _placeholder(fig, "pass evaluate=lambda model: metric, then run a sweep")
    return fig
