"""End to end: ``prune-explorer explore torchvision:resnet18 --no-browser`` serves the explorer
with Voilà on a free localhost port; in Debian's Chromium (Playwright) a click on a layer must
show exactly the engine's plan (DOM contract), bring it into view, and Commit / Undo must change
and restore the drawn model. Ctrl-C stops the server. Saves out/desktop.png."""

from __future__ import annotations

import pathlib
import re
import socket
import sys

import pytest

from jupyter_harness import require_browser, Served, browser, free_port, in_view, \
    wait_for_plan_dom

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "out"

require_browser("the desktop explorer's browser test", "voila", "explorer")
pytest.importorskip("torchvision")


def engine_plan(layer: str, amount: float = 0.3):
    """The plan the served explorer must show: the same spec built the same way (the CLI's
    build_model), the explorer's default strategy (L1, 30%)."""
    import prune_explorer as tp
    from prune_explorer.cli import build_model
    loaded = build_model("torchvision:resnet18")
    dg = tp.DependencyGraph().build_dependency(loaded.model, loaded.inputs, verbose=False)
    return tp.select_channels(dg, layer, strategy="l1", amount=amount).plan()


def node_label(page, node: str) -> str:
    return page.locator(f'g[data-node="{node}"]').first.text_content()


def test_desktop_explorer_click_commit_undo(tmp_path):
    OUT.mkdir(exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "prune_explorer.cli", "explore", "torchvision:resnet18",
           "--no-browser", "--port", str(port)]
    errors: list[str] = []
    with Served(cmd, url_pattern=r"(http://127\.0\.0\.1:\d+/\?token=\S+)", cwd=tmp_path) as app, \
            browser() as b:
        assert f"127.0.0.1:{port}" in app.url
        page = b.new_page(viewport={"width": 1500, "height": 1100})
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(app.url)
            root = "layer1.0.conv1"
            node = page.locator(f'g[data-node="{root}"]').first
            node.wait_for(state="attached", timeout=240_000)
            page.wait_for_timeout(500)
            assert "64→64" in node_label(page, root)

            node.click()
            plan = engine_plan(root)
            wait_for_plan_dom(page, plan)
            assert all(in_view(page, n) for n in plan.highlighted)  # the plan is brought into view

            # scrolled away, "fit plan" brings it back
            page.locator(".pe-viewport").evaluate("(v) => { v.scrollTop = v.scrollHeight; }")
            assert not in_view(page, root)
            page.locator(".pe-fit-plan").click()
            page.wait_for_function(
                "() => document.querySelector('.pe-viewport').scrollTop < 2000")
            assert in_view(page, root)

            # Commit cuts the channels (the graph is laid out again), Undo restores them
            kept = 64 - len(plan.idxs)
            page.locator(".pe-commit").click()
            page.wait_for_function(
                "([n, t]) => { const g = document.querySelector(`g[data-node='${n}']`);"
                " return g && g.textContent.includes(t); }", arg=[root, f"64→{kept}"],
                timeout=120_000)
            # the history list is its own widget output: it may land a moment later
            page.wait_for_function(
                "() => document.querySelectorAll('.pe-history li').length === 1",
                timeout=30_000)
            page.locator(".pe-undo").click()
            page.wait_for_function(
                "([n, t]) => { const g = document.querySelector(`g[data-node='${n}']`);"
                " return g && g.textContent.includes(t); }", arg=[root, "64→64"],
                timeout=120_000)
            page.screenshot(path=str(OUT / "desktop.png"))
        except Exception:
            page.screenshot(path=str(OUT / "desktop_failure.png"))
            print(app.log())
            raise
        # Ctrl-C stops the server cleanly: exit status 0, the port closed
        # (Voilà gets up to 10 s to shut its kernel down, then it is killed; a loaded CI box
        # needs headroom on top)
        assert app.interrupt(timeout=60) == 0, app.log()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert re.search(r"Ctrl-C stops it", app.log())
    assert not errors, errors


def test_kill_stops_voila_too(tmp_path):
    """``kill`` (SIGTERM) on the CLI stops the Voilà server it started (which runs in a session
    of its own): nothing keeps serving on the port. Before, Voilà outlived the CLI."""
    import signal
    port = free_port()
    cmd = [sys.executable, "-m", "prune_explorer.cli", "explore", "torchvision:resnet18",
           "--no-browser", "--port", str(port)]
    with Served(cmd, url_pattern=r"(http://127\.0\.0\.1:\d+/\?token=\S+)", cwd=tmp_path) as app:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # Voilà answers
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(timeout=60) == 0, app.log()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
