"""The one-file report in Debian's Chromium, opened from a file:// URL (no server, no kernel):
every plan the page computes — for the strategy's pick of a clicked layer and for typed
channels, under every widening policy — must be the engine's ``DG.get_pruning_plan`` exactly
(steps, roles, indices, counts, why, problems); clicking a residual stage conv (resnet50), a
concat input (densenet121) and an attention projection (a 12-layer BERT) must highlight the
engine's plan and list it in ``table.pe-plan``. Screenshots land in out/report_*.png.

Timings (click -> highlighted, ``performance.now()`` in the page) are printed, not asserted.
"""

from __future__ import annotations

import json
import pathlib
import time
import random

import pytest
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer.errors import PruningError
from prune_explorer.group_data import decode_indices
from prune_explorer.viz.dot import idx_text, parse_indices
from prune_explorer.viz.report import write_report
from jupyter_harness import browser, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

if chromium_path() is None:
    pytest.skip("chromium is not installed (apt-get install chromium); the report's page test "
                "needs Debian's Chromium", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
tv = pytest.importorskip("torchvision")

OUT = pathlib.Path(__file__).resolve().parents[1] / "out"
ROLES = ("root", "out", "in", "pass")


def _bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(num_hidden_layers=12)  # BERT-base sizes, random weights
    return transformers.BertModel(config), {"input_ids": torch.randint(0, 1000, (1, 16))}


class GroupedNet(nn.Module):
    """ResNeXt-style blocks (1x1, grouped 3x3, channel shuffle, 1x1, residual add), then a
    depthwise conv and a classifier: groups, shuffles and a residual stream in one model."""

    def __init__(self, width=32, groups=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Conv2d(width, 2 * width, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=groups),
            nn.BatchNorm2d(2 * width), nn.ReLU()) for _ in range(2))
        self.back = nn.ModuleList(nn.Conv2d(2 * width, width, 1) for _ in range(2))
        self.groups = groups
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        x = self.stem(x)
        for block, back in zip(self.blocks, self.back):
            h = block(x)
            n, c, hh, ww = h.shape
            h = h.view(n, self.groups, c // self.groups, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)
            x = x + back(h)
        return self.fc(self.dw(x).mean((2, 3)))


MODELS = {
    "resnet50": lambda: (tv.models.resnet50(), torch.randn(1, 3, 224, 224)),
    "densenet121": lambda: (tv.models.densenet121(), torch.randn(1, 3, 224, 224)),
    "bert": _bert,
    "vit_b_16": lambda: (tv.models.vit_b_16(), torch.randn(1, 3, 224, 224)),
    "grouped": lambda: (GroupedNet(), torch.randn(1, 3, 32, 32)),
}


@pytest.fixture(scope="module")
def chromium():
    with browser() as b:
        yield b


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """name -> (DG, report path, seconds to write it, bytes), built on first use."""
    made: dict = {}

    def get(name: str):
        if name not in made:
            torch.manual_seed(0)
            model, x = MODELS[name]()
            DG = tp.DependencyGraph().build_dependency(model.eval(), x, verbose=False)
            plan = None
            if name == "resnet50":  # a report made for one plan: the page starts on it
                plan = DG.get_pruning_plan("layer2.0.conv1", "out", [2, 6, 9])
            t0 = time.perf_counter()
            path = write_report(tmp_path_factory.mktemp(name) / "report.html", DG, plan,
                                title=f"{name} audit", amount=0.3)
            made[name] = (DG, path, time.perf_counter() - t0, path.stat().st_size)
            print(f"\n{name}: report.html {path.stat().st_size / 1e6:.2f} MB, written in "
                  f"{made[name][2]:.1f} s")
        return made[name]
    return get


def open_page(chromium, path, width=1500, height=1000):
    page = chromium.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: errors.append("fetched " + r.url)
            if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_function("() => window.PE !== undefined")
    return page, errors


def engine_view(plan) -> dict:
    return {"steps": [[s.target, s.kind, s.role, s.fn, list(s.idxs), s.params, s.macs, s.why]
                      for s in plan.steps],
            "problems": [p.message for p in plan.problems],
            "highlighted": {k: h["role"] for k, h in plan.highlighted.items()},
            "params": plan.params_removed, "macs": plan.macs_removed}


PAGE_VIEW = """(qs) => JSON.stringify(qs.map(([layer, idxs, policy]) => {
    const p = PE.plan(layer, 'out', idxs, policy);
    if (p.error) return {error: p.error};
    const n = (x) => (Number.isNaN(x) ? null : x);
    return {steps: p.steps.map(s => [s.target, s.kind, s.role, s.fn, s.idxs, n(s.params),
                                     n(s.macs), s.why]),
            problems: p.problems,
            highlighted: Object.fromEntries(Object.entries(p.highlighted).map(([k, h]) => [k, h.role])),
            params: n(p.params_removed), macs: n(p.macs_removed)}; }))"""


def queries(DG, data_layers: dict, rng: random.Random, n_layers: int) -> list:
    """The strategy's pick of sampled layers (policy "heads", as the page previews it) and
    random typed channels under each policy."""
    layers = [L for L, e in data_layers.items() if isinstance(e.get("out"), int)]
    out = []
    for L in rng.sample(layers, min(n_layers, len(layers))):
        e, n = data_layers[L], DG.dg.size[data_layers[L]["out"]]
        if not isinstance(e["pick"], str) or e["pick"].startswith("b64:"):
            out.append([L, decode_indices(e["pick"], n), "heads"])
        for policy in rng.sample(("cheapest", "heads", "dims"), 2):
            k = rng.choice([1, 2, 3, max(1, n // 3), n - 1])
            out.append([L, sorted(rng.sample(range(n), min(k, n - 1) or 1)), policy])
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_every_plan_of_the_page_is_the_engines(name, reports, chromium):
    DG, path, _, size = reports(name)
    page, errors = open_page(chromium, path)
    try:
        layers = page.evaluate("() => PE.data.layers")
        qs = queries(DG, layers, random.Random(name), n_layers=10)
        t0 = time.perf_counter()
        got = json.loads(page.evaluate(PAGE_VIEW, qs))  # one string: fast to hand over
        t1 = time.perf_counter()
    finally:
        page.close()
    assert not errors, errors
    widened = 0
    for (layer, idxs, policy), g in zip(qs, got):
        try:
            # the page refuses what changes the model's output, as the explorer does
            plan = DG.get_pruning_plan(layer, "out", idxs, strict=False, policy=policy,
                                       allow_output_change=False)
        except PruningError as exc:
            assert g == {"error": str(exc)}, (layer, idxs, policy)
            continue
        want = engine_view(plan)
        assert g == want, (name, layer, policy, idxs[:12])
        widened += plan._closure.expanded
    print(f"\n{name}: {len(qs)} plans, page {t1 - t0:.1f} s, engine {time.perf_counter() - t1:.1f} s")
    if name in ("bert", "vit_b_16", "grouped"):
        assert widened, "heads and groups must widen some typed channels"
    assert size < 5_000_000


# ---- clicks, typing, what a reviewer sees ---------------------------------------------------
def dom_roles(page) -> dict[str, str]:
    return page.evaluate("() => PE.roles()")


def table_rows(page) -> list[list[str]]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('#pe-table table.pe-plan tbody tr'))
        .map(tr => [tr.getAttribute('data-target')].concat(Array.from(tr.children).map(td => td.textContent.trim())))""")


def check_dom(page, DG, plan) -> None:
    """The DOM contract: exactly the plan's drawn nodes carry one role class each, and the
    table has one row per step with the engine's target, indices and count."""
    drawn = set(page.evaluate("() => Array.from(document.querySelectorAll('g[data-node]'))"
                              ".map(g => g.getAttribute('data-node'))"))
    want = {k: h["role"] for k, h in plan.highlighted.items() if k in drawn}
    assert dom_roles(page) == want
    assert page.evaluate("""() => Array.from(document.querySelectorAll('g[data-node]')).every(
        g => ['pe-root', 'pe-out', 'pe-in', 'pe-pass'].filter(c => g.classList.contains(c)).length <= 1)""")
    rows = table_rows(page)
    assert len(rows) == len(plan.steps)
    assert [r[0] for r in rows] == [s.nodes[0] if s.nodes else s.target for s in plan.steps]
    assert [r[5] for r in rows] == [idx_text(s.idxs, 200) for s in plan.steps]
    assert [int(r[6]) for r in rows] == [len(s.idxs) for s in plan.steps]
    assert [r[9] for r in rows] == [s.why for s in plan.steps]


def click_and_type(chromium, reports, name, node, typed, policy, shot):
    DG, path, _, _ = reports(name)
    page, errors = open_page(chromium, path, 1600, 1100)
    OUT.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(OUT / f"report_{shot}_0.png"))
        layer = page.evaluate("(n) => PE.data.layers[n] ? n : null", node) or node
        page.locator(f'g[data-node="{node}"]').click()
        page.wait_for_function("(n) => PE.state.layer === n && PE.state.plan", arg=layer)
        entry = page.evaluate("(n) => PE.data.layers[n]", layer)
        pick = decode_indices(entry["pick"], DG.dg.size[entry["out"]])
        plan = DG.get_pruning_plan(layer, "out", pick, strict=False, policy="heads",
                                   allow_output_change=False)
        assert plan.steps[0].target == layer and not plan.problems
        check_dom(page, DG, plan)
        click_ms = page.evaluate("() => PE.state.ms")
        page.screenshot(path=str(OUT / f"report_{shot}_1.png"))

        page.fill("#pe-idx", typed)
        page.press("#pe-idx", "Enter")
        page.wait_for_function("(t) => PE.state.typed === t", arg=typed)
        typed_plan = DG.get_pruning_plan(layer, "out", parse_indices(typed), strict=False,
                                         policy=policy, allow_output_change=False)
        check_dom(page, DG, typed_plan)
        msg = page.inner_text("#pe-msg")
        if typed_plan._closure.expanded:
            assert "Widened" in msg
        page.screenshot(path=str(OUT / f"report_{shot}_2.png"))
        times = page.evaluate("""(n) => { const out = [];
            for (let i = 0; i < 5; i++) { const t = performance.now(); PE.select(n); out.push(performance.now() - t); }
            return out; }""", layer)
        print(f"\n{name}: click {node} -> highlighted in {click_ms:.1f} ms; re-select "
              f"{sorted(times)[2]:.1f} ms median; {len(plan.steps)} steps")
    finally:
        page.close()
    assert not errors, errors
    return plan, typed_plan, msg


def test_click_a_residual_stage_conv(reports, chromium):
    plan, typed, _ = click_and_type(chromium, reports, "resnet50", "layer3.1.conv3", "0-3, 17",
                                    "cheapest", "resnet50")
    assert plan.steps[0].role == "root"
    # its channels are the stage's residual stream: every block of layer3 is in the plan
    assert {f"layer3.{i}.conv3" for i in range(6)} <= {s.target for s in plan.steps}
    assert typed.steps[0].idxs == [0, 1, 2, 3, 17]


def test_click_a_concat_input(reports, chromium):
    plan, typed, _ = click_and_type(chromium, reports, "densenet121",
                                    "features.denseblock1.denselayer2.conv2", "1, 30",
                                    "cheapest", "densenet121")
    # its 32 channels are concatenated after 64 + 32 others: later layers lose input
    # columns at that offset
    later = [s for s in typed.steps if s.target == "features.denseblock1.denselayer3.conv1"]
    assert later and later[0].role == "in" and later[0].idxs == [96 + 1, 96 + 30]


def test_click_an_attention_projection(reports, chromium):
    _, typed, msg = click_and_type(chromium, reports, "bert",
                                   "encoder.layer.5.attention.self.value", "3", "cheapest",
                                   "bert")
    # one typed dim widens to the same slot of all 12 heads
    assert typed.steps[0].idxs == [3 + 64 * h for h in range(12)]
    assert "Widened" in msg and "12 × 64" in msg


def test_the_report_plan_comes_back_and_ops_say_why(reports, chromium):
    DG, path, _, _ = reports("resnet50")
    page, errors = open_page(chromium, path)
    try:
        first = dom_roles(page)
        assert first == {k: h["role"] for k, h in DG.get_pruning_plan(
            "layer2.0.conv1", "out", [2, 6, 9]).highlighted.items()}
        page.evaluate("() => PE.select('fc')")  # the classifier: its output is the model's
        assert dom_roles(page) == {}
        assert "model output" in page.inner_text("#pe-msg")
        page.evaluate("() => PE.clickNode('layer1.0.add_')")
        assert "is an op" in page.inner_text("#pe-msg")
        page.click("#pe-back")
        assert dom_roles(page) == first
    finally:
        page.close()
    assert not errors, errors
