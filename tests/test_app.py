"""The explorer's faces without a browser: the desktop app's notebook, server and command,
the one-line fallback, the canvas binding every front-end shares, the fit-plan boxes, the
panels' and charts' words and numbers."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import socket
import sys

import pytest
import torch
from torch import nn

from prune_explorer import Explorer, cli
from prune_explorer.viz import boxes, charts

pytest.importorskip("anywidget")
tv = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return Explorer(tv.models.resnet18().eval(), torch.randn(1, 3, 64, 64))


# ---- fit-plan boxes ---------------------------------------------------------------------------
SVG = """<svg class="pe-graph" width="100pt" height="80pt" viewBox="0.00 0.00 100.00 80.00">
<g id="graph0" class="graph" transform="scale({s} {s}) rotate(0) translate(4 76)">
<g id="n0" class="node pe-node pe-layer" data-node="a">
<title>a</title>
<path fill="#fff" d="M10,-60C10,-60 30,-60 30,-60 30,-50 10,-50 10,-50"/>
<text x="20" y="-55">a</text>
</g>
<g id="n1" class="node pe-node pe-op" data-node="b&amp;c">
<title>b</title>
<ellipse fill="#fff" cx="20" cy="-20" rx="5" ry="3"/>
</g>
<g id="n2" class="node pe-module" data-module="blk">
<title>blk</title>
<polygon fill="#fff" points="40,-70 60,-70 60,-10 40,-10"/>
</g>
</g></svg>"""


def test_element_boxes_read_graphviz_outlines_in_viewbox_units():
    got = boxes.element_boxes(SVG.format(s=1))
    # path x 10..30, y -60..-50, shifted by translate(4 76); ellipse centre ± radii; polygon
    assert got == {"a": (14, 16, 34, 26), "b&c": (19, 53, 29, 59),
                   "module:blk": (44, 6, 64, 66)}
    half = boxes.element_boxes(SVG.format(s=0.5))  # Graphviz scales when a size is set
    assert half["a"] == (7, 8, 17, 13)


def test_plan_fit_grows_from_the_root_by_distance():
    b = boxes.element_boxes(SVG.format(s=1))
    fit = boxes.plan_fit(b, {"nodes": {"a": "root", "b&c": "out"},
                             "inside": {"module:blk": "in"}})
    # blk's centre (54, 36) is nearer a's (24, 21) than b&c's (24, 56): it comes first, and
    # then b&c lies inside the box already (no new step)
    assert fit == {"key": "a", "root": [14, 16, 34, 26],
                   "steps": [[14, 16, 34, 26], [14, 6, 64, 66]]}
    assert boxes.plan_fit(b, {"nodes": {"zz": "root"}}) is None


def test_explorer_spec_carries_the_fit_of_a_layer_plan_only(r18):
    r18.select("layer1.0.conv1")
    fit = r18.plan_box()
    assert fit["key"] == "layer1.0.conv1" and fit["root"] == list(
        round(v, 1) for v in r18.boxes["layer1.0.conv1"])
    x0, y0, x1, y1 = fit["steps"][-1]
    for node in r18.highlighted:  # the last step holds the whole plan
        bx = r18.boxes[node]
        assert x0 <= bx[0] + 0.1 and y0 <= bx[1] + 0.1 and bx[2] <= x1 + 0.1 and \
            bx[3] <= y1 + 0.1
    r18.preview_model(amount=0.3)
    assert "fit" not in r18.highlight_spec  # whole-model mode: nothing to bring into view
    r18.clear()


# ---- words and numbers ------------------------------------------------------------------------
def test_small_changes_read_as_numbers():
    assert [charts.pct(p) for p in (0, 0.2, 0.04, 0.0004, 12.345)] == \
        ["0%", "0.2%", "0.04%", "<0.001%", "12.3%"]
    assert charts.change_label(100, 70) == "−30.0%"
    assert charts.change_label(36864, 36864 - 108) == "−0.3%"
    assert charts.change_label(0, 0) == ""
    assert charts.use_log([36864, 128]) and not charts.use_log([100, 50])
    assert not charts.use_log([0, 5])
    rows = charts.removed_rows({"params_before": 1000, "params_after": 998,
                                "macs_before": 2000, "macs_after": 1000})
    assert rows == [("MACs", 50.0, "−1K (50.0%)", "MACs: 2K → 1K"),
                    ("params", 0.2, "−2 (0.2%)", "params: 1K → 998")]


def test_importance_axis_shows_the_differences_that_decide():
    lo, hi = charts.importance_range([52.0, 58.0])
    assert (lo, hi) == pytest.approx((51.28, 58.48))  # not 0..58
    assert charts.importance_cut([1.0, 2.0, 3.0], [True, False, False]) == \
        (0.5, "pruned ≤ 1 · 2 ≤ kept")
    assert charts.importance_cut([1.0, 2.0, 3.0], [False, True, False]) is None  # typed
    assert charts.importance_cut([54.4901, 54.4903], [True, False])[1] == \
        "pruned ≤ 54.4901 · 54.4903 ≤ kept"  # as many digits as it takes
    fig = charts.importance_figure([52.0, 58.0, 55.0], [0], "conv", "L1 norm")
    assert fig.layout.yaxis.range[0] > 50 and len(fig.layout.shapes) == 1


def test_plan_charts_label_each_change_and_say_macs(r18):
    r18.select("layer1.0.conv1").set_indices([2, 6, 9])
    fig = r18.figures(("plan",))["plan"]
    after = [d for d in fig.data if d.name == "after" and d.orientation != "h"]
    assert [list(d.text) for d in after] == [["−4.7%"] * 3, ["−4.7%"] * 2]  # 3 of 64
    assert fig.layout.yaxis.type == "log"  # conv 36.9K params beside BatchNorm's 128
    assert fig.layout.yaxis2.type != "log"  # two convs' MACs: linear
    text = json.dumps(fig.to_plotly_json(), ensure_ascii=False)
    assert "FLOPs (MACs)" not in text and "MACs per layer" in text
    assert "FLOPs ≈ 2 × MACs" in text  # in the hover only
    removed = next(d for d in fig.data if d.orientation == "h")
    assert list(removed.text)[1].endswith("(0.03%)")  # 3,462 of 11.7M params
    from prune_explorer.widget import panels
    assert "(0.03%)" in panels.summary_html(r18)
    assert "FLOPs ≈ 2 × MACs" in panels.table_html(r18) and "MACs removed" in \
        panels.table_html(r18)


def test_whole_model_tab_has_whole_model_content(r18):
    from prune_explorer.widget import panels
    r18.preview_model(amount=0.3)
    fig = r18.figures(("detail",))["detail"]
    assert fig.layout.title.text.startswith("Where the model loses most")
    removed = list(fig.data[0].x)
    assert removed == sorted(removed) and removed[-1] > 0  # the biggest loss on top
    assert "groups pruned" in panels.details_html(r18)
    r18.select("layer1.0.conv1")
    assert r18.figures(("detail",))["detail"].layout.title.text.startswith("Why these")
    r18.clear()


# ---- the one-line fallback and the canvas binding ---------------------------------------------
def test_front_ends_without_widgets_get_one_line(r18):
    line = r18.text_line()
    assert "\n" not in line and "cannot show" in line and "prune-explorer explore" in line
    bundle = r18._repr_mimebundle_()
    assert bundle["text/plain"] == line
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_canvas_binding_turns_clicks_into_plans(r18):
    canvas = r18.canvas
    assert canvas is r18.canvas and canvas.svg == r18.base_svg
    canvas.selected = "layer1.0.conv1"  # what a click in the page writes
    assert r18.root == "layer1.0.conv1" and canvas.highlight == r18.highlight_spec
    assert canvas.highlight["fit"]["key"] == "layer1.0.conv1"
    canvas.selected = "layer1.0.add_"  # an op: refused, said, and the click undone
    assert "op" in r18.error and r18.root == "layer1.0.conv1"
    assert canvas.selected == "layer1.0.conv1"
    r18.select("layer2.0.conv1")  # programmatic: the page follows
    assert canvas.selected == "layer2.0.conv1"
    canvas._handle_custom_msg({"event": "collapse", "module": "layer1"}, [])
    assert 'data-module="layer1"' in canvas.svg and not canvas.busy
    assert r18.layout.visible["layer1.0.conv1"] == "module:layer1"
    r18.reset_view()
    r18.clear()
    assert canvas.selected == ""


def test_marimo_shows_the_canvas_and_a_live_plan_pane(r18):
    pytest.importorskip("marimo")
    out = r18._display_()
    mime, html = out._mime_()
    assert mime == "text/html" and html.count("marimo-anywidget") >= 2
    r18.select("layer1.0.conv1")
    assert r18._pane.html.count('<tr class="pe-row-') == len(r18.plan.steps)
    r18.clear()


# ---- the desktop app ----------------------------------------------------------------------------
def test_notebook_builds_the_spec_in_the_kernel(tmp_path, monkeypatch, capsys):
    from prune_explorer.widget import app
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.Conv2d(8, 4, 3))\n")
    nb = app.notebook("net.py:build", "1,3,16,16", seed=3, cwd=tmp_path)
    assert nb["nbformat"] == 4 and len(nb["cells"]) == 1
    src = nb["cells"][0]["source"]
    assert f"{(tmp_path / 'net.py').resolve()}:build" in src  # absolute: the kernel moves
    assert repr(str(tmp_path.resolve())) in src and "seed=3" in src
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the cell moves to cwd (restored after the test)
    exec(compile(src, "cell", "exec"), {})
    out = capsys.readouterr().out.strip()
    assert out == f"<Explorer {(tmp_path / 'net.py').resolve()}:build: 6 nodes, root=None, " \
                  f"0 commits>"  # the factory's model, titled by its spec
    assert pathlib.Path.cwd().resolve() == tmp_path.resolve()
    # a spec that cannot be built: one line on the page, no traceback
    app.show("torchvision:no_such_net")
    out = capsys.readouterr().out.strip()
    assert out.startswith("prune-explorer: error: torchvision has no model 'no_such_net'")
    assert "\n" not in out and "Traceback" not in out


def test_explorer_for_uses_the_clis_model_and_classifier():
    from prune_explorer.widget.app import explorer_for
    ex = explorer_for("torchvision:resnet18", input_shape="1,3,32,32")
    assert ex.title == "torchvision:resnet18" and ex.model_controls.ignored_layers == ["fc"]
    assert tuple(ex.example_inputs.shape) == (1, 3, 32, 32)


def test_page_name_and_command_bind_localhost():
    from prune_explorer.widget import app
    assert app.page_name("torchvision:resnet18") == "prune_explorer resnet18"
    assert app.page_name("models/my net.py:build") == "prune_explorer build"
    cmd = app.voila_command(pathlib.Path("/x/nb.ipynb"), 1234, "tok")
    assert "--Voila.ip=127.0.0.1" in cmd and "--port=1234" in cmd and "--token=tok" in cmd
    assert "--no-browser" in cmd and "--strip_sources=True" in cmd


class FakeServer:
    started: list = []

    def __init__(self, spec, input_shape=None, seed=0, port=0, **kw):
        self.spec, self.port = spec, port or 4321
        self.url = f"http://127.0.0.1:{self.port}/?token=t"
        self.proc = type("P", (), {"poll": staticmethod(lambda: None)})()
        FakeServer.started.append(self)
        self.stopped = False

    def __enter__(self):
        return self

    def wait_ready(self):
        pass

    def log_tail(self, n=1):
        return ""

    def __exit__(self, *exc):
        self.stopped = True


@pytest.fixture
def fake_server(monkeypatch):
    from prune_explorer.widget import app
    FakeServer.started = []
    monkeypatch.setattr(app, "Server", FakeServer)
    monkeypatch.setattr(app, "require_voila", lambda: None)
    opened = []
    monkeypatch.setattr(app, "open_window", lambda url: opened.append(url) or "chromium")
    return opened


def test_explore_prints_the_url_and_stops_on_ctrl_c(fake_server, monkeypatch, capsys):
    def ctrl_c(_s):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.time, "sleep", ctrl_c)
    assert cli.main(["explore", "torchvision:resnet18", "--no-browser", "--port", "4999"]) == 0
    out = capsys.readouterr()
    assert "http://127.0.0.1:4999/?token=t" in out.out and "Ctrl-C stops it" in out.out
    assert fake_server == [] and FakeServer.started[0].stopped  # no window; server stopped
    assert cli.main(["explore", "torchvision:resnet18"]) == 0
    assert fake_server == [FakeServer.started[1].url]  # a window when asked


def test_explore_bad_model_is_one_line(fake_server, capsys):
    assert cli.main(["explore", "torchvision:resnet9000", "--no-browser"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("prune-explorer: error: torchvision has no model 'resnet9000'")
    assert "\n" not in err and FakeServer.started[0].stopped
    assert cli.main(["explore", "torchvision:resnet18", "--input-shape", "1,x"]) == 1
    assert "--input-shape" in capsys.readouterr().err


def test_explore_without_voila_says_how_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "voila" else real(name, *a))
    assert cli.main(["explore", "torchvision:resnet18"]) == 1
    err = capsys.readouterr().err
    assert "needs Voilà" in err and "pip install" in err and err.count("\n") == 1


def test_headless_machine_gets_the_url_not_a_window(monkeypatch):
    from prune_explorer.widget import app
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert app.open_window("http://127.0.0.1:1/") is None


@pytest.mark.skipif(importlib.util.find_spec("voila") is None, reason="voila is not installed")
def test_server_binds_localhost_and_stops_with_its_kernels():
    from prune_explorer.widget.app import Server
    with Server("torchvision:resnet18") as server:
        server.wait_ready(timeout=120)
        assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")
        proc = server.proc
        assert proc.poll() is None
    assert proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_setup_turns_off_jupyterlabs_news_popup():
    """The JupyterLab settings run.sh writes: kernels start without a dialog, and the news /
    update toast (it covers the explorer) never shows (tests/test_browser.py runs JupyterLab
    with exactly these and checks that no toast appears)."""
    from jupyter_harness import run_sh_overrides
    overrides = run_sh_overrides()
    assert overrides["@jupyterlab/apputils-extension:notification"] == \
        {"fetchNews": "false", "checkForUpdates": False}
    assert overrides["@jupyterlab/notebook-extension:tracker"]["autoStartDefaultKernel"]
