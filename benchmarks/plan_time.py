"""Plan time: one plan, whole-model pruning, the cost of the check after exec, and classic
iterative pruning — each side by side with the tool users would compare.

    python benchmarks/plan_time.py [--models resnet50,...] [--repeats 3] [--clock wall]
                                   [--skip-whole] [--skip-loop] [--profile resnet50|plan|loop]

1. One plan on resnet50's conv1 (output channels [2, 6, 9]): ours
   ``DG.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])`` vs Torch-Pruning's
   ``DG.get_pruning_group(model.conv1, TP.prune_conv_out_channels, idxs=[2, 6, 9])`` on graphs
   built beforehand (median of 50, interleaved). Goal: <= 10 ms.
2. Whole model: ``prune_model(amount=0.5, strategy='l1')`` vs Torch-Pruning 1.6.1's
   MetaPruner set-up + step (``MagnitudeImportance(p=1)``, ``pruning_ratio=0.5``), classifier
   ignored, in one process, interleaved, a freshly built model for every run (building it is
   not timed); medians of ``--repeats``. Goal: ours <= 0.5x TP's. Also: the check forward
   exec runs after the surgery (``verify.check_model_runs``), against one plain forward of the
   unpruned model and against the whole ``prune_model``. Goals: <= 1 forward, <= 10%.
3. Classic iterative pruning: the 0.2.x-era script (build the graph, then for each conv of a
   resnet18, five rounds: ``L1Strategy()(conv.weight, amount=0.1)``, ``get_pruning_plan``,
   ``plan.exec()``: 100 plans), run unchanged with ``import prune_explorer as tp`` and with
   Torch-Pruning 0.2.8 (``benchmarks/.classic_tp``, see benchmarks/README.md), each in its own
   process, interleaved; medians of ``--repeats``. Goal: ours <= 2x the classic wheel.

Times are this process's CPU time by default (``--clock cpu``: one thread, so CPU = work, and
the shared machine's other jobs do not inflate it); ``--clock wall`` for the wall clock.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import build, call, classifier_of, emit, threads  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSIC = os.path.join(HERE, ".classic_tp")
MODELS = ["resnet50", "densenet121", "densenet201", "mobilenet_v3_large", "convnext_tiny",
          "vit_b_16"]
CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}


# ---------------------------------------------------------------------------------------------
# 1. one plan
# ---------------------------------------------------------------------------------------------
def one_plan(repeats: int, clock):
    import prune_explorer as pe
    import torch_pruning as TP
    model, x = build("resnet50")
    dg = pe.DependencyGraph().build_dependency(model, example_inputs=x)
    tdg = TP.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    ours = lambda: dg.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])  # noqa: E731
    theirs = lambda: tdg.get_pruning_group(model.conv1, TP.prune_conv_out_channels,  # noqa: E731
                                           idxs=[2, 6, 9])
    ours(), theirs()
    to, tt = [], []
    for _ in range(repeats):
        t0 = clock()
        ours()
        to.append(clock() - t0)
        t0 = clock()
        theirs()
        tt.append(clock() - t0)
    mo, mt = statistics.median(to), statistics.median(tt)
    print(f"one plan, resnet50 conv1 out [2,6,9] (median of {repeats}):")
    print(f"  ours {1e3 * mo:8.2f} ms   TP {1e3 * mt:8.2f} ms   ours/TP {mo / mt:6.2f}   "
          f"goal <= 10 ms: {'met' if mo <= 0.010 else 'MISSED'}", flush=True)


# ---------------------------------------------------------------------------------------------
# 2. whole model, and the check after exec
# ---------------------------------------------------------------------------------------------
def _ours(model, x, clock):
    import prune_explorer as pe
    from prune_explorer import verify
    spent = []
    real = verify.check_model_runs

    def timed(*a, **k):
        t0 = clock()
        try:
            return real(*a, **k)
        finally:
            spent.append(clock() - t0)

    verify.check_model_runs = timed
    try:
        t0 = clock()
        pe.prune_model(model, x, amount=0.5, strategy="l1", ignored_layers=[classifier_of(model)])
        return clock() - t0, sum(spent)
    finally:
        verify.check_model_runs = real


def _theirs(model, x, clock):
    import torch_pruning as TP
    t0 = clock()
    pruner = TP.pruner.MetaPruner(model, x, importance=TP.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[classifier_of(model)])
    t1 = clock()
    pruner.step()
    return clock() - t0, t1 - t0


def _forward(model, x, clock):
    import torch
    with torch.no_grad():
        call(model, x)
        t0 = clock()
        call(model, x)
        return clock() - t0


def whole_model(names, repeats: int, clock):
    print(f"\nwhole model, prune_model(amount=0.5, 'l1') vs MetaPruner set-up + step "
          f"(median of {repeats}, interleaved, one process):")
    hdr = (f"{'model':20} {'ours':>7} {'TP':>7} {'ours/TP':>8} | {'check':>7} {'forward':>8} "
           f"{'check/fwd':>9} {'check/ours':>10} | goals (<=0.5 TP; check <=1 fwd, <=10%)")
    print(hdr)
    print("-" * len(hdr))
    for name in names:
        res = {"ours": [], "check": [], "tp": [], "fwd": []}
        for _ in range(repeats):
            model, x = build(name)
            res["fwd"].append(_forward(model, x, clock))
            gc.collect()
            total, check = _ours(model, x, clock)
            res["ours"].append(total)
            res["check"].append(check)
            del model
            model, x = build(name)
            gc.collect()
            try:
                res["tp"].append(_theirs(model, x, clock)[0])
            except Exception as exc:  # MemoryError, unsupported model
                res["tp"].append(float("nan"))
                print(f"    TP failed on {name}: {type(exc).__name__}: {str(exc)[:120]}")
            del model
        m = {k: statistics.median(v) for k, v in res.items()}
        g1 = "met" if m["ours"] <= 0.5 * m["tp"] else "MISSED"
        g2 = "met" if m["check"] <= m["fwd"] else "MISSED"
        g3 = "met" if m["check"] <= 0.1 * m["ours"] else "MISSED"
        print(f"{name:20} {m['ours']:7.3f} {m['tp']:7.3f} {m['ours'] / m['tp']:8.2f} | "
              f"{m['check']:7.3f} {m['fwd']:8.3f} {m['check'] / m['fwd']:9.2f} "
              f"{m['check'] / m['ours']:10.2f} | {g1}; {g2}, {g3}", flush=True)


# ---------------------------------------------------------------------------------------------
# 3. classic iterative pruning
# ---------------------------------------------------------------------------------------------
def loop_worker(tool: str, clock_name: str) -> dict:
    """The classic script: build, then 5 rounds over resnet18's convs, L1 10% each."""
    clock = CLOCK[clock_name]
    if tool == "classic":
        sys.path.insert(0, CLASSIC)
        import torch_pruning as tp
        fn = tp.prune_conv_out_channel
    else:
        import prune_explorer as tp
        fn = tp.prune_conv
    import torch
    import torchvision
    threads()
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    t0 = clock()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    t1 = clock()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    strategy = tp.strategy.L1Strategy()
    plans = 0
    for _round in range(5):
        for conv in convs:
            idxs = strategy(conv.weight, amount=0.1)
            DG.get_pruning_plan(conv, fn, idxs=idxs).exec()
            plans += 1
    t2 = clock()
    with torch.no_grad():
        shape = tuple(model(x).shape)
    return {"status": "ok", "build": t1 - t0, "loop": t2 - t1, "plans": plans,
            "params": sum(p.numel() for p in model.parameters()), "shape": shape,
            "file": tp.__file__}


