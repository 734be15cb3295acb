"""The one-file interactive report: the graph, and clicking any layer shows the plan the engine
would make — its coupled layers highlighted by role, each one's mapped indices and why — for
the strategy's channels or for channels the reader types, computed in the page from the
engine's own coupling data (``group_data``). One HTML file, everything inline: it opens from
an e-mail with no kernel and no network.

    write_report("report.html", DG, plan)                       # one plan
    write_report("report.html", DG, report.plan, report=report) # a prune_model dry run

Also the HTML pieces the explorer widget shows: ``plan_table_html`` (``table.pe-plan``, one
``<tr>`` per step) and ``legend_html``.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import pathlib
from typing import Any

from .dot import HEAT_STOPS, GraphView, highlight_svg, human, idx_text

_HERE = pathlib.Path(__file__).parent
ROLE_NAMES = {"root": "root (the layer you chose)", "out": "output channels pruned",
              "in": "input channels pruned", "pass": "channels pass through"}


def css() -> str:
    return (_HERE / "highlight.css").read_text()


def standalone_svg(svg: str) -> str:
    """An SVG that shows its highlights on its own (the ``pe-*`` styles embedded), for a file,
    a notebook output or a slide: ``open("plan.svg", "w").write(standalone_svg(ex.svg))``."""
    import re
    m = re.search(r"<svg\b[^>]*>", svg)
    if not m:
        return svg
    style = f"<style>{css()}</style>"
    return svg[:m.end()] + style + svg[m.end():]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plan_table_html(plan, limit: int | None = None, empty: str = "No plan previewed.") -> str:
    """``<table class="pe-plan">`` with one body row per plan step."""
    if plan is None:
        return f'<div class="pe-empty">{_e(empty)}</div>'
    steps = plan.steps if limit is None else plan.steps[:limit]
    rows = []
    for i, s in enumerate(steps):
        rows.append(
            f'<tr class="pe-row-{_e(s.role)}" data-target="{_e(s.nodes[0] if s.nodes else s.target)}">'
            f'<td class="num">{i + 1}</td><td><b>{_e(s.target)}</b><br>'
            f'<span style="color:#64748b;font-size:11px">{_e(_clip(s.module_repr, 64))}</span></td>'
            f'<td>{_e(s.role)}</td><td><code>{_e(s.fn)}</code></td>'
            f'<td class="idx">{_e(idx_text(s.idxs, 200))}</td><td class="num">{len(s.idxs)}</td>'
            f'<td class="num">{s.params:,}</td><td class="num">{s.macs:,}</td>'
            f'<td class="why">{_e(s.why)}</td></tr>')
    more = ""
    if limit is not None and len(plan.steps) > limit:
        more = (f'<tr><td colspan="9" style="color:#64748b">… {len(plan.steps) - limit} more '
                f'steps</td></tr>')
    problems = ""
    if plan.problems:
        items = "".join(f"<li>{_e(p.message)}</li>" for p in plan.problems[:8])
        problems = f'<div class="pe-problems"><b>This plan cannot run:</b><ul>{items}</ul></div>'
    return (f'{problems}<table class="pe-plan"><thead><tr><th>#</th><th>layer</th><th>role</th>'
            f'<th>function</th><th>indices</th><th>n</th><th>params removed</th>'
            f'<th title="multiply-accumulates; FLOPs ≈ 2 × MACs">MACs removed</th>'
            f'<th>why coupled</th></tr></thead><tbody>'
            + "".join(rows) + f'</tbody><tfoot>{more}<tr><td></td><td>total</td><td></td><td></td>'
            f'<td></td><td></td><td class="num">{plan.params_removed:,}</td>'
            f'<td class="num">{plan.macs_removed:,}</td><td></td></tr></tfoot></table>')


def legend_html(heat: bool = False) -> str:
    items = "".join(f'<span><span class="pe-sw {r}"></span>{_e(t)}</span>'
                    for r, t in ROLE_NAMES.items())
    if heat:
        grad = ", ".join(f"{c} {int(f * 100)}%" for f, c in HEAT_STOPS)
        items += (f'<span>params removed 0%<span class="pe-heatbar" '
                  f'style="background:linear-gradient(90deg, {grad})"></span>100%</span>')
    return f'<div class="pe-legend">{items}</div>'


def heat_fractions(DG, plan) -> dict[str, float]:
    """Node -> fraction of its layer's parameters the plan removes (whole-model heatmap)."""
    from .charts import module_params
    if plan is None:
        return {}
    removed: dict[str, int] = {}
    nodes: dict[str, tuple] = {}
    for s in plan.steps:
        if s.kind in ("out", "in", "opaque", "param"):
            removed[s.target] = removed.get(s.target, 0) + s.params
            nodes.setdefault(s.target, s.nodes)
    out: dict[str, float] = {}
    for target, gone in removed.items():
        if target in DG.graph.module_nodes or nodes[target][:1] != (target,):
            total = module_params(DG.model, target, DG.graph)
            targets = DG.graph.module_nodes.get(target, nodes[target])
        else:  # a bare parameter
            try:
                total = int(DG.tensor(target).numel())
            except Exception:
                total = 0
            targets = (target,)
        if total:
            for n in targets:
                out[n] = min(gone / total, 1.0)
    return out


