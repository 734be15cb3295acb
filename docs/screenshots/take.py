"""Screenshots of the desktop explorer (Voilà + headless Chromium) in every state a teacher or
reviewer meets: opened, a layer clicked (graph, panel, table, charts), a node hovered, the
whole-model tab. For resnet18, densenet121, vit_b_16 and a 4-layer Llama (random weights).

    python docs/screenshots/take.py [--only resnet18] [--out docs/screenshots]

Also refreshes docs/explorer.png (resnet18, a layer clicked). Needs voila, playwright and
Debian's Chromium; PNGs are downscaled and palette-reduced to stay small.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_harness import browser  # noqa: E402
from prune_explorer.widget.app import Server  # noqa: E402

TV = """import torch, torchvision
from prune_explorer import Explorer
torch.manual_seed(0)
model = torchvision.models.{name}().eval()
Explorer(model, torch.randn(1, 3, 224, 224), title="{name}")"""

LLAMA = """import torch
from transformers import LlamaConfig, LlamaModel
from prune_explorer import Explorer
torch.manual_seed(0)
config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
model = LlamaModel(config).eval()
Explorer(model, {"input_ids": torch.randint(0, 1000, (1, 16))}, title="llama (4 layers)")"""

# model -> (cell, layer to click, node to hover afterwards)
MODELS = {
    "resnet18": (TV.format(name="resnet18"), "layer2.0.conv2", "layer2.1.conv1"),
    "densenet121": (TV.format(name="densenet121"), "features.denseblock1.denselayer1.conv2",
                    "features.transition1.norm"),
    "vit_b_16": (TV.format(name="vit_b_16"), "encoder.layers.encoder_layer_0.mlp.0",
                 "encoder.layers.encoder_layer_0.mlp.3"),
    "llama4": (LLAMA, "layers.0.self_attn.q_proj", "layers.0.self_attn.o_proj"),
}


def shrink(path: pathlib.Path, width: int = 1100) -> None:
    from PIL import Image
    im = Image.open(path).convert("RGB")
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def take(name: str, out: pathlib.Path) -> list[pathlib.Path]:
    code, layer, hover = MODELS[name]
    shots = []
    with Server(name, code=code) as server, browser() as b:
        server.wait_ready()
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(server.url)
        page.locator("g[data-node]").first.wait_for(state="attached", timeout=300_000)
        page.wait_for_timeout(1500)

        def shot(state: str, full: bool = False) -> None:
            p = out / f"{name}_{state}.png"
            if full:  # Voilà scrolls inside the page: a tall window shows it all
                page.set_viewport_size({"width": 1440, "height": 1900})
                page.wait_for_timeout(800)
            page.screenshot(path=str(p))
            page.set_viewport_size({"width": 1440, "height": 1000})
            shrink(p)
            shots.append(p)

        shot("start")
        page.locator(f'g[data-node="{layer}"]').first.click()
        page.wait_for_selector("table.pe-plan tbody tr", timeout=120_000)
        page.wait_for_function(
            "() => document.querySelectorAll('.pe-ui .js-plotly-plot').length >= 2",
            timeout=120_000)
        page.wait_for_timeout(2500)
        shot("plan", full=True)
        target = page.locator(f'g[data-node="{hover}"]').first
        if target.count() and target.is_visible():
            target.hover()
            page.wait_for_timeout(400)
            shot("hover")
        page.mouse.move(5, 5)
        page.get_by_role("button", name="Whole model").click()
        page.wait_for_selector("svg.pe-heat", timeout=180_000)
        page.wait_for_timeout(3000)
        shot("model", full=True)
    return shots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=list(MODELS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or MODELS:
        t0 = time.perf_counter()
        for p in take(name, out):
            print(f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p} "
                  f"({p.stat().st_size // 1024} KB)")
        if name == "resnet18":
            import shutil
            shutil.copy(out / "resnet18_plan.png", ROOT / "docs" / "explorer.png")
            print("docs/explorer.png")
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
