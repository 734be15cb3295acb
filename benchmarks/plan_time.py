"""Plan time: one plan on resnet50, and a whole-model prune at amount 0.5.

    python benchmarks/plan_time.py [--models resnet50,densenet201,swin_t,swin_v2_b,maxvit_t]
                                   [--timeout 180] [--skip-whole] [--profile resnet50]

1. One plan on resnet50's conv1 (output channels [2, 6, 9]): ours
   ``DG.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])`` vs Torch-Pruning's
   ``DG.get_pruning_group(model.conv1, TP.prune_conv_out_channels, idxs=[2, 6, 9])`` on graphs
   built beforehand (median of 50, interleaved). Goal: <= 10 ms.
2. Whole model: ``prune_model(amount=0.5, strategy='l1')`` vs TP's MetaPruner set-up + step
   (MagnitudeImportance(p=1)), classifier ignored, each in its own process under a timeout
   (">timeout"). Goal: ours <= half of TP's set-up + step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import build, classifier_of, emit, run_worker, threads  # noqa: E402

MODELS = ["resnet50", "densenet201", "swin_t", "swin_v2_b", "maxvit_t"]


def worker(name: str, tool: str) -> dict:
    threads()
    model, x = build(name)
    clf = classifier_of(model)
    if tool == "ours":
        import prune_explorer as pe
        t0 = time.perf_counter()
        pe.prune_model(model, x, amount=0.5, strategy="l1", ignored_layers=[clf])
        return {"status": "ok", "total": time.perf_counter() - t0}
    import torch_pruning as TP
    t0 = time.perf_counter()
    pruner = TP.pruner.MetaPruner(model, x, importance=TP.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[clf])
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    return {"status": "ok", "setup": t1 - t0, "step": t2 - t1, "total": t2 - t0}


def one_plan(repeats: int = 50):
    threads()
    import prune_explorer as pe
    import torch_pruning as TP
    model, x = build("resnet50")
    t0 = time.perf_counter()
    dg = pe.DependencyGraph().build_dependency(model, example_inputs=x)
    t_ours_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    tdg = TP.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    t_tp_build = time.perf_counter() - t0
    ours = lambda: dg.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])  # noqa: E731
    theirs = lambda: tdg.get_pruning_group(model.conv1, TP.prune_conv_out_channels,  # noqa: E731
                                           idxs=[2, 6, 9])
    ours(), theirs()
    to, tt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        to.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs()
        tt.append(time.perf_counter() - t0)
    mo, mt = statistics.median(to), statistics.median(tt)
    print(f"one plan, resnet50 conv1 out [2,6,9] (median of {repeats}; graphs built in "
          f"{t_ours_build:.2f}s ours / {t_tp_build:.2f}s TP):")
    print(f"  ours {1e3 * mo:8.2f} ms   TP {1e3 * mt:8.2f} ms   ours/TP {mo / mt:6.2f}   "
          f"goal <= 10 ms: {'met' if mo <= 0.010 else 'MISSED'}", flush=True)
    return dg, model


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        emit(worker(argv[1], argv[2]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--profile", help="pyinstrument: 'plan' or a model name for prune_model")
    args = ap.parse_args(argv)

    if args.profile:
        from pyinstrument import Profiler
        threads()
        import prune_explorer as pe
        prof = Profiler(interval=0.0005)
        if args.profile == "plan":
            model, x = build("resnet50")
            dg = pe.DependencyGraph().build_dependency(model, example_inputs=x)
            dg.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])
            prof.start()
            for _ in range(20):
                dg.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])
            prof.stop()
        else:
            model, x = build(args.profile)
            prof.start()
            pe.prune_model(model, x, amount=0.5, strategy="l1",
                           ignored_layers=[classifier_of(model)])
            prof.stop()
        print(prof.output_text(unicode=False, color=False))
        return 0

    one_plan(args.repeats)
    if args.skip_whole:
        return 0
    print(f"\nwhole model, amount 0.5 L1 (seconds; own process each, timeout "
          f"{args.timeout:.0f}s):")
    hdr = (f"{'model':14} {'ours':>9} | {'TP setup':>9} {'TP step':>9} {'TP total':>9} | "
           f"{'ours/TP':>8}  goal ours <= TP/2")
    print(hdr)
    print("-" * len(hdr))
    script = os.path.abspath(__file__)
    for name in args.models.split(","):
        o = run_worker(script, [name, "ours"], args.timeout)
        t = run_worker(script, [name, "tp"], args.timeout)

        def f(r, k):
            if r["status"] == "timeout":
                return ">timeout"
            if r["status"] != "ok":
                return "crash"
            return f"{r[k]:.2f}"
        if o["status"] == "ok" and t["status"] == "ok":
            ratio = f"{o['total'] / t['total']:.2f}"
            goal = "met" if o["total"] <= t["total"] / 2 else "MISSED"
        elif o["status"] == "ok" and t["status"] == "timeout":
            ratio = f"<{o['total'] / args.timeout:.2f}"
            goal = "met" if o["total"] <= args.timeout / 2 else "?"
        else:
            ratio, goal = "-", "-"
        print(f"{name:14} {f(o, 'total'):>9} | {f(t, 'setup'):>9} {f(t, 'step'):>9} "
              f"{f(t, 'total'):>9} | {ratio:>8}  {goal}", flush=True)
        for r, who in ((o, "ours"), (t, "TP")):
            if r["status"] == "crash":
                print(f"    {who} crashed: {r['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