_PAGE_CSS = """
body { font: 13px Helvetica, Arial, sans-serif; color: #0f172a; margin: 0; background: #f8fafc; }
header { padding: 14px 22px; background: #0f172a; color: #f8fafc; }
header h1 { margin: 0 0 4px 0; font-size: 18px; }
header .sub { color: #cbd5e1; font-size: 12px; }
main { padding: 8px 22px 40px 22px; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 14px;
  margin: 12px 0; }
section h2 { font-size: 14px; margin: 0 0 8px 0; color: #334155; }
.pe-kpis { display: flex; gap: 14px; flex-wrap: wrap; }
.pe-kpi { background: #f1f5f9; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.pe-kpi b { font-size: 16px; display: block; }
.pe-work { display: flex; gap: 14px; align-items: flex-start; }
.pe-graphcol { flex: 1 1 auto; min-width: 0; }
.pe-panel { flex: 0 0 360px; position: sticky; top: 8px; max-height: calc(100vh - 16px);
  overflow: auto; border-left: 1px solid #e2e8f0; padding-left: 14px; }
.pe-panel label { display: block; font-weight: 600; color: #334155; margin: 10px 0 4px 0; }
.pe-panel .pe-row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.pe-panel input[type=text] { flex: 1 1 160px; padding: 4px 6px; border: 1px solid #cbd5e1;
  border-radius: 4px; font: 12px "DejaVu Sans Mono", Menlo, monospace; }
.pe-panel select { padding: 3px; border: 1px solid #cbd5e1; border-radius: 4px; }
.pe-layer { font-size: 14px; } .pe-type { color: #64748b; }
.pe-group { color: #334155; margin-top: 4px; }
.pe-ok, .pe-warn, .pe-bad, .pe-note { border-radius: 6px; padding: 6px 9px; margin: 8px 0 0 0;
  font-size: 12px; line-height: 1.45; word-break: break-word; }
.pe-ok { background: #f0fdf4; border: 1px solid #bbf7d0; }
.pe-warn { background: #fffbeb; border: 1px solid #fde68a; }
.pe-bad { background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; }
.pe-bad ul { margin: 4px 0 0 0; padding-left: 18px; }
.pe-note { color: #64748b; padding: 2px 0; }
#pe-steps { margin-top: 8px; max-height: 40vh; overflow: auto; font-size: 11px; }
#pe-steps div { display: flex; gap: 6px; padding: 1px 0; cursor: pointer; }
#pe-steps div:hover { background: #f1f5f9; }
#pe-steps .pe-sw { flex: 0 0 12px; height: 10px; margin-top: 2px; box-sizing: border-box;
  border-width: 2px; border-style: solid; border-radius: 2px; }
#pe-steps .pe-sw.pass { border-style: dashed; }
#pe-steps .t { flex: 1 1 auto; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#pe-steps .n { flex: 0 0 auto; max-width: 140px; color: #64748b; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; font-variant-numeric: tabular-nums; }
.pe-help { color: #64748b; font-size: 11px; margin-top: 14px; line-height: 1.5; }
#pe-viewport { position: relative; height: 72vh; overflow: auto; border: 1px solid #e2e8f0;
  border-radius: 6px; background: #fff; cursor: grab; }
#pe-viewport svg { display: block; margin: 0 auto; }
.pe-tools { margin: 0 0 6px 0; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.pe-tools input { padding: 3px 6px; border: 1px solid #cbd5e1; border-radius: 4px; width: 260px; }
button { border: 1px solid #cbd5e1; background: #fff; border-radius: 4px; padding: 3px 9px;
  cursor: pointer; font: 12px Helvetica, Arial, sans-serif; }
button:hover { background: #f1f5f9; }
.pe-legendrow { margin: 0 0 6px 0; }
#pe-tip { position: fixed; display: none; pointer-events: none; background: #0f172a; color: #f8fafc;
  padding: 6px 8px; border-radius: 5px; font-size: 11px; max-width: 420px; z-index: 10; }
.pe-tablewrap { max-height: 560px; overflow: auto; }
.pe-empty { color: #64748b; padding: 8px 0; }
.pe-problems { background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; padding: 6px 10px;
  border-radius: 6px; margin-bottom: 8px; }
#pe-charts { display: flex; flex-wrap: wrap; gap: 10px 28px; }
.pe-bars { flex: 1 1 460px; min-width: 380px; }
.pe-bars h3 { font-size: 12px; color: #334155; margin: 0 0 6px 0; }
.pe-bar { display: flex; align-items: center; gap: 8px; font-size: 11px; margin: 2px 0; }
.pe-bar-name { flex: 0 0 190px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  direction: rtl; text-align: left; }
.pe-bar-track { position: relative; flex: 1 1 auto; height: 12px; }
.pe-bar-before, .pe-bar-after { position: absolute; left: 0; top: 0; height: 12px; border-radius: 2px; }
.pe-bar-before { background: #cbd5e1; } .pe-bar-after { background: #2563eb; }
.pe-bar-val { flex: 0 0 120px; font-variant-numeric: tabular-nums; color: #991b1b; }
table.pe-groups { border-collapse: collapse; font-size: 12px; }
table.pe-groups td, table.pe-groups th { border-bottom: 1px solid #e2e8f0; padding: 3px 8px;
  text-align: left; }
@media (max-width: 1100px) { .pe-work { flex-direction: column; }
  .pe-panel { position: static; flex: 1 1 auto; border: 0; padding: 0; max-height: none; } }
"""


