"""End to end: JupyterLab (headless, localhost) runs notebooks/explore.ipynb in Debian's
Chromium through Playwright; clicking a layer must highlight exactly the engine's plan, and the
plan table and charts must appear. Saves out/explorer.png."""

from __future__ import annotations

import pathlib
import shutil

import pytest
import torch

import prune_explorer as tp
from prune_explorer.viz.dot import idx_text
from jupyter_harness import require_browser, JupyterLab, browser, pe_classes

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "out"
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"

require_browser("the browser test")
tv = pytest.importorskip("torchvision")


def engine_plan(amount: float):
    """The plan the notebook's explorer must show: same seed, same model, same strategy."""
    torch.manual_seed(0)
    model = tv.models.resnet18().eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 224, 224),
                                               verbose=False)
    return tp.select_channels(dg, "layer1.0.conv1", strategy="l1", amount=amount).plan()


def table_rows(page) -> list[list[str]]:
    """[data-target, cell texts...] per body row of the plan table."""
    return page.evaluate("""() => Array.from(
        document.querySelectorAll('.pe-ui table.pe-plan tbody tr')).map(
        tr => [tr.getAttribute('data-target')].concat(
            Array.from(tr.children).map(td => td.textContent.trim())))""")


def wait_roles(page, expect: dict, timeout: float = 60_000) -> None:
    page.wait_for_function("""(expect) => {
        const got = {};
        for (const g of document.querySelectorAll('g[data-node]'))
            for (const r of ['root', 'out', 'in', 'pass'])
                if (g.classList.contains('pe-' + r)) got[g.getAttribute('data-node')] = r;
        return JSON.stringify(Object.entries(got).sort()) ===
               JSON.stringify(Object.entries(expect).sort()); }""", arg=expect, timeout=timeout)


def test_explore_notebook_click_highlights_the_engine_plan(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / "explore.ipynb")  # never write back to the repo's copy
    OUT.mkdir(exist_ok=True)
    errors: list[str] = []
    with JupyterLab(tmp_path) as lab, browser() as b:
        page = lab.open(b, "explore.ipynb", width=1600, height=1300)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            lab.run_all(page)
            node = page.locator('g[data-node="layer1.0.conv1"]')
            node.wait_for(state="attached", timeout=300_000)
            page.wait_for_timeout(1000)  # let the canvas settle (first layout, fonts)

            # one click previews a plan with the default controls (L1, 30%)
            node.click()
            plan = engine_plan(0.3)
            expect = {k: h["role"] for k, h in plan.highlighted.items()}
            assert expect["layer1.0.conv1"] == "root"
            wait_roles(page, expect)
            assert pe_classes(page) == expect
            # exactly one role class per touched node
            assert page.evaluate("""() => Array.from(document.querySelectorAll('g[data-node]'))
                .every(g => ['pe-root', 'pe-out', 'pe-in', 'pe-pass']
                       .filter(c => g.classList.contains(c)).length <= 1)""")
            page.wait_for_function(
                "(n) => document.querySelectorAll('.pe-ui table.pe-plan tbody tr').length === n",
                arg=len(plan.steps))
            rows = table_rows(page)
            assert [r[0] for r in rows] == [s.target for s in plan.steps]
            assert [int(r[6]) for r in rows] == [len(s.idxs) for s in plan.steps]
            page.wait_for_function(
                "() => document.querySelectorAll('.pe-ui .js-plotly-plot').length >= 2",
                timeout=60_000)

            # set an amount: the slider's keyboard (0.30 -> 0.50, four steps of 0.05)
            handle = page.locator(".pe-amount .noUi-handle")
            handle.focus()
            for _ in range(4):
                handle.press("ArrowRight")
            plan = engine_plan(0.5)
            page.wait_for_function(
                """(n) => { const r = document.querySelector('.pe-ui table.pe-plan tbody tr');
                            return r && r.children[5].textContent.trim() === String(n); }""",
                arg=len(plan.idxs), timeout=60_000)
            wait_roles(page, {k: h["role"] for k, h in plan.highlighted.items()})
            rows = table_rows(page)
            assert len(rows) == len(plan.steps)
            assert rows[0][5].replace(" ", "") == \
                idx_text(plan.steps[0].idxs, 200).replace(" ", "")

            # hover shows the mapped indices and why
            page.locator('g[data-node="layer1.0.conv2"]').hover()
            tip = page.locator(".pe-tip")
            tip.wait_for(state="visible")
            assert "input channels pruned" in tip.inner_text()

            # run.sh's settings: JupyterLab's news / update toast never covers the explorer
            assert page.locator(".Toastify__toast").count() == 0

            page.set_viewport_size({"width": 1600, "height": 2250})
            page.evaluate("document.querySelector('.pe-ui').scrollIntoView()")
            page.locator('g[data-node="layer1.0.bn1"]').hover()
            page.wait_for_timeout(1200)
            page.screenshot(path=str(OUT / "explorer.png"))
        except Exception:
            page.screenshot(path=str(OUT / "explorer_failure.png"))
            print(lab.log())
            raise
    assert not errors, errors
