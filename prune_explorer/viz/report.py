"""The standalone HTML audit report: the graph with the plan highlighted, the plan table and
the charts, in one file that opens offline (plotly.js is inlined), for reviewers.

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


_REPORT_JS = r"""
(function () {
  const vp = document.getElementById('pe-viewport'), svg = vp.querySelector('svg');
  if (!svg) return;
  const vb = svg.viewBox.baseVal, natW = vb.width * 96 / 72, natH = vb.height * 96 / 72;
  svg.removeAttribute('width'); svg.removeAttribute('height');
  let z = Math.max(0.3, Math.min(1, (vp.clientWidth - 20) / natW));
  function zoom(nz) {
    const cx = vp.scrollLeft + vp.clientWidth / 2, cy = vp.scrollTop + vp.clientHeight / 2, f = nz / z;
    z = nz; svg.style.width = natW * z + 'px'; svg.style.height = natH * z + 'px';
    vp.scrollLeft = cx * f - vp.clientWidth / 2; vp.scrollTop = cy * f - vp.clientHeight / 2;
  }
  zoom(z);
  const first = svg.querySelector('g.pe-root, g.pe-out, g.pe-in, g.pe-hot');
  if (first) {
    const r = first.getBoundingClientRect(), v = vp.getBoundingClientRect();
    vp.scrollTop += r.top - v.top - vp.clientHeight / 3;
    vp.scrollLeft += r.left - v.left - vp.clientWidth / 2 + r.width / 2;
  }
  document.getElementById('pe-zin').onclick = () => zoom(Math.min(4, z * 1.25));
  document.getElementById('pe-zout').onclick = () => zoom(Math.max(0.05, z / 1.25));
  document.getElementById('pe-fit').onclick = () =>
    zoom(Math.min((vp.clientWidth - 20) / natW, (vp.clientHeight - 20) / natH, 1.5));
  vp.addEventListener('wheel', (ev) => {
    if (!(ev.ctrlKey || ev.metaKey)) return;
    ev.preventDefault(); zoom(Math.max(0.05, Math.min(4, z * (ev.deltaY < 0 ? 1.1 : 1 / 1.1))));
  }, { passive: false });
  let drag = null;
  vp.addEventListener('pointerdown', (ev) => { drag = [ev.clientX, ev.clientY, vp.scrollLeft, vp.scrollTop]; });
  window.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    vp.scrollLeft = drag[2] - (ev.clientX - drag[0]); vp.scrollTop = drag[3] - (ev.clientY - drag[1]);
  });
  window.addEventListener('pointerup', () => { drag = null; });
  const tip = document.getElementById('pe-tip');
  vp.addEventListener('pointerover', (ev) => {
    const g = ev.target.closest('g[data-node]');
    if (!g) { tip.style.display = 'none'; return; }
    let t = '<b>' + g.getAttribute('data-node') + '</b>';
    const info = (window.PE_INFO || {})[g.getAttribute('data-node')];
    if (info) t += '<br>' + info.lines.join('<br>');
    for (const r of ['root', 'out', 'in', 'pass']) if (g.classList.contains('pe-' + r)) t += '<br><i>' + r + '</i>';
    if (g.dataset.idxs) t += '<br>indices: ' + g.dataset.idxs;
    if (g.dataset.why) t += '<br>why: ' + g.dataset.why;
    tip.innerHTML = t; tip.style.display = 'block';
  });
  vp.addEventListener('pointermove', (ev) => {
    tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
  });
  vp.addEventListener('pointerleave', () => { tip.style.display = 'none'; });
})();
"""

_PAGE_CSS = """
body { font: 13px Helvetica, Arial, sans-serif; color: #0f172a; margin: 0; background: #f8fafc; }
header { padding: 14px 22px; background: #0f172a; color: #f8fafc; }
header h1 { margin: 0 0 4px 0; font-size: 18px; }
header .sub { color: #cbd5e1; font-size: 12px; }
main { padding: 12px 22px 40px 22px; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 14px;
  margin: 12px 0; }
section h2 { font-size: 14px; margin: 0 0 8px 0; color: #334155; }
.pe-kpis { display: flex; gap: 14px; flex-wrap: wrap; }
.pe-kpi { background: #f1f5f9; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.pe-kpi b { font-size: 16px; display: block; }
#pe-viewport { height: 70vh; overflow: auto; border: 1px solid #e2e8f0; border-radius: 6px;
  background: #fff; cursor: grab; }
#pe-viewport svg { display: block; margin: 0 auto; }
.pe-tools { margin: 0 0 6px 0; display: flex; gap: 6px; align-items: center; }
.pe-tools button { border: 1px solid #cbd5e1; background: #fff; border-radius: 4px; padding: 2px 9px;
  cursor: pointer; }
#pe-tip { position: fixed; display: none; pointer-events: none; background: #0f172a; color: #f8fafc;
  padding: 6px 8px; border-radius: 5px; font-size: 11px; max-width: 420px; z-index: 10; }
.pe-tablewrap { max-height: 520px; overflow: auto; }
.pe-charts { display: flex; flex-wrap: wrap; gap: 8px; }
.pe-charts > div { flex: 1 1 420px; min-width: 380px; }
.pe-problems { background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; padding: 6px 10px;
  border-radius: 6px; margin-bottom: 8px; }
table.pe-groups { border-collapse: collapse; font-size: 12px; }
table.pe-groups td, table.pe-groups th { border-bottom: 1px solid #e2e8f0; padding: 3px 8px;
  text-align: left; }
"""


def _kpis(t: dict) -> str:
    def pct(a, b):
        return f"{100.0 * (a - b) / b:+.1f}%" if b else ""
    return (f'<div class="pe-kpis">'
            f'<div class="pe-kpi">params before<b>{human(t["params_before"])}</b>'
            f'{t["params_before"]:,}</div>'
            f'<div class="pe-kpi">params after<b>{human(t["params_after"])} '
            f'({pct(t["params_after"], t["params_before"])})</b>{t["params_after"]:,}</div>'
            f'<div class="pe-kpi">MACs before<b>{human(t["macs_before"])}</b>'
            f'{t["macs_before"]:,}</div>'
            f'<div class="pe-kpi">MACs after<b>{human(t["macs_after"])} '
            f'({pct(t["macs_after"], t["macs_before"])})</b>{t["macs_after"]:,}</div></div>')


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


def report_html(DG, plan=None, report=None, title: str | None = None, *, svg: str | None = None,
                figures: dict | None = None, history: list | None = None,
                budget: int = 150) -> str:
    """The report as an HTML string (see ``write_report``)."""
    from . import charts
    if plan is None and report is not None:
        plan = report.plan
    model_name = type(DG.model).__name__
    title = title or f"Pruning plan for {model_name}"
    heat = heat_fractions(DG, plan) if report is not None else None
    info = {}
    if svg is None:
        view = GraphView(DG.graph, DG.model)
        state = view.default_state(budget)
        if plan is not None and plan.root in DG.graph.module_nodes:
            state = view.reveal(state, DG.graph.module_nodes[plan.root][0])
        layout = view.layout(state)
        spec = view.highlight_spec(layout, plan.highlighted if plan is not None else None, heat)
        svg = highlight_svg(layout.svg, spec)
        info = {k: {"lines": v.get("lines", [])} for k, v in layout.elements.items()}
    if figures is None:
        rows = charts.layer_rows(DG, plan)
        figures = {"params": charts.params_figure(rows), "macs": charts.macs_figure(rows),
                   "totals": charts.totals_figure(charts.totals(DG, plan))}
    t = charts.totals(DG, plan)
    chart_divs = []
    first = True
    for name, fig in figures.items():
        if fig is None:
            continue
        chart_divs.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False,
                                      div_id=f"pe-chart-{name}",
                                      config={"displaylogo": False, "responsive": True}))
        first = False
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
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_PAGE_CSS}
{css()}</style></head>
<body>
<header><h1>{_e(title)}</h1><div class="sub">{_e(model_name)} · {what} · prune_explorer report ·
{stamp}</div></header>
<main>
<section><h2>Summary</h2>{_kpis(t)}</section>
{hist}
<section><h2>Graph</h2>
<div class="pe-tools"><button id="pe-zout">−</button><button id="pe-zin">+</button>
<button id="pe-fit">fit</button>{legend_html(bool(heat))}</div>
<div id="pe-viewport">{svg}</div><div id="pe-tip"></div></section>
<section><h2>Plan</h2><div class="pe-tablewrap">{plan_table_html(plan)}</div></section>
<section><h2>Charts</h2><div class="pe-charts">{''.join(f'<div>{d}</div>' for d in chart_divs)}
</div></section>
{_report_section(report)}
</main>
<script>window.PE_INFO = {json.dumps(info)};</script>
<script>{_REPORT_JS}</script>
</body></html>
"""


def write_report(path, DG, plan=None, report=None, title=None, **kw) -> pathlib.Path:
    """Write the standalone HTML audit report and return its path.

    ``plan``: a PruningPlan (highlighted in the graph, listed in ``table.pe-plan``, charted);
    ``report``: a ``prune_model`` PruneReport (its combined plan is used when ``plan`` is
    None; its groups and skipped groups are listed, and layers are coloured by the fraction of
    parameters they lose). The file embeds plotly.js, so it opens offline without a kernel.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(DG, plan, report, title, **kw), encoding="utf-8")
    return path
