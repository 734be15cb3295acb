"""Time from `prune-explorer explore MODEL` to an interactive page, as a user meets it.

    python benchmarks/desktop_start.py [torchvision:resnet18] [--runs 3]

For each run: start the command (`--no-browser`), read the URL it prints, open it in headless
Chromium (Playwright; the browser's own start counts, as a user's does), wait until the graph
is drawn, click a layer and wait until its plan is highlighted. Prints each run and the
medians (seconds since the command started).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_harness import CHROMIUM_ARGS, Served, chromium_path  # noqa: E402

LAYER = {"torchvision:resnet18": "layer1.0.conv1", "torchvision:resnet50": "layer1.0.conv1"}


def one_run(spec: str, layer: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "prune_explorer.cli", "explore", spec, "--no-browser"]
    with Served(cmd, url_pattern=r"(http://127\.0\.0\.1:\d+/\?token=\S+)") as app:
        t = {"url printed": time.perf_counter() - t0}
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(app.url, wait_until="domcontentloaded")
            t["page loaded"] = time.perf_counter() - t0
            node = page.locator(f'g[data-node="{layer}"]').first
            node.wait_for(state="attached", timeout=300_000)
            t["graph drawn"] = time.perf_counter() - t0
            node.click()
            page.locator(f'g[data-node="{layer}"].pe-root').wait_for(state="attached",
                                                                     timeout=120_000)
            t["first plan highlighted"] = time.perf_counter() - t0
            b.close()
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default="torchvision:resnet18")
    ap.add_argument("--layer", help="layer to click (default: layer1.0.conv1 for ResNets)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    layer = args.layer or LAYER.get(args.spec, "layer1.0.conv1")
    runs = []
    for i in range(args.runs):
        t = one_run(args.spec, layer)
        runs.append(t)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), flush=True)
    print(f"median of {len(runs)} ({args.spec}): " + ", ".join(
        f"{k} {statistics.median(r[k] for r in runs):.1f} s" for k in runs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
