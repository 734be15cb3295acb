"""Static pictures of a previewed plan, for notebooks read where widgets do not run (GitHub).

    ex = Explorer(model, x); ex.select("conv1"); ex.set_indices([2, 5])
    show_plan(ex, "conv_conv")        # PNG of the graph with the plan highlighted + plan table

The PNG is the explorer's own graph: the same DOT that ``prune_explorer.viz.dot`` lays out for
the widget, with the highlight (root / out / in / pass, the edges the channels flow along)
written as Graphviz attributes instead of CSS classes, the mapped indices added under each
pruned layer's name, a legend, and rendered by ``dot -Tpng``. Nothing here changes a plan.
"""

from __future__ import annotations

import html
import os
import pathlib
import re
import subprocess

from prune_explorer.viz.dot import idx_text

# where show_plan saves its PNGs (the test suite points PE_FIGURES at a temporary folder)
FIGURES = pathlib.Path(os.environ.get("PE_FIGURES") or pathlib.Path(__file__).parent / "figures")

# the colours of prune_explorer/viz/highlight.css
ROLE_STYLE = {
    "root": {"fillcolor": "#fde68a", "color": "#b45309", "penwidth": "3"},
    "out": {"fillcolor": "#fecaca", "color": "#dc2626", "penwidth": "2"},
    "in": {"fillcolor": "#bfdbfe", "color": "#1d4ed8", "penwidth": "2"},
    "pass": {"fillcolor": "#ede9fe", "color": "#7c3aed", "penwidth": "1.5",
             "style": "rounded,filled,dashed"},
}
ROLE_TEXT = {"root": "#92400e", "out": "#991b1b", "in": "#1e3a8a"}
ROLE_LABEL = {"root": "root (the layer you chose)", "out": "output channels pruned",
              "in": "input channels pruned", "pass": "channels pass through"}
IDX_PREFIX = {"root": "out", "out": "out", "in": "in"}
UNTOUCHED = {"color": "#cbd5e1"}
FLOW = {"color": "#ea580c", "penwidth": "1.8", "fontcolor": "#9a3412"}
QUIET_EDGE = {"color": "#d8dee6"}


def _attrs(d: dict) -> str:
    return " ".join(f'{k}="{v}"' for k, v in d.items())


def _label_span(line: str) -> tuple[int, int] | None:
    """Start and end (exclusive) of the HTML-like ``label=<...>`` in a DOT node line."""
    start = line.find("label=<")
    if start < 0:
        return None
    i, depth = start + len("label="), 0
    while i < len(line):
        if line[i] == "<":
            depth += 1
        elif line[i] == ">":
            depth -= 1
            if depth == 0:
                return start, i + 1
        i += 1
    return None


