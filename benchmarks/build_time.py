"""Dependency-graph build time: prune_explorer vs Torch-Pruning 1.6.1, and both against one
plain forward pass of the same model, under torch.no_grad and with grad.

    python benchmarks/build_time.py [--repeats 5] [--models resnet50,bert-base] [--clock wall]

Medians of ``--repeats`` interleaved runs (ours, TP, forward, forward+grad) after one warm-up
of each, in one process, on ``BENCH_THREADS`` (default 1) threads, with a ``gc.collect()``
before each timed call. Ours is ``build_dependency`` (trace + dim graph), TP's its
``build_dependency``. ``--clock cpu`` (default) times this process's CPU (what the shared
machine's other jobs do not inflate; one thread, so CPU = work); ``--clock wall`` the wall
clock. Goals (issue 12): ours <= TP and ours <= 1.5x one forward (no_grad).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import build, call, threads  # noqa: E402

MODELS = ["resnet50", "densenet121", "densenet201", "mobilenet_v3_large", "convnext_tiny",
          "vit_b_16", "bert-base"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--profile", help="model name: pyinstrument profile of one of our builds")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    threads()
    import prune_explorer as pe
    import torch_pruning as TP

    if args.profile:
        from pyinstrument import Profiler
        model, x = build(args.profile)
        pe.DependencyGraph().build_dependency(model, example_inputs=x)
        prof = Profiler(interval=0.001)
        prof.start()
        pe.DependencyGraph().build_dependency(model, example_inputs=x)
        prof.stop()
        print(prof.output_text(unicode=False, color=False, show_all=False))
        return 0

    def ours(m, x):
        return lambda: pe.DependencyGraph().build_dependency(m, example_inputs=x)

    def theirs(m, x):
        return lambda: TP.DependencyGraph().build_dependency(m, example_inputs=x, verbose=False)

    def fwd(m, x):
        def f():
            with torch.no_grad():
                call(m, x)
        return f

    def fwd_grad(m, x):
        return lambda: call(m, x)

    print(f"# threads={torch.get_num_threads()} repeats={args.repeats} clock={args.clock} "
          f"(median seconds)")
    hdr = (f"{'model':20} {'ours':>8} {'TP':>8} {'fwd':>8} {'fwd+grad':>8} | "
           f"{'ours/TP':>8} {'ours/fwd':>8} {'ours/fwd+g':>10} {'TP/fwd+g':>9}  goals")
    print(hdr)
    print("-" * len(hdr))
    for name in args.models.split(","):
        model, x = build(name)
        fns = {"ours": ours(model, x), "tp": theirs(model, x), "fwd": fwd(model, x),
               "fwdg": fwd_grad(model, x)}
        for f in fns.values():  # warm-up
            f()
        ts = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                gc.collect()  # nobody pays for the garbage cycles of the one timed before
                t0 = clock()
                f()
                ts[k].append(clock() - t0)
        med = {k: statistics.median(v) for k, v in ts.items()}
        goals = ("met" if med["ours"] <= med["tp"] else "MISSED") + "/" + (
            "met" if med["ours"] <= 1.5 * med["fwd"] else "MISSED")
        print(f"{name:20} {med['ours']:8.3f} {med['tp']:8.3f} {med['fwd']:8.3f} "
              f"{med['fwdg']:8.3f} | {med['ours'] / med['tp']:8.2f} "
              f"{med['ours'] / med['fwd']:8.2f} {med['ours'] / med['fwdg']:10.2f} "
              f"{med['tp'] / med['fwdg']:9.2f}  {goals}", flush=True)
        del model, x, fns
    return 0


if __name__ == "__main__":
    sys.exit(main())