def _kpis(t: dict) -> str:
    def pct(a, b):  # a 0.03% change reads as such, not as -0.0%
        if not b:
            return ""
        p = 100.0 * (a - b) / b
        return f"{p:+.2f}%" if abs(p) < 1 else f"{p:+.1f}%"
    return (f'<div class="pe-kpi">params before<b>{human(t["params_before"])}</b>'
            f'{t["params_before"]:,}</div>'
            f'<div class="pe-kpi">params after<b>{human(t["params_after"])} '
            f'({pct(t["params_after"], t["params_before"])})</b>{t["params_after"]:,}</div>'
            f'<div class="pe-kpi">MACs before<b>{human(t["macs_before"])}</b>'
            f'{t["macs_before"]:,}</div>'
            f'<div class="pe-kpi">MACs after<b>{human(t["macs_after"])} '
            f'({pct(t["macs_after"], t["macs_before"])})</b>{t["macs_after"]:,}</div>')


def _report_section(report) -> str:
    if report is None:
        return ""
    groups = "".join(
        f"<tr><td>{_e(g.root)}</td><td>{_e(g.kind)}</td><td>{g.channels}</td><td>{g.pruned}</td>"
        f"<td>{100.0 * g.pruned / max(g.channels, 1):.0f}%</td><td>{len(g.layers)}</td></tr>"
        for g in report.groups)
    skipped = "".join(f"<tr><td>{_e(r)}</td><td>{_e(why)}</td></tr>" for r, why in report.skipped)
    return (f'<section><h2>Whole-model pruning: {len(report.groups)} groups pruned, '
            f'{len(report.skipped)} skipped</h2>'
            f'<table class="pe-groups"><thead><tr><th>group root</th><th>kind</th>'
            f'<th>channels</th><th>pruned</th><th>%</th><th>layers</th></tr></thead>'
            f'<tbody>{groups}</tbody></table>'
            + (f'<h2 style="margin-top:12px">Skipped groups</h2><table class="pe-groups"><thead>'
               f'<tr><th>group root</th><th>why</th></tr></thead><tbody>{skipped}</tbody></table>'
               if skipped else "") + "</section>")


REPORT_BUDGET = 600  # drawn nodes: beyond, repeated blocks fold (their layers: pick by name)
_POLICIES = (("auto", "auto"), ("cheapest", "fewest channels"),
             ("heads", "whole heads / groups"), ("dims", "same slots per head / group"))