def plan_dot(ex, plan=None, title: str | None = None, dim: bool = True) -> str:
    """The explorer's DOT with its previewed plan (or ``plan``, made on the same graph) as
    Graphviz styles."""
    view, layout = ex.view, ex.layout
    plan = plan if plan is not None else ex.plan
    highlighted = plan.highlighted if plan is not None else {}
    spec = view.highlight_spec(layout, highlighted)
    dot, _elements, names, _ = view.to_dot(layout.state)
    key_of = {nid: key for nid, key in names.items()}
    nodes, inside = spec.get("nodes", {}), spec.get("inside", {})
    flow = set(spec.get("edges", ()))
    out = []
    for line in dot.splitlines():
        m = re.match(r'\s*(n\d+) \[id="n\d+" ', line)
        if m:
            key = key_of.get(m.group(1), "")
            role = nodes.get(key) or inside.get(key)
            style = dict(ROLE_STYLE[role]) if role else (UNTOUCHED if dim else {})
            if role and key in inside:
                style["style"] = "filled,dashed"
            h = highlighted.get(key)
            span = _label_span(line)
            if role in IDX_PREFIX and h and span and key in nodes:
                a, b = span
                text = f'{IDX_PREFIX[role]} {idx_text(h["idxs"], 60)}'
                extra = (f'<BR/><FONT POINT-SIZE="9" COLOR="{ROLE_TEXT[role]}">'
                         f'<B>{html.escape(text)}</B></FONT>')
                line = line[:b - 1] + extra + line[b - 1:]
            if style:
                line = line[: line.rfind("];")] + " " + _attrs(style) + "];"
            out.append(line)
            continue
        m = re.match(r'\s*n\d+ -> n\d+ \[id="(e\d+)"', line)
        if m and "invis" not in line:
            style = FLOW if m.group(1) in flow else (QUIET_EDGE if dim else {})
            if style:
                line = line[: line.rfind("];")] + " " + _attrs(style) + "];"
        out.append(line)
    legend = "".join(
        f'<TD BGCOLOR="{ROLE_STYLE[r]["fillcolor"]}" COLOR="{ROLE_STYLE[r]["color"]}" '
        f'BORDER="2" STYLE="rounded"> {html.escape(ROLE_LABEL[r])} </TD><TD> </TD>'
        for r in ("root", "out", "in", "pass"))
    head = f'<TR><TD COLSPAN="8" ALIGN="LEFT"><B>{html.escape(title)}</B></TD></TR>' \
        if title else ""
    label = (f'<<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="3">{head}<TR>{legend}</TR>'
             f'</TABLE>>')
    text = "\n".join(out)
    close = text.rfind("}")
    return (text[:close] + f'graph [label={label} labelloc="t" labeljust="l" fontsize=11 '
            f'bgcolor="white"];\n' + text[close:])


def plan_png(ex, plan=None, path: str | pathlib.Path | None = None,
             title: str | None = None, dpi: int = 96) -> bytes:
    """Render ``plan_dot`` with ``dot -Tpng``; also write it to ``path`` if given."""
    proc = subprocess.run(["dot", "-Tpng", f"-Gdpi={dpi}"],
                          input=plan_dot(ex, plan, title).encode("utf-8"), capture_output=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("dot failed: " + proc.stderr.decode("utf-8", "replace")[:400])
    png = _small_png(proc.stdout)
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    return png


def _small_png(png: bytes) -> bytes:
    """The same picture with a 256-colour palette (about a third of the bytes; a graph has
    few colours), when Pillow is there."""
    try:
        import io
        from PIL import Image
    except ImportError:
        return png
    img = Image.open(io.BytesIO(png)).convert("RGB")
    buf = io.BytesIO()
    img.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(png) else png


def plan_table_md(plan, pass_ops: bool = True) -> str:
    """The plan as a Markdown table: one row per pruned layer (pass-through ops listed
    below it), with mapped indices, parameters and MACs removed and why it is coupled."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    rows = ["| # | layer | role | function | indices | n | params removed | MACs removed "
            "| why coupled |", "|---:|---|---|---|---|---:|---:|---:|---|"]
    i = 0
    for s in plan.steps:
        if s.kind == "pass":
            continue
        i += 1
        rows.append(f"| {i} | `{cell(s.target)}` | {s.role} | `{s.fn}` | "
                    f"{cell(idx_text(s.idxs, 80))} | {len(s.idxs)} | {s.params:,} | "
                    f"{s.macs:,} | {cell(s.why)} |")
    rows.append(f"| | **total** | | | | | **{plan.params_removed:,}** | "
                f"**{plan.macs_removed:,}** | |")
    text = "\n".join(rows)
    passes = [s.target for s in plan.steps if s.kind == "pass"]
    if pass_ops and passes:
        text += ("\n\nChannels pass through (no parameters of their own): "
                 + ", ".join(f"`{p}`" for p in passes) + ".")
    return text


def show_plan(ex, name: str, plan=None, title: str | None = None,
              dpi: int = 96) -> pathlib.Path:
    """Display the highlighted graph (PNG, also saved as ``figures/<name>.png``) and the plan
    table of the explorer's previewed plan (or of ``plan``, made on the explorer's graph)."""
    from IPython.display import Image, Markdown, display
    plan = plan if plan is not None else ex.plan
    path = FIGURES / f"{name}.png"
    png = plan_png(ex, plan, path, title=title, dpi=dpi)
    display(Image(data=png))
    display(Markdown(plan_table_md(plan)))
    return path
