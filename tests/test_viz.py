"""Render tests: the traced graph as DOT/SVG (valid, complete, labelled, restylable), large
models collapsed under the node budget and laid out fast, charts and the HTML report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer.viz.dot import (DEFAULT_BUDGET, GraphView, ViewState, heat_color,
                                    highlight_svg, idx_text, parse_indices, shape_text)

tv = pytest.importorskip("torchvision")
SVG_NS = "{http://www.w3.org/2000/svg}"
ROLE_CLASSES = ("pe-root", "pe-out", "pe-in", "pe-pass")


def build(model, x):
    model.eval()
    return tp.DependencyGraph().build_dependency(model, x, verbose=False)


def groups_by(svg: str, attr: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get(attr): g for g in root.iter(SVG_NS + "g") if g.get(attr) is not None}


def role_classes(g: ET.Element) -> list[str]:
    return [c for c in (g.get("class") or "").split() if c in ROLE_CLASSES]


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    m = tv.models.resnet18()
    return build(m, torch.randn(1, 3, 224, 224))


class Transformer24(nn.Module):
    """A 24-layer transformer encoder (small width, so it traces quickly)."""

    def __init__(self, layers=24, d=64, heads=4, vocab=100):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=128, batch_first=True,
                                           dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)))


# ---- helpers --------------------------------------------------------------------------------
def test_parse_and_format_indices():
    assert parse_indices("2, 6, 9") == [2, 6, 9]
    assert parse_indices("0-3, 7 9-10") == [0, 1, 2, 3, 7, 9, 10]
    assert parse_indices([9, 2, 2]) == [2, 9]
    with pytest.raises(ValueError):
        parse_indices("3-1")
    with pytest.raises(ValueError):
        parse_indices("a, 2")
    assert idx_text([0, 1, 2, 3, 7, 9, 10]) == "0-3, 7, 9-10"
    assert "in all" in idx_text(range(0, 2000, 2), limit=40)
    assert shape_text((1, 64, 56, 56), 1) == "64×56×56"
    assert shape_text((4, 64), 1) == "4×64"
    assert heat_color(0) != heat_color(1)


# ---- SVG ------------------------------------------------------------------------------------
def test_svg_is_valid_and_every_node_is_drawn(r18):
    view = GraphView(r18.graph, r18.model)
    layout = view.layout(ViewState())
    nodes = groups_by(layout.svg, "data-node")
    for nid, n in r18.graph.nodes.items():
        assert nid in nodes, f"{nid} ({n.kind}) has no <g data-node>"
        assert "node" in nodes[nid].get("class").split()
    # nothing drawn that is not a graph node (resnet18 has no bare parameters)
    assert set(nodes) == set(r18.graph.nodes)
    # a layer node shows its name, type, channels in->out and params
    texts = " ".join(t.text or "" for t in nodes["layer1.0.conv1"].iter(SVG_NS + "text"))
    assert "conv1" in texts and "Conv2d" in texts and "64→64" in texts and "params" in texts
    # modules are clusters
    clusters = groups_by(layout.svg, "data-module")
    assert {"layer1", "layer1.0", "layer2.0.downsample"} <= set(clusters)


def test_edge_labels_carry_shapes(r18):
    layout = GraphView(r18.graph, r18.model).layout(ViewState())
    root = ET.fromstring(layout.svg)
    labels = [t.text for g in root.iter(SVG_NS + "g") if "edge" in (g.get("class") or "")
              for t in g.iter(SVG_NS + "text")]
    assert labels and all(re.fullmatch(r"\d+(×\d+)*", s) for s in labels)
    assert {"64×56×56", "3×224×224", "512"} <= set(labels)
    edges = [g for g in root.iter(SVG_NS + "g") if "pe-edge" in (g.get("class") or "")]
    assert all(g.get("data-src") and g.get("data-dst") for g in edges)


def test_highlight_is_classes_only(r18):
    view = GraphView(r18.graph, r18.model)
    layout = view.layout()
    plan = r18.get_pruning_plan("layer1.0.conv1", "out", [2, 6, 9])
    spec = view.highlight_spec(layout, plan.highlighted)
    svg = highlight_svg(layout.svg, spec)
    # same drawing: only class/data attributes differ
    strip = lambda s: re.sub(r' (class|data-idxs|data-why)="[^"]*"', "", s)  # noqa: E731
    assert strip(svg) == strip(layout.svg)
    nodes = groups_by(svg, "data-node")
    marked = {k: role_classes(g) for k, g in nodes.items() if role_classes(g)}
    assert marked == {k: [f"pe-{h['role']}"] for k, h in plan.highlighted.items()}
    assert 'class="pe-graph pe-active"' in svg
    assert highlight_svg(layout.svg, view.highlight_spec(layout, None)) == layout.svg


def test_hidden_nodes_mark_their_container(r18):
    view = GraphView(r18.graph, r18.model)
    layout = view.layout(ViewState(collapsed={"layer1.0"}))
    assert "module:layer1.0" in groups_by(layout.svg, "data-module") or \
        any(g.get("data-module") == "layer1.0" and "pe-module" in g.get("class")
            for g in ET.fromstring(layout.svg).iter(SVG_NS + "g"))
    plan = r18.get_pruning_plan("conv1", "out", [1, 2])
    svg = highlight_svg(layout.svg, view.highlight_spec(layout, plan.highlighted))
    box = [g for g in ET.fromstring(svg).iter(SVG_NS + "g")
           if g.get("data-module") == "layer1.0" and "pe-module" in g.get("class")][0]
    assert "pe-inside" in box.get("class") and box.get("data-inside") in ("out", "in", "pass")
    assert not role_classes(box)


def test_folds_and_expand(r18):
    torch.manual_seed(0)
    dg = build(tv.models.resnet50(), torch.randn(1, 3, 64, 64))
    view = GraphView(dg.graph, dg.model)
    assert "layer3.2" in view.folds and view.folds["layer3.2"] == [f"layer3.{i}"
                                                                   for i in range(2, 6)]
    state = ViewState(folded={"layer3.2"})
    layout = view.layout(state)
    fold = groups_by(layout.svg, "data-fold")["layer3.2"]
    text = " ".join(t.text or "" for t in fold.iter(SVG_NS + "text"))
    assert "Bottleneck ×4" in text
    assert "layer3.3.conv1" not in groups_by(layout.svg, "data-node")
    opened = view.expand(state, "fold:layer3.2", budget=1000)
    assert not opened.folded and view.count(opened) > view.count(state)
    revealed = view.reveal(ViewState(collapsed={"layer3"}, folded={"layer3.2"}),
                           "layer3.4.conv2")
    assert view.visible_map(revealed)["layer3.4.conv2"] == "layer3.4.conv2"


LARGE = [
    ("resnet152", lambda: tv.models.resnet152(), lambda: torch.randn(1, 3, 64, 64)),
    ("densenet201", lambda: tv.models.densenet201(), lambda: torch.randn(1, 3, 32, 32)),
    ("vit_b_16", lambda: tv.models.vit_b_16(image_size=32), lambda: torch.randn(1, 3, 32, 32)),
    ("transformer24", lambda: Transformer24(), lambda: torch.randint(0, 100, (1, 8))),
]


@pytest.mark.parametrize("name,make,inputs", LARGE, ids=[x[0] for x in LARGE])
def test_large_models_collapse_and_render_fast(name, make, inputs):
    torch.manual_seed(0)
    dg = build(make(), inputs())
    t0 = time.perf_counter()
    view = GraphView(dg.graph, dg.model)
    state = view.default_state(DEFAULT_BUDGET)
    layout = view.layout(state)
    seconds = time.perf_counter() - t0
    assert layout.n_elements <= DEFAULT_BUDGET
    assert seconds < 3.0, f"{name}: first render took {seconds:.2f}s"
    root = ET.fromstring(layout.svg)  # valid
    drawn = {g.get("data-node") for g in root.iter(SVG_NS + "g") if g.get("data-node")}
    # every node is drawn or hidden inside a drawn module/fold
    hidden_in = {g.get("data-module") or g.get("data-fold") for g in root.iter(SVG_NS + "g")
                 if "pe-module" in (g.get("class") or "") or "pe-fold" in (g.get("class") or "")}
    for nid, key in layout.visible.items():
        if key == nid:
            assert nid in drawn
        else:
            assert key.split(":", 1)[1] in hidden_in
    if len(dg.graph.nodes) > DEFAULT_BUDGET:
        assert state.folded or state.collapsed


def test_core_imports_without_optional_packages(tmp_path):
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('graphviz', 'plotly', 'ipywidgets', 'anywidget'):
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import torch
        import prune_explorer as tp
        from prune_explorer import Explorer
        from prune_explorer.viz import dot, report, charts
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
        ex = Explorer(m, torch.randn(1, 3, 16, 16))
        ex.select('0')
        assert ex.plan is not None and '<svg' in ex.svg
        print('ok')
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok" in out.stdout


# ---- charts and report ------------------------------------------------------------------------
def test_charts_are_deterministic(r18):
    from prune_explorer.viz import charts
    plan = r18.get_pruning_plan("layer1.0.conv1", "out", [2, 6, 9])
    rows = charts.layer_rows(r18, plan)
    assert [r.layer for r in rows] == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"]
    conv = rows[0]
    assert conv.params_before == 64 * 64 * 9 and conv.params_after == 61 * 64 * 9
    assert sum(r.params_before - r.params_after for r in rows) == plan.params_removed
    assert sum(r.macs_before - r.macs_after for r in rows) == plan.macs_removed
    a = charts.params_figure(rows).to_json()
    b = charts.params_figure(charts.layer_rows(r18, plan)).to_json()
    assert a == b
    t = charts.totals(r18, plan)
    assert t["params_before"] - t["params_after"] == plan.params_removed
    fig = charts.importance_figure([0.3, 0.1, 0.2], [1], "x", "l1")
    assert list(fig.data[0].marker.color) == [charts.PRUNED, charts.KEPT, charts.KEPT]


def test_write_report_standalone(r18, tmp_path):
    from prune_explorer.viz.report import write_report
    plan = r18.get_pruning_plan("layer1.0.conv1", "out", [2, 6, 9])
    path = write_report(tmp_path / "r.html", r18, plan, title="audit")
    text = path.read_text()
    assert path.name == "r.html" and "<title>audit</title>" in text
    assert not re.search(r"<script[^>]*\ssrc=", text)  # everything inline: opens offline
    assert "<link" not in text and not re.search(r'(src|href)\s*=\s*["\']https?:', text)
    assert "Plotly" not in text  # no 4.8 MB of plotly.js: the page draws its own bars
    data = json.loads(re.search(r'<script type="application/json" id="pe-data">(.*?)</script>',
                                text, re.S).group(1))
    assert data["format"] == "prune_explorer.group_data/1"
    assert data["page"]["initial"] == {"root": "layer1.0.conv1", "side": "out", "idxs": [2, 6, 9]}
    body = text[text.index('<table class="pe-plan">'):]
    tbody = body[body.index("<tbody>"):body.index("</tbody>")]
    assert tbody.count("<tr") == len(plan.steps)
    svg = text[text.index("<svg"):text.index("</svg>") + 6]
    marked = {k: role_classes(g) for k, g in groups_by(svg, "data-node").items()
              if role_classes(g)}
    assert marked == {k: [f"pe-{h['role']}"] for k, h in plan.highlighted.items()}


def test_write_report_whole_model(r18, tmp_path):
    from prune_explorer.viz.report import heat_fractions, write_report
    report = tp.prune_model(r18.model, r18.example_inputs, amount=0.3,
                            ignored_layers=[r18.model.fc], DG=r18, dry_run=True)
    heat = heat_fractions(r18, report.plan)
    assert 0.2 < heat["layer1.0.bn1"] < 0.4  # BN loses its channels' share
    assert heat["layer1.0.conv1"] > heat["layer1.0.bn1"]  # a conv loses both sides
    path = write_report(tmp_path / "m.html", r18, report=report)
    text = path.read_text()
    assert "pe-hot" in text and "Whole-model pruning" in text
    tbody = text[text.index("<tbody>"):text.index("</tbody>")]
    assert tbody.count("<tr") == len(report.plan.steps)
    json.dumps(report.to_dict())


def test_standalone_svg_carries_its_highlight_styles():
    import xml.etree.ElementTree as ET
    import torchvision
    from prune_explorer import Explorer
    from prune_explorer.viz import standalone_svg
    ex = Explorer(torchvision.models.resnet18().eval(), torch.randn(1, 3, 32, 32))
    ex.select("layer1.0.conv1")
    ex.set_indices([2, 6, 9])
    svg = standalone_svg(ex.svg)
    root = ET.fromstring(svg)
    style = [el for el in root.iter() if el.tag.endswith("style")]
    assert style and ".pe-root" in style[0].text and ".pe-out" in style[0].text
    assert 'class="' in svg and "pe-root" in svg