def _run(tool: str, clock_name: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(HERE),
                                                    env.get("PYTHONPATH", "")) if p)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "_loop", tool, clock_name],
                       capture_output=True, text=True, env=env, timeout=900)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            import json
            return json.loads(line[9:])
    return {"status": "crash", "error": (p.stderr or p.stdout).strip()[-300:]}


def classic_loop(repeats: int, clock_name: str):
    print(f"\nclassic iterative pruning: resnet18, 100 single-layer plans (5 rounds x 20 convs,"
          f" L1 10%), each tool in its own process, median of {repeats}:")
    if not os.path.isdir(os.path.join(CLASSIC, "torch_pruning")):
        print(f"  (Torch-Pruning 0.2.8 is not installed in {CLASSIC}; see benchmarks/README.md)")
        return
    res = {"ours": [], "classic": []}
    for _ in range(repeats):
        for tool in ("ours", "classic"):
            r = _run(tool, clock_name)
            if r["status"] != "ok":
                print(f"  {tool} crashed: {r['error']}")
                return
            res[tool].append(r)
    same = res["ours"][0]["params"] == res["classic"][0]["params"]
    med = {t: {k: statistics.median(r[k] for r in rs) for k in ("build", "loop")}
           for t, rs in res.items()}
    o, c = med["ours"], med["classic"]
    print(f"  {'':8} {'build':>7} {'loop':>7} {'total':>7}")
    for t in ("ours", "classic"):
        print(f"  {t:8} {med[t]['build']:7.3f} {med[t]['loop']:7.3f} "
              f"{med[t]['build'] + med[t]['loop']:7.3f}")
    ratio = o["loop"] / c["loop"]
    total = (o["build"] + o["loop"]) / (c["build"] + c["loop"])
    print(f"  ours/classic: loop {ratio:.2f}, build + loop {total:.2f}   goal loop <= 2x: "
          f"{'met' if ratio <= 2 else 'MISSED'}   (same parameter count after: {same}; "
          f"ours checks every exec with a forward, the classic wheel does not)", flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_loop":
        emit(loop_worker(argv[1], argv[2]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plan-repeats", type=int, default=50)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument("--profile", help="pyinstrument: 'plan', 'loop', or a model for prune_model")
    ap.add_argument("--parts", help="model: CPU ms per stage of prune_model (5 runs, mean)")
    args = ap.parse_args(argv)
    threads()
    clock = CLOCK[args.clock]
    print(f"# threads=1 clock={args.clock} (seconds unless marked)")
    if args.profile:
        return profile(args.profile)
    if args.parts:
        return parts(args.parts)
    one_plan(args.plan_repeats, clock)
    if not args.skip_whole:
        whole_model(args.models.split(","), args.repeats, clock)
    if not args.skip_loop:
        classic_loop(args.repeats, args.clock)
    return 0


def parts(name: str, runs: int = 5) -> int:
    """Where prune_model's time goes, stage by stage (nested stages are inside their parent)."""
    import collections
    import prune_explorer as pe
    from prune_explorer import dependency, execution, verify, whole_model
    acc: collections.Counter = collections.Counter()

    def wrap(mod, attr, label):
        f = getattr(mod, attr)

        def w(*a, **k):
            t0 = time.process_time()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.process_time() - t0
        setattr(mod, attr, w)

    stages = [
            (dependency.DependencyGraph, "build_dependency", "build_dependency"),
            (dependency, "trace", "  trace"), (dependency, "build_dim_graph", "  dim graph"),
            (whole_model, "find_groups", "find_groups"),
            (whole_model, "unit_importance", "unit_importance (L1 scores)"),
            (whole_model, "_select_all", "selection closure (all groups at once)"),
            (whole_model, "_execute_groups", "execute groups"),
            (whole_model, "_combined_closure", "  combined closure (only after a problem)"),
            (dependency.DependencyGraph, "plan_from_seeds", "  plan (steps, counts, actions)"),
            (execution, "apply_actions", "  surgery (cut tensors)"),
            (verify, "check_model_runs", "  check forward")]
    for mod, attr, label in stages:
        wrap(mod, attr, label)
    for i in range(runs + 1):
        if i == 1:
            acc.clear()
        model, x = build(name)
        t0 = time.process_time()
        pe.prune_model(model, x, amount=0.5, strategy="l1", ignored_layers=[classifier_of(model)])
        acc["TOTAL prune_model"] += time.process_time() - t0
    print(f"prune_model({name}, 0.5, 'l1'): CPU ms per stage, mean of {runs}")
    for label in ["TOTAL prune_model"] + [st[2] for st in stages]:
        print(f"  {label:42} {1e3 * acc[label] / runs:8.1f}")
    return 0


def profile(what: str) -> int:
    from pyinstrument import Profiler
    import prune_explorer as pe
    prof = Profiler(interval=0.0005)
    if what == "plan":
        model, x = build("resnet50")
        dg = pe.DependencyGraph().build_dependency(model, example_inputs=x)
        dg.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])
        prof.start()
        for _ in range(20):
            dg.get_pruning_plan(model.conv1, pe.prune_conv, idxs=[2, 6, 9])
        prof.stop()
    elif what == "loop":
        prof.start()
        loop_worker("ours", "wall")
        prof.stop()
    else:
        model, x = build(what)
        pe.prune_model(model, x, amount=0.5, strategy="l1", ignored_layers=[classifier_of(model)])
        model, x = build(what)
        prof.start()
        pe.prune_model(model, x, amount=0.5, strategy="l1", ignored_layers=[classifier_of(model)])
        prof.stop()
    print(prof.output_text(unicode=False, color=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