def page_facts(DG, layout, plan=None, report=None) -> dict:
    """What the page needs besides the engine's coupling data: where hidden nodes are drawn,
    tooltips, what a click on an op says, totals, and the report's own plan (for its charts
    and to come back to)."""
    from .charts import totals
    graph = DG.graph
    t = totals(DG, None)
    visible = layout.visible if layout is not None else {}  # a caller's own SVG: no map
    ops = {}
    for k, key in visible.items():
        if key != k:
            continue
        node = graph.nodes.get(k)
        if node is None:
            ops[k] = "param"
        elif not node.module:
            ops[k] = node.type
    facts = {"hidden": {k: key for k, key in visible.items() if key != k},
             "info": {k: list(v.get("lines", [])) for k, v in layout.elements.items()}
             if layout is not None else {},
             "ops": ops, "totals": {"params": t["params_before"], "macs": t["macs_before"]},
             "initial": None, "whole": report is not None, "initial_steps": []}
    if plan is not None:
        facts["initial_steps"] = [[s.target, s.kind, s.params, s.macs] for s in plan.steps]
        if plan.root != "prune_model" and plan.root in graph.module_nodes:
            facts["initial"] = {"root": plan.root, "side": plan.side, "idxs": list(plan.idxs)}
        else:
            facts["whole"] = True
    return facts


def _steps_before(DG, targets: dict[str, str], macs: dict) -> dict[str, list[int]]:
    """Per step target: parameters and MACs before the plan (as ``charts.layer_rows``)."""
    from .charts import module_params
    graph = DG.graph
    out = {}
    for target, kind in targets.items():
        if kind == "pass":
            out[target] = [0, int(macs.get(target, 0))]
        elif kind == "param":
            try:
                out[target] = [int(DG.tensor(target).numel()), 0]
            except Exception:  # noqa: BLE001 - not a tensor of the model: no bar
                out[target] = [0, 0]
        else:
            out[target] = [module_params(DG.model, target, graph),
                           int(sum(macs.get(n, 0) for n in graph.module_nodes.get(target, ())))]
    return out


