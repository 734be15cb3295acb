"""The one-file report: its size, the time to write it, and click -> highlight in the page.

    python benchmarks/report_size.py                      # resnet50 and a 12-layer BERT
    python benchmarks/report_size.py --models resnet50 densenet121 bert vit_b_16

For each model (random weights; images 1x3x224x224, BERT-base sizes with 12 layers and 16
token ids, built offline from its config): ``write_report`` of a whole-model dry run
(``prune_model(amount=0.5)``, as ``prune-explorer report`` writes it), its size in bytes and
what it holds (the SVG, the plan table, the engine's coupling data), and the seconds to write
it. With Playwright and Debian's Chromium: the page opened from a ``file://`` URL, then
``performance.now()`` around ``PE.select(layer)`` (plan the strategy's pick, highlight the graph,
fill the table and the charts) for layers spread through the model, after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def build(name: str):
    import torchvision
    if name == "bert":
        from transformers import BertConfig, BertModel
        return BertModel(BertConfig(num_hidden_layers=12)), {
            "input_ids": torch.randint(0, 1000, (1, 16))}
    return getattr(torchvision.models, name)(), torch.randn(1, 3, 224, 224)


def parts(text: str) -> dict[str, int]:
    def span(a: str, b: str) -> int:
        i = text.find(a)
        return text.index(b, i) - i if i >= 0 else 0
    return {"svg": span("<svg", "</svg>"), "plan table": span('<table class="pe-plan">', "</table>"),
            "coupling data": span('id="pe-data">', "</script>"),
            "script": sum(len(m) for m in re.findall(r"<script>(.*?)</script>", text, re.S))}


def clicks(path: pathlib.Path, n: int) -> list[float]:
    from jupyter_harness import browser
    with browser() as b:
        page = b.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(path.resolve().as_uri())
        page.wait_for_function("() => window.PE")
        return page.evaluate("""(n) => {
            const layers = Object.keys(PE.data.layers).filter(
                (k) => typeof PE.data.layers[k].out === 'number');
            const pick = Array.from({length: n}, (_, i) => layers[Math.floor(i * layers.length / n)]);
            PE.select(pick[0]);
            return pick.map((L) => { const t = performance.now(); PE.select(L); return performance.now() - t; });
        }""", n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "bert"])
    ap.add_argument("--clicks", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "out" / "report_bench"))
    args = ap.parse_args()
    import prune_explorer as tp
    from prune_explorer.viz.report import write_report
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        torch.manual_seed(0)
        model, x = build(name)
        model.eval()
        DG = tp.DependencyGraph().build_dependency(model, x, verbose=False)
        report = tp.prune_model(model, x, DG=DG, amount=0.5, dry_run=True)
        t0 = time.perf_counter()
        path = write_report(out / f"{name}.html", DG, report=report)
        seconds = time.perf_counter() - t0
        text = path.read_text(encoding="utf-8")
        row = {"model": name, "bytes": path.stat().st_size, "write_s": round(seconds, 2),
               "nodes": len(DG.graph.nodes),
               "parts_kB": {k: round(v / 1024) for k, v in parts(text).items()}}
        try:
            ms = clicks(path, args.clicks)
            row["click_ms_median"] = round(statistics.median(ms), 1)
            row["click_ms_max"] = round(max(ms), 1)
        except Exception as exc:  # noqa: BLE001 - no browser here: sizes only
            row["click_ms"] = f"not measured ({type(exc).__name__})"
        print(json.dumps(row))


if __name__ == "__main__":
    main()
