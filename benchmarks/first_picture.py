"""The explorer's first picture: from a model in hand to its graph drawn (trace + layout +
SVG), the wait before anything can be clicked.

    python benchmarks/first_picture.py [--repeats 3] [--clock wall]

Each run is a fresh interpreter (imports and building the model are done before the clock
starts; everything a first ``Explorer(model, x)`` pays is inside it): ``ex = Explorer(model,
x); ex.base_svg``. Models: torchvision's resnet50 (1x3x224x224) and a 24-layer transformer
(transformers' BertModel with 24 layers, hidden 1024, 16 heads — BERT-large —, random
weights, 128 tokens). Goals (issue 12): resnet50 <= 1 s, the 24-layer transformer <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GOALS = {"resnet50": 1.0, "bert-large (24 layers)": 2.0}


def worker(name: str, clock_name: str) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from prune_explorer import Explorer
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision
        model, x = torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224)
    else:
        import transformers as T
        cfg = T.BertConfig(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                           intermediate_size=4096)
        model = T.BertModel(cfg).eval()
        ids = torch.randint(0, cfg.vocab_size, (1, 128))
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    t0 = clock()
    ex = Explorer(model, x)
    svg = ex.base_svg
    total = clock() - t0
    return {"total": total, "trace": ex.timings["trace"], "layout": ex.timings["first_render"],
            "svg_kb": len(svg) / 1024, "nodes": len(ex.DG.graph.nodes)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        print("@@RESULT " + json.dumps(worker(argv[1], argv[2])), flush=True)
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    # wall: the layout runs Graphviz's dot in a child process, which CPU time would not see
    ap.add_argument("--clock", choices=("cpu", "wall"), default="wall")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE),
                                                    env.get("PYTHONPATH", "")) if p)
    print(f"# the explorer's first picture (trace + layout + SVG), fresh process each, "
          f"median of {args.repeats}, clock={args.clock} (seconds)")
    print(f"{'model':24} {'total':>7} {'trace':>7} {'layout':>7} {'nodes':>6} {'SVG KB':>7}  goal")
    for name, key in (("resnet50", "resnet50"), ("bert-large (24 layers)", "bert24")):
        runs = []
        for _ in range(args.repeats):
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "_worker", key,
                                args.clock], capture_output=True, text=True, env=env,
                               timeout=900)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("@@RESULT ")),
                        None)
            if line is None:
                print(f"{name}: crashed: {(p.stderr or p.stdout).strip()[-300:]}")
                break
            runs.append(json.loads(line[9:]))
        if not runs:
            continue
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        goal = GOALS[name]
        print(f"{name:24} {med['total']:7.2f} {med['trace']:7.2f} {med['layout']:7.2f} "
              f"{med['nodes']:6.0f} {med['svg_kb']:7.0f}  <= {goal:.0f} s: "
              f"{'met' if med['total'] <= goal else 'MISSED'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
