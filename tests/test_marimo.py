"""End to end: ``marimo run notebooks/explore_marimo.py`` (headless, a free localhost port) in
Debian's Chromium through Playwright: the explorer's canvas is an anywidget, so marimo shows it;
a click on a layer must highlight exactly the engine's plan and marimo's reactive cell must show
its table (the DOM contract). Saves out/marimo.png."""

from __future__ import annotations

import pathlib
import sys

import pytest

from jupyter_harness import require_browser, Served, browser, free_port, in_view, \
    wait_for_plan_dom

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "out"
NOTEBOOK = ROOT / "notebooks" / "explore_marimo.py"

require_browser("the marimo browser test", "marimo", "marimo")
tv = pytest.importorskip("torchvision")


def engine_plan(layer: str, amount: float = 0.3):
    """What the notebook's explorer must show: its model (seed 0), L1 at 30%."""
    import torch
    import prune_explorer as tp
    torch.manual_seed(0)
    model = tv.models.resnet18().eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 224, 224),
                                               verbose=False)
    return tp.select_channels(dg, layer, strategy="l1", amount=amount).plan()


def test_marimo_click_highlights_the_engine_plan(tmp_path):
    OUT.mkdir(exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "marimo", "run", str(NOTEBOOK), "--headless", "--host",
           "127.0.0.1", "--port", str(port), "--no-token", "--no-sandbox"]
    errors: list[str] = []
    with Served(cmd, url=f"http://127.0.0.1:{port}/", cwd=tmp_path) as app, browser() as b:
        page = b.new_page(viewport={"width": 1500, "height": 1900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(app.url)
            for root in ("layer1.0.conv1", "layer2.0.conv2"):  # a block, then a residual stage
                node = page.locator(f'g[data-node="{root}"]').first
                node.wait_for(state="attached", timeout=240_000)
                page.wait_for_timeout(300)
                node.click()
                plan = engine_plan(root)
                wait_for_plan_dom(page, plan)
                assert in_view(page, root)
            page.locator(".js-plotly-plot").first.wait_for(state="attached", timeout=60_000)
            page.screenshot(path=str(OUT / "marimo.png"))
        except Exception:
            page.screenshot(path=str(OUT / "marimo_failure.png"))
            print(app.log())
            raise
    assert not errors, errors
