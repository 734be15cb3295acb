"""The explorer's panels as HTML, from an ``Explorer``'s state: the title line, the layer /
whole-model details, the plan summary, the history and the status line. Plain functions, so
every front-end (the ipywidgets UI, marimo) shows the same text and tests read it without a
browser."""

from __future__ import annotations

import html

from ..viz.dot import human
from ..viz.report import plan_table_html

_e = html.escape
MACS_TIP = "multiply-accumulates; FLOPs ≈ 2 × MACs"


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


def pct(p: float) -> str:
    """A share that never reads 0.0% when something is removed: 0.2%, 0.04%, 12.5%."""
    if p == 0:
        return "0%"
    if abs(p) >= 1:
        return f"{p:.1f}%"
    digits = 1
    while round(abs(p), digits) == 0 and digits < 3:
        digits += 1
    if round(abs(p), digits) == 0:
        return "<0.001%" if p > 0 else ">-0.001%"
    return f"{p:.{digits}f}%"


def history_html(ex) -> str:
    items = "".join(f"<li>{_e(h.description)}</li>" for h in ex.history)
    return (f"<h4>History</h4><ol style='margin:0 0 0 16px;padding:0'>{items}</ol>"
            if items else "")


def status_html(ex) -> str:
    if ex.error:
        return f"<span class='pe-err'>⚠ {_e(ex.error)}</span>"
    return _e(ex.message)


def table_html(ex) -> str:
    return plan_table_html(ex.plan, limit=None,
                           empty="No plan previewed: click a layer in the graph (or preview "
                                 "the whole model).")