def _json_script(data) -> str:
    """JSON that is safe inside a <script> element (no "</script>", no "<!--")."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def report_html(DG, plan=None, report=None, title: str | None = None, *, svg: str | None = None,
                figures: dict | None = None, history: list | None = None,
                budget: int = REPORT_BUDGET, strategy: str = "l1", amount: float | None = None,
                round_to: int | None = None) -> str:
    """The report as an HTML string (see ``write_report``)."""
    from ..group_data import group_data
    if plan is None and report is not None:
        plan = report.plan
    if amount is None:
        amount = _report_amount(report) or 0.3
    model_name = type(DG.model).__name__
    title = title or f"Pruning plan for {model_name}"
    heat = heat_fractions(DG, plan) if report is not None else None
    layout = None
    if svg is None:
        view = GraphView(DG.graph, DG.model)
        state = view.default_state(budget)
        if plan is not None and plan.root in DG.graph.module_nodes:
            state = view.reveal(state, DG.graph.module_nodes[plan.root][0])
        layout = view.layout(state)
        spec = view.highlight_spec(layout, plan.highlighted if plan is not None else None, heat)
        svg = highlight_svg(layout.svg, spec)
    data = group_data(DG, strategy=strategy, amount=amount, round_to=round_to)
    facts = page_facts(DG, layout, plan, report)
    from ..metrics import node_macs
    macs = node_macs(DG.graph)
    targets = {row[0]: row[1] for row in data["steps"]}
    targets.update({s.target: s.kind for s in (plan.steps if plan is not None else ())})
    data["steps_before"] = _steps_before(DG, targets, macs)
    data["page"] = facts
    from .charts import totals
    t = totals(DG, plan)
    if plan is None:
        what = "no plan: the model as it is"
    elif plan.root == "prune_model":
        what = f"whole-model plan: {plan.groups} groups, {len(plan.steps)} steps"
    else:
        what = (f"plan rooted at <b>{_e(plan.root)}</b> ({_e(plan.side)}put channels "
                f"{_e(idx_text(plan.idxs, 120))}), {len(plan.steps)} steps")
    hist = ""
    if history:
        items = "".join(f"<li>{_e(h)}</li>" for h in history)
        hist = f"<section><h2>Committed so far</h2><ol>{items}</ol></section>"
    layers = "".join(f'<option value="{_e(n)}">' for n, e in data["layers"].items()
                     if isinstance(e.get("out"), int))
    policies = "".join(f'<option value="{k}">{_e(v)}</option>' for k, v in _POLICIES)
    extra = _plotly_section(figures)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_PAGE_CSS}
{css()}</style></head>
<body>
<header><h1>{_e(title)}</h1><div class="sub">{_e(model_name)} · {what} · prune_explorer report ·
{stamp}</div></header>
<main>
<section><h2>Summary</h2><div class="pe-kpis" id="pe-kpis">{_kpis(t)}</div></section>
{hist}
<section><h2>Graph: click any layer to see what pruning it takes along, and why</h2>
<div class="pe-work"><div class="pe-graphcol">
<div class="pe-tools"><button id="pe-zout" title="zoom out">−</button><button id="pe-zin"
title="zoom in">+</button><button id="pe-fit">fit graph</button><button id="pe-fitplan">fit plan</button>
<input id="pe-find" list="pe-layers" placeholder="find a layer by name…"><datalist
id="pe-layers">{layers}</datalist></div>
<div class="pe-legendrow">{legend_html(bool(heat))}</div>
<div id="pe-viewport">{svg}</div></div>
<aside class="pe-panel">
<div id="pe-layerfacts"></div>
<label for="pe-idx">Channels to remove (of the selected layer)</label>
<div class="pe-row"><input type="text" id="pe-idx" placeholder="e.g. 2, 6, 9 or 0-15">
<button id="pe-apply">apply</button></div>
<div class="pe-row" style="margin-top:6px"><button id="pe-pick" title="the channels the strategy
picks, judged over the whole group">L1</button><label style="margin:0;font-weight:400"
title="how channels tied by a reshape (heads, groups) widen; auto: the fewest channels for typed
ones, whole heads / groups for the strategy">tied channels widen to
<select id="pe-policy">{policies}</select></label></div>
<div id="pe-msg"></div>
<div id="pe-steps"></div>
<div style="margin-top:10px"><button id="pe-back">show the report's plan</button></div>
<div class="pe-help">Colours: <b>root</b> the layer you chose, <b>out</b> layers that lose output
channels, <b>in</b> layers that lose input channels, <b>pass</b> ops the channels flow through.
Hover a node for its indices and why it is coupled. Every plan here is the engine's: the page
replays <code>DG.get_pruning_plan</code> on the coupling data exported with the report.</div>
</aside></div><div id="pe-tip"></div></section>
<section><h2>Plan</h2><div class="pe-tablewrap" id="pe-table-wrap"><div id="pe-table">{plan_table_html(plan)}</div></div></section>
<section><h2>Where it removes parameters and MACs</h2><div id="pe-charts"></div></section>
{_report_section(report)}
{extra}
</main>
<script type="application/json" id="pe-data">{_json_script(data)}</script>
<script>{(_HERE / "report_engine.js").read_text()}</script>
<script>{(_HERE / "report_page.js").read_text()}</script>
</body></html>
"""


def _report_amount(report) -> float | None:
    """The amount a prune_model report was made with: its groups' median share pruned."""
    if report is None or not report.groups:
        return None
    shares = sorted(g.pruned / max(g.channels, 1) for g in report.groups)
    return round(shares[len(shares) // 2], 2) or None


def _plotly_section(figures: dict | None) -> str:
    """Extra plotly figures a caller passes (plotly.js inlined once, so still offline)."""
    divs, first = [], True
    for name, fig in (figures or {}).items():
        if fig is None:
            continue
        divs.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False,
                                div_id=f"pe-chart-{name}",
                                config={"displaylogo": False, "responsive": True}))
        first = False
    if not divs:
        return ""
    return ('<section><h2>More charts</h2><div style="display:flex;flex-wrap:wrap;gap:8px">'
            + "".join(f'<div style="flex:1 1 420px">{d}</div>' for d in divs) + "</div></section>")


def write_report(path, DG, plan=None, report=None, title=None, **kw) -> pathlib.Path:
    """Write the standalone HTML audit report and return its path.

    ``plan``: a PruningPlan (highlighted in the graph, listed in ``table.pe-plan``, charted);
    ``report``: a ``prune_model`` PruneReport (its combined plan is used when ``plan`` is
    None; its groups and skipped groups are listed, and layers are coloured by the fraction of
    parameters they lose). A click on a layer previews the channels ``strategy`` picks at
    ``amount`` (default: the report's amount, else 0.3); typed channels are planned too.
    Everything is inline (no plotly unless ``figures`` are passed): it opens offline.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(DG, plan, report, title, **kw), encoding="utf-8")
    return path
