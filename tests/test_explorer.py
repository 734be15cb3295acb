"""The Explorer's programmatic twin: what the widget calls, tested without a browser."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer import Explorer

tv = pytest.importorskip("torchvision")
SVG_NS = "{http://www.w3.org/2000/svg}"
ROLE_CLASSES = ("pe-root", "pe-out", "pe-in", "pe-pass")


class GroupedNet(nn.Module):
    """Grouped and depthwise convolutions (channels go by group and slot)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.bn2(self.grouped(x)))
        x = self.pw(self.dw(x))
        return self.fc(x.mean((2, 3)))


MODELS = {
    "resnet18": (lambda: tv.models.resnet18(), (1, 3, 64, 64),
                 ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer3.1.bn2", "fc"]),
    "densenet121": (lambda: tv.models.densenet121(), (1, 3, 32, 32),
                    ["features.conv0", "features.denseblock1.denselayer2.conv1",
                     "features.transition2.conv", "features.denseblock3.denselayer5.norm2"]),
    "mobilenet_v3_small": (lambda: tv.models.mobilenet_v3_small(), (1, 3, 64, 64),
                           ["features.0.0", "features.1.block.0.0", "features.4.block.1.0",
                            "classifier.0"]),
    "vit_b_16": (lambda: tv.models.vit_b_16(image_size=32), (1, 3, 32, 32),
                 ["conv_proj", "encoder.layers.encoder_layer_0.mlp.0",
                  "encoder.layers.encoder_layer_3.self_attention"]),
    "grouped": (lambda: GroupedNet(), (1, 3, 16, 16), ["stem", "grouped", "dw", "pw"]),
}


def make(name):
    build, shape, layers = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    return model, torch.randn(*shape), layers


def plan_nodes(plan) -> set[str]:
    return {n for s in plan.steps for n in s.nodes}


def svg_roles(svg: str) -> dict[str, list[str]]:
    out = {}
    for g in ET.fromstring(svg).iter(SVG_NS + "g"):
        roles = [c for c in (g.get("class") or "").split() if c in ROLE_CLASSES]
        if roles:
            out[g.get("data-node")] = roles
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_highlighted_equals_plan_layers(name):
    model, x, layers = make(name)
    ex = Explorer(model, x, node_budget=10_000)  # everything drawn
    for layer in layers:
        ex.select(layer)
        assert ex.plan is not None, f"{name}:{layer}: {ex.error}"
        hl = ex.highlighted
        assert set(hl) == plan_nodes(ex.plan) == set(ex.plan.highlighted)
        assert {k: v["role"] for k, v in hl.items()} == \
            {k: v["role"] for k, v in ex.plan.highlighted.items()}
        roots = [k for k, v in hl.items() if v["role"] == "root"]
        assert roots and all(ex.DG.graph.nodes[r].module == layer for r in roots)
        # the SVG: every touched node carries exactly its role class, nothing else does
        assert svg_roles(ex.svg) == {k: [f"pe-{v['role']}"] for k, v in hl.items()}
        # indices: the root's are the plan's
        assert hl[roots[0]]["idxs"] == ex.plan.steps[0].idxs
    # typed indices on the last layer
    ex.set_indices("0, 1")
    if ex.plan is not None:
        assert set(ex.highlighted) == plan_nodes(ex.plan)


def test_controls_drive_the_plan():
    model, x, _ = make("resnet18")
    ex = Explorer(model, x)
    ex.select("layer1.0.conv1")  # default: L1, 30%
    sel = tp.select_channels(ex.DG, "layer1.0.conv1", strategy="l1", amount=0.3)
    assert ex.plan.idxs == sel.idxs and len(ex.plan.idxs) == 19
    ex.set_strategy("l1", amount=0.3, round_to=8)
    assert len(ex.plan.idxs) == 16 and (64 - 16) % 8 == 0
    ex.set_indices("2, 6, 9")
    assert ex.plan.idxs == [2, 6, 9] and ex.controls.indices == [2, 6, 9]
    ex.set_indices("0-15")
    assert ex.plan.idxs == list(range(16))
    ex.set_indices([2, 6, 9])
    assert ex.plan.idxs == [2, 6, 9]
    for s in ("random", "l2", "bn_scale", "lamp"):
        ex.set_strategy(s, amount=0.25)
        assert ex.plan is not None and len(ex.plan.idxs) == 16, (s, ex.error)
    ex.set_indices("x-y")
    assert ex.error and ex.plan is not None  # the previous preview stays
    ex.set_indices("64")
    assert ex.plan is None and "64" in ex.error
    # an op has no channels of its own; a new layer forgets typed indices
    with pytest.raises(tp.PruningError):
        ex.select("layer1.0.add_")
    ex.set_indices("1, 2")
    ex.select("layer2.0.conv1")
    assert ex.controls.indices is None and len(ex.plan.idxs) == 32  # lamp 25%, round_to=8
    # the importance chart marks the channels the plan removes
    fig = ex.importance_figure()
    assert sum(c == "#dc2626" for c in fig.data[0].marker.color) == len(ex.plan.idxs)
    assert ex.search("downsample") == ["layer2.0.downsample.0", "layer2.0.downsample.1",
                                       "layer3.0.downsample.0", "layer3.0.downsample.1",
                                       "layer4.0.downsample.0", "layer4.0.downsample.1"]
    assert "BatchNorm2d" in {ex.DG.graph.nodes[n].type for n in ex.search("batchnorm")}
    ex.clear()
    assert ex.plan is None and ex.highlighted == {} and "pe-active" not in ex.svg


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_commit_then_undo_is_bit_identical(name):
    model, x, layers = make(name)
    before = _state(model)
    with torch.no_grad():
        y0 = model(x)
    ex = Explorer(model, x)
    ex.select(layers[1])
    planned = ex.plan.params_removed
    n0 = sum(p.numel() for p in model.parameters())
    svg0 = ex.svg
    ex.commit()
    assert sum(p.numel() for p in model.parameters()) == n0 - planned
    assert len(ex.history) == 1 and ex.plan is None and ex.base_svg != svg0
    with torch.no_grad():
        assert model(x).shape == y0.shape
    ex.undo()
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert after[k].shape == before[k].shape and torch.equal(after[k], before[k]), k
    with torch.no_grad():
        assert torch.equal(model(x), y0)
    assert not ex.history
    with pytest.raises(tp.PruningError):
        ex.undo()
    with pytest.raises(tp.PruningError):
        ex.commit()  # nothing previewed


def test_two_commits_undo_in_order():
    model, x, _ = make("resnet18")
    s0 = _state(model)
    ex = Explorer(model, x)
    ex.select("layer1.0.conv1").set_indices([1, 2, 3])
    ex.commit()
    s1 = _state(model)
    ex.select("conv1").set_strategy("l1", amount=0.25)
    ex.commit()
    assert model.conv1.out_channels == 48
    ex.undo()
    assert all(torch.equal(s1[k], v) for k, v in model.state_dict().items())
    ex.undo()
    assert all(torch.equal(s0[k], v) for k, v in model.state_dict().items())


def test_whole_model_preview_and_commit():
    model, x, _ = make("resnet18")
    ex = Explorer(model, x)
    assert ex.model_controls.ignored_layers == ["fc"]
    n0 = sum(p.numel() for p in model.parameters())
    report = ex.preview_model(amount=0.3, strategy="l1")
    assert ex.mode == "model" and report is not None and report.plan is ex.plan
    assert set(ex.highlighted) == plan_nodes(ex.plan)
    assert "fc" not in {s.target for s in ex.plan.steps if s.kind == "out"}
    assert sum(p.numel() for p in model.parameters()) == n0  # a dry run
    spec = ex.highlight_spec
    assert spec["heat"] and 'class="pe-graph pe-active pe-heat"' in ex.svg
    ex.commit()
    assert sum(p.numel() for p in model.parameters()) == n0 - report.plan.params_removed
    assert ex.history[-1].kind == "model"
    ex.undo()
    assert sum(p.numel() for p in model.parameters()) == n0


def test_export_round_trips(tmp_path):
    model, x, _ = make("resnet18")
    ex = Explorer(model, x)
    ex.select("layer1.0.conv1").set_strategy("l1", amount=0.3, round_to=8)
    previewed = ex.plan
    out = ex.export(tmp_path / "preview")
    data = json.loads(out["plan"].read_text())
    assert data == json.loads(json.dumps(previewed.to_dict()))
    assert [s["target"] for s in data["steps"]] == [s.target for s in previewed.steps]
    assert [s["idxs"] for s in data["steps"]] == [s.idxs for s in previewed.steps]
    ET.fromstring(out["svg"].read_text())
    html = out["report"].read_text()
    assert '<table class="pe-plan">' in html and 'id="pe-data"' in html  # interactive, offline

    ex.commit()
    out = ex.export(tmp_path / "committed")
    assert json.loads(out["plan"].read_text())["steps"] == data["steps"]
    history = json.loads(out["history"].read_text())
    assert len(history) == 1 and history[0]["plan"]["steps"] == data["steps"]
    loaded = torch.load(out["model"], weights_only=False).eval()
    assert loaded.layer1[0].conv1.out_channels == 48
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    if "saved" in out:  # tp.save / tp.load
        again = tp.load(str(out["saved"]), tv.models.resnet18).eval()
        with torch.no_grad():
            assert torch.allclose(again(x), model(x))


def test_sensitivity_on_copies():
    model, x, _ = make("resnet18")
    before = _state(model)
    calls = []

    def evaluate(m):
        calls.append(sum(p.numel() for p in m.parameters()))
        with torch.no_grad():
            return float(m(x).abs().mean())

    ex = Explorer(model, x, evaluate=evaluate)
    ex.select("layer1.0.conv1")
    res = ex.sensitivity(amounts=(0.25, 0.5))
    pts = res["layer1.0.conv1"]
    assert [a for a, _ in pts] == [0.0, 0.25, 0.5]
    assert all(m is not None for _, m in pts)
    assert calls[0] > calls[1] > calls[2]  # each point pruned more, on a copy
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert ex.plan is not None  # the preview is untouched
    fig = ex.figures()["sensitivity"]
    assert len(fig.data) == 1 and list(fig.data[0].x) == [0.0, 0.25, 0.5]
    with pytest.raises(tp.PruningError):
        Explorer(model, x).sensitivity()


def test_view_controls():
    torch.manual_seed(0)
    model = tv.models.resnet50().eval()
    ex = Explorer(model, torch.randn(1, 3, 64, 64), node_budget=60)
    drawn0 = ex.layout.n_elements
    assert drawn0 <= 60
    hidden = next(n for n, k in ex.layout.visible.items() if k != n)
    ex.reveal(hidden)
    assert ex.layout.shown(hidden) and ex.focused == hidden
    ex.collapse("layer1")
    assert ex.layout.visible["layer1.0.conv1"] == "module:layer1"
    ex.expand("layer1")
    assert ex.layout.visible["layer1.0.conv1"] != "module:layer1"
    ex.reset_view()
    assert ex.layout.n_elements == drawn0
    # a plan inside a collapsed module marks the module
    ex.collapse("layer2")
    ex.select("layer2.1.conv1")
    assert ex.highlight_spec["inside"] == {"module:layer2": "root"}


def test_widget_calls_the_twin():
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")
    model, x, _ = make("resnet18")
    ex = Explorer(model, x)
    ui = ex.widget
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    ui.canvas.selected = "layer1.0.conv1"  # what a click in the page does
    assert ex.root == "layer1.0.conv1"
    assert ui.canvas.highlight == ex.highlight_spec and ui.canvas.highlight["nodes"]
    assert ui.table.value.count("<tr class=\"pe-row-") == len(ex.plan.steps)
    ui.amount.value = 0.5
    assert ex.controls.amount == 0.5 and len(ex.plan.idxs) == 32
    ui.indices.value = "2, 6, 9"
    assert ex.plan.idxs == [2, 6, 9]
    ui.commit_btn.click()
    assert len(ex.history) == 1 and ui.canvas.svg == ex.base_svg
    ui.undo_btn.click()
    assert not ex.history
    ui.canvas.selected = "layer1.0.add_"
    assert "op" in ex.error  # shown in the status line, not raised in the browser
    ui.mode.value = "model"
    assert ex.mode == "model" and ex.report is not None


def test_displayed_explorer_shows_the_coupling_before_scoring():
    model, x, _ = make("resnet18")
    ex = Explorer(model, x)
    events = []
    ex.on_change(lambda what: events.append((what, dict(ex.coupling_spec.get("nodes", {})))))
    ex.select("conv1")  # a residual group: scoring is the slow part
    kinds = [w for w, _ in events]
    assert kinds.index("coupling") < kinds.index("plan")
    shown = dict(events[kinds.index("coupling")][1])
    assert shown == {k: h["role"] for k, h in ex.plan.highlighted.items()}
    ex.select("layer1.0.conv1")
    events.clear()
    ex.select("conv1")  # scored already: straight to the plan
    assert [w for w, _ in events] == ["plan"]


class HeadsAttention(nn.Module):
    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, self.heads * self.head_dim))


