"""The explorer's panels as HTML, from an ``Explorer``'s state: the title line, the layer /
whole-model details, the plan summary, the history and the status line. Plain functions, so
every front-end (the ipywidgets UI, marimo) shows the same text and tests read it without a
browser."""

from __future__ import annotations

import html

from ..viz.charts import MACS_HOVER, pct
from ..viz.dot import human
from ..viz.report import plan_table_html

_e = html.escape
PANEL_CSS = """
.pe-ui { font-family: Helvetica, Arial, sans-serif; }
.pe-ui .pe-header { align-items: center; gap: 8px; }
.pe-ui .pe-title { font-size: 14px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.pe-ui .pe-header .widget-button { width: auto; padding: 0 14px; }
.pe-ui .pe-title b { color: #0f172a; }
.pe-ui .pe-status { font-size: 12px; color: #334155; min-height: 18px; }
.pe-ui .pe-status .pe-err { color: #b91c1c; }
.pe-ui .pe-panel { border: 1px solid #e2e8f0; border-radius: 8px; padding: 8px 10px;
  background: #fff; }
.pe-ui .pe-panel h4 { margin: 6px 0 4px 0; font-size: 12px; color: #475569;
  text-transform: uppercase; letter-spacing: .04em; }
.pe-ui .widget-html-content { line-height: 1.45; }
.pe-ui .pe-details { font-size: 12px; }
.pe-ui .pe-details > .widget-html-content > div { margin: 1px 0; }
.pe-ui .pe-details code { font-size: 11px; color: #334155; word-break: break-all; }
.pe-ui .pe-summary { font-size: 12px; line-height: 1.5; }
.pe-ui .pe-summary .pe-big { font-size: 15px; font-weight: 700; }
.pe-ui .pe-tablebox { border: 1px solid #e2e8f0; border-radius: 8px; overflow: hidden; }
.pe-ui .pe-tablescroll { max-height: 340px; overflow: auto; }
.pe-ui table.pe-plan td.idx { white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  max-width: 300px; }
.pe-ui table.pe-plan tr:hover td.idx { white-space: normal; word-break: break-word; }
.pe-ui .pe-empty { color: #64748b; padding: 10px; font-size: 12px; }
.pe-ui .pe-problems { background: #fef2f2; color: #991b1b; padding: 6px 10px; font-size: 12px; }
.pe-ui .pe-history { font-size: 11.5px; color: #334155; }
"""
MACS_TIP = MACS_HOVER


def title_html(ex) -> str:
    t = ex.summary()
    return (f'<div class="pe-title"><b>prune_explorer</b> · {_e(ex.title)} · '
            f'{human(t["params_before"])} params · '
            f'<span title="{MACS_TIP}">{human(t["macs_before"])} MACs</span>'
            f' · {len(ex.layout.elements)} nodes drawn</div>')


def details_html(ex) -> str:
    """The selected layer's facts, or in whole-model mode what the preview did."""
    if ex.mode == "model":
        r = ex.report
        if r is None:
            return ("<h4>Whole model</h4><div>Previewing every group… (or nothing to prune "
                    "with these settings: see the status line)</div>")
        skipped = "".join(f"<li>{_e(root)}: {_e(why[:140])}</li>" for root, why in
                          r.skipped[:8])
        more = f"<li>… {len(r.skipped) - 8} more</li>" if len(r.skipped) > 8 else ""
        return (f"<h4>Whole model</h4><div>{len(r.groups)} groups pruned, {len(r.skipped)} "
                f"skipped{' (why below)' if skipped else ''}</div>"
                + (f"<ul style='margin:2px 0 0 16px;padding:0'>{skipped}{more}</ul>"
                   if skipped else "")
                + "<div style='color:#64748b'>layers are coloured by the share of their "
                  "parameters removed (legend under the graph)</div>")
    d = ex.layer_details()
    if not d:
        return ("<h4>Layer</h4><div>Click a layer in the graph (or search for one) to make it "
                "the plan's root.</div>")
    lines = "".join(f"<div>{_e(line)}</div>" for line in d.get("lines", []))
    group = ""
    if d.get("group"):
        group = f"<div>group: {_e(d['group'])}, {d['group_size']} channels</div>"
    return (f"<h4>Layer</h4><div><b>{_e(d['name'])}</b></div>{lines}{group}"
            f"<code>{_e(d.get('repr', '')[:160])}</code>")


def summary_html(ex) -> str:
    """What the previewed plan removes, in numbers and % of the whole model."""
    if ex.plan is None:
        return ""
    t = ex.summary()
    dp = t["params_before"] - t["params_after"]
    dm = t["macs_before"] - t["macs_after"]
    pp = 100.0 * dp / max(t["params_before"], 1)
    pm = 100.0 * dm / max(t["macs_before"], 1)
    how = "" if ex.mode == "model" else f"{len(ex.plan.idxs)} channels · "
    return (f"<h4>Plan preview</h4><div>{how}{t['steps']} steps, {t['layers']} layers</div>"
            f"<div class='pe-big'>−{human(dp)} params ({pct(pp)})</div>"
            f"<div class='pe-big' title='{MACS_TIP}'>−{human(dm)} MACs ({pct(pm)})</div>"
            + ("" if t["valid"] else "<div style='color:#b91c1c'>cannot run: see status</div>"))


def history_html(ex) -> str:
    items = "".join(f"<li>{_e(h.description)}</li>" for h in ex.history)
    return (f"<h4>History</h4><ol style='margin:0 0 0 16px;padding:0'>{items}</ol>"
            if items else "")


def status_html(ex) -> str:
    if ex.error:
        return f"<span class='pe-err'>⚠ {_e(ex.error)}</span>"
    return _e(ex.message)


def table_html(ex) -> str:
    """The plan table (one row per step), in a scroll box that each new plan replaces, so
    a new plan's table always opens at its first row (hover a row for all its indices)."""
    table = plan_table_html(ex.plan, limit=None,
                            empty="No plan previewed: click a layer in the graph (or preview "
                                  "the whole model).")
    return f"<div class='pe-tablescroll'>{table}</div>"


def styled(*parts: str) -> str:
    """Panels for a front-end that shows plain HTML (marimo's ``mo.Html``): the same look as
    in JupyterLab."""
    from ..viz.report import css
    return (f"<style>{css()}\n{PANEL_CSS}</style><div class='pe-ui'>" + "".join(parts)
            + "</div>")


def plan_panel_html(ex) -> str:
    """Status, layer facts and plan summary beside the plan table, styled: what a front-end
    without ipywidgets (marimo) shows under the graph."""
    side = f"<div class='pe-details'>{details_html(ex)}</div>" \
           f"<div class='pe-summary'>{summary_html(ex)}</div>{history_html(ex)}"
    return styled(f"<div class='pe-status'>{status_html(ex)}</div>",
                  "<div style='display:flex;gap:10px;align-items:flex-start'>"
                  f"<div class='pe-panel' style='flex:0 0 320px'>{side}</div>"
                  f"<div class='pe-tablebox' style='flex:1 1 0;min-width:0'>{table_html(ex)}"
                  "</div></div>")
