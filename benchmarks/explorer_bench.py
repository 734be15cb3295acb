"""Explorer timings: first render and click-to-highlight, measured where the user feels them.

    python benchmarks/explorer_bench.py                 # resnet50 and resnet152
    python benchmarks/explorer_bench.py --models resnet18 resnet50 --clicks 20

For each model (random weights, 1×3×224×224):

- Python: tracing, and the first render (DOT + Graphviz ``dot`` + decorating the SVG);
- browser (JupyterLab in headless Chromium): wall time from "run the cell" to the graph on
  screen, and the canvas's own time to insert and set up the SVG;
- click-to-highlight: ``performance.now()`` in the page around a click on a layer until that
  layer carries ``pe-root`` (Python computes the coupling and sends it; the canvas only toggles
  classes), and until the plan with its L1-30% indices has arrived (channel scoring of a big
  residual group can take a second), over layers spread through the drawn graph, after one
  warm-up click. Also the canvas's class-toggling time alone.

Needs JupyterLab, Playwright and Debian's Chromium (see tests/jupyter_harness.py).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CELL = """import time, torch, torchvision
from prune_explorer import Explorer
torch.manual_seed(0)
model = torchvision.models.{model}().eval()
t0 = time.perf_counter()
ex = Explorer(model, torch.randn(1, 3, 224, 224))
ex"""

CLICK_JS = """async (node) => {
    const g = document.querySelector(`g[data-node="${node}"]`);
    if (!g) return null;
    const canvas = g.closest('.pe-canvas').parentElement;
    const t0 = performance.now();
    let t1 = null;
    const done = new Promise((resolve) => {
        const check = () => {
            if (t1 === null && g.classList.contains('pe-root')) t1 = performance.now();
            if (t1 !== null && canvas.dataset.pending === '0') {
                obs.disconnect(); resolve(performance.now());
            }
        };
        const obs = new MutationObserver(check);
        obs.observe(g, { attributes: true, attributeFilter: ['class'] });
        obs.observe(canvas, { attributes: true, attributeFilter: ['data-pending'] });
    });
    g.dispatchEvent(new MouseEvent('click', { bubbles: true }));
    const t2 = await done;
    return { ms: t1 - t0, plan_ms: t2 - t0,
             restyle_ms: parseFloat(canvas.dataset.highlightMs || 'NaN') };
}"""


def python_side(model_name: str) -> dict:
    import torch
    import torchvision
    from prune_explorer import Explorer
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().eval()
    t0 = time.perf_counter()
    ex = Explorer(model, torch.randn(1, 3, 224, 224))
    total = time.perf_counter() - t0
    previews = []
    layers = [n.module for n in ex.DG.graph.nodes.values() if n.type == "Conv2d"]
    for layer in layers[:: max(1, len(layers) // 12)]:
        ex.select(layer)
        previews.append(ex.timings["preview"] * 1000)
    return {"trace_s": ex.timings["trace"], "first_render_s": ex.timings["first_render"],
            "explorer_s": total, "drawn_nodes": ex.layout.n_elements,
            "graph_nodes": len(ex.DG.graph.nodes), "svg_kb": len(ex.base_svg) / 1024,
            "preview_ms_median": statistics.median(previews),
            "preview_ms_max": max(previews)}


def browser_side(model_name: str, clicks: int, args_gap: int = 1500) -> dict:
    import nbformat
    from jupyter_harness import JupyterLab, browser
    with tempfile.TemporaryDirectory() as d:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(CELL.format(model=model_name))]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, pathlib.Path(d) / "bench.ipynb")
        with JupyterLab(d) as lab, browser() as b:
            page = lab.open(b, "bench.ipynb", width=1600, height=1300)
            t0 = time.perf_counter()
            lab.run_all(page)
            page.wait_for_selector(".pe-canvas svg g[data-node]", state="attached",
                                   timeout=600_000)
            cell_to_graph = time.perf_counter() - t0
            page.wait_for_timeout(1500)
            render_ms = float(page.evaluate(
                "document.querySelector('.pe-canvas').parentElement.dataset.renderMs"))
            nodes = page.evaluate("""() => Array.from(document.querySelectorAll(
                '.pe-canvas g.pe-layer[data-node]')).map(g => g.getAttribute('data-node'))
                .filter(n => !n.includes(':'))""")
            step = max(1, len(nodes) // clicks)
            picks = nodes[::step][:clicks]
            page.evaluate(CLICK_JS, nodes[1])  # warm-up
            page.wait_for_timeout(500)
            results = []
            for node in picks:
                r = page.evaluate(CLICK_JS, node)
                if r is not None:
                    results.append((node, r["ms"], r["restyle_ms"], r["plan_ms"]))
                page.wait_for_timeout(args_gap)  # let tables/charts of this click finish
            ms = [r[1] for r in results]
            restyle = [r[2] for r in results]
            full = [r[3] for r in results]
            return {"cell_to_graph_s": cell_to_graph, "canvas_render_ms": render_ms,
                    "click_ms_median": statistics.median(ms),
                    "click_ms_p90": sorted(ms)[int(0.9 * (len(ms) - 1))],
                    "click_ms_max": max(ms), "restyle_ms_median": statistics.median(restyle),
                    "plan_ms_median": statistics.median(full), "plan_ms_max": max(full),
                    "clicks": [(n, round(m, 1), round(f, 1)) for n, m, _, f in results]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50", "resnet152"])
    ap.add_argument("--clicks", type=int, default=16)
    ap.add_argument("--gap-ms", type=int, default=1000,
                    help="pause between clicks (a user reading the result)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "out" / "explorer_bench.json"))
    args = ap.parse_args()
    report = {}
    for name in args.models:
        py = python_side(name)
        print(f"{name}: trace {py['trace_s']:.2f}s · first render {py['first_render_s']:.3f}s "
              f"({py['drawn_nodes']} of {py['graph_nodes']} nodes drawn, "
              f"{py['svg_kb']:.0f} KB SVG) · preview (plan, Python) median "
              f"{py['preview_ms_median']:.1f} ms, max {py['preview_ms_max']:.1f} ms", flush=True)
        report[name] = {"python": py}
        if not args.no_browser:
            br = browser_side(name, args.clicks, args.gap_ms)
            report[name]["browser"] = br
            print(f"{name}: browser: cell run -> graph on screen {br['cell_to_graph_s']:.1f}s "
                  f"(kernel start + trace + render), canvas SVG set-up "
                  f"{br['canvas_render_ms']:.0f} ms · click -> highlighted plan median "
                  f"{br['click_ms_median']:.0f} ms, p90 {br['click_ms_p90']:.0f} ms, max "
                  f"{br['click_ms_max']:.0f} ms over {len(br['clicks'])} layers · class "
                  f"toggling alone {br['restyle_ms_median']:.2f} ms ({args.gap_ms} ms between "
                  f"clicks) · with every index scored (tooltips, table) median "
                  f"{br['plan_ms_median']:.0f} ms, max {br['plan_ms_max']:.0f} ms", flush=True)
            slow = [c for c in br["clicks"] if c[1] > 100]
            if slow:
                print(f"  clicks over 100 ms: {slow}")
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