def test_widening_policy_control():
    """One typed index of a head: the policy decides whether the whole head goes (heads) or
    the same slot in every head (dims); the widget's dropdown drives the same."""
    ex = Explorer(HeadsAttention().eval(), torch.randn(1, 6, 16))
    ex.select("qkv").set_indices([17])  # k, head 0, slot 1

    def qkv_rows():
        return next(s.idxs for s in ex.plan.layer_steps if s.target == "qkv")

    rows = {}
    for policy in ("heads", "dims", "cheapest", None):
        ex.set_policy(policy)
        assert ex.error is None and ex.controls.policy == policy
        rows[policy] = qkv_rows()
    assert rows["heads"] == [0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35]  # head 0 of q, k, v
    assert rows["dims"] == list(range(1, 48, 4))                          # slot 1 of every head
    assert rows[None] == rows["cheapest"]                                 # typed: fewest
    ex.set_policy("sideways")
    assert "unknown policy" in ex.error and ex.controls.policy is None
    ex.set_strategy("l1", amount=0.25)  # a strategy widens to whole heads unless told
    assert len(qkv_rows()) % 12 == 0 and len(qkv_rows()) // 12 >= 1
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")
    ui = ex.widget
    ui.policy.value = "dims"
    assert ex.controls.policy == "dims"
    slots = {r % 4 for r in qkv_rows()}  # the same slots, in each of q, k, v's 4 heads
    assert len(qkv_rows()) == 12 * len(slots)
