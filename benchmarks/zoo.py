"""Model-zoo pass table: prune_explorer vs Torch-Pruning 1.6.1 at amount 0.5 (L1).

    python benchmarks/zoo.py torchvision                 # every torchvision classifier < 300M
    python benchmarks/zoo.py timm --limit 20 --family vit
    python benchmarks/zoo.py hf [--use-cache]
    python benchmarks/zoo.py torchvision --tools ours --models resnet18,vgg11
    python benchmarks/zoo.py ultralytics|diffusers|smp|tv-tasks   # real-world models, both protocols

Each (model, tool) runs in its own subprocess on a freshly built model, under a timeout, so a
hang or a crash only costs its own row. A model *passes* for a tool when, after pruning half
of every group's channels with L1 importance (the classifier ignored), it still runs on the
example input, keeps its output shape, and lost a real share of its parameters: at least half
of what Torch-Pruning removes from the same model where TP passes, at least 10% elsewhere
(``--min-removed`` overrides both with one fixed fraction).

Protocols (``--protocols``): ``warm`` runs the model once before pruning (the classifier zoos'
default), ``fresh`` prunes it straight after it is built, as users usually do (the reference
output shape then comes from a copy). The real-world zoos run both, for both tools, with the
same ignored layers and the same kept outputs (``fixed_outputs`` for us, ``output_transform``
for Torch-Pruning), and report our share of parameters removed over Torch-Pruning's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

AMOUNT = 0.5
MIN_REMOVED = 0.10


# ----------------------------------------------------------------------------- worker

def _out_tensor(out):
    import torch
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits") and out.logits is not None:
        return out.logits
    if isinstance(out, dict):
        return next(v for v in out.values() if isinstance(v, torch.Tensor))
    if isinstance(out, (tuple, list)):
        return _out_tensor(out[0])
    raise TypeError(f"no tensor in output of type {type(out).__name__}")


def _call(model, x):
    if isinstance(x, dict):
        return model(**x)
    return model(*x) if isinstance(x, tuple) else model(x)


def _prune_ours(model, x, case):
    import inspect
    import prune_explorer as pe
    kw = {}
    if case.keep is not None and "fixed_outputs" in inspect.signature(pe.prune_model).parameters:
        kw["fixed_outputs"] = case.keep  # (an engine from before fixed_outputs keeps all)
    report = pe.prune_model(model, x, amount=AMOUNT, strategy="l1",
                            ignored_layers=case.ignored or None, **kw)
    return {"groups": len(report.groups), "skipped": len(report.skipped),
            "skipped_first": [list(s) for s in report.skipped[:3]],
            "skipped_all": [list(s) for s in report.skipped[:40]]}


def _prune_tp(model, x, case, zoo):
    import torch_pruning as TP
    kw = {}
    if zoo == "hf":
        from zoo_models import hf_num_heads
        kw["num_heads"] = hf_num_heads(model)
        kw["output_transform"] = _out_tensor
    elif case.keep is not None:
        kw["output_transform"] = case.keep
    imp = TP.importance.MagnitudeImportance(p=1)
    pruner = TP.pruner.MetaPruner(model, x, importance=imp, pruning_ratio=AMOUNT,
                                  ignored_layers=list(case.ignored), **kw)
    pruner.step()
    if zoo == "hf":
        from zoo_models import hf_fix_after_tp
        hf_fix_after_tp(model, pruner)
    return {}


def _build(zoo: str, name: str, use_cache: bool):
    from zoo_realworld import ZOOS as REAL, Case
    if zoo in REAL:
        return REAL[zoo][1](name)
    from zoo_models import ZOOS, build_hf
    model, x, classifier = build_hf(name, use_cache=use_cache) if zoo == "hf" else \
        ZOOS[zoo][1](name)
    return Case(model, x, [classifier] if classifier is not None else [],
                signature=lambda out: [list(_out_tensor(out).shape)])


def _signature(case, out):
    if case.signature is not None:
        return json.loads(json.dumps(case.signature(out)))
    from prune_explorer.tracing import iter_tensors
    return [list(t.shape) for t in iter_tensors(out)]


def worker(zoo: str, name: str, tool: str, use_cache: bool, protocol: str = "warm") -> dict:
    import copy
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from zoo_models import GIANT_PARAMS
    res = {"zoo": zoo, "model": name, "tool": tool, "protocol": protocol}
    try:
        case = _build(zoo, name, use_cache)
    except Exception as e:  # noqa: BLE001
        res.update(status="build-error", error=f"{type(e).__name__}: {str(e)[:300]}")
        return res
    model, x = case.model, case.inputs
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    res["params_before"] = count(model)
    if res["params_before"] > GIANT_PARAMS:
        res["status"] = "giant"
        return res
    try:  # the reference shapes; "fresh" takes them from a copy, so the model never ran
        with torch.no_grad():
            ref = _signature(case, _call(model if protocol == "warm" else copy.deepcopy(model),
                                         x))
    except Exception as e:  # noqa: BLE001
        res.update(status="build-error", error=f"forward: {type(e).__name__}: {str(e)[:300]}")
        return res
    res["out_shape"] = ref
    t0 = time.perf_counter()
    try:
        res["info"] = _prune_ours(model, x, case) if tool == "ours" else \
            _prune_tp(model, x, case, zoo)
    except Exception as e:  # noqa: BLE001
        res.update(status="error", time=time.perf_counter() - t0,
                   error=f"{type(e).__name__}: {_short(e)}")
        return res
    res["time"] = time.perf_counter() - t0
    res["params_after"] = count(model)
    try:
        with torch.no_grad():
            raw = _call(model.eval(), x)
            sig = _signature(case, raw)
    except Exception as e:  # noqa: BLE001
        res.update(status="error", error=f"after pruning, forward: {type(e).__name__}: "
                                          f"{_short(e)}")
        return res
    if sig != res["out_shape"]:
        res.update(status="error", error=f"output shapes {str(sig)[:120]} != "
                                         f"{str(res['out_shape'])[:120]}")
        return res
    from prune_explorer.tracing import iter_tensors
    if not all(torch.isfinite(t).all() for t in iter_tensors(raw) if t.is_floating_point()):
        res.update(status="error", error="non-finite output after pruning")
        return res
    res["status"] = "ran"
    return res


def _short(e: BaseException, n: int = 300) -> str:
    s = " ".join(str(e).split())
    return s[:n]


# ----------------------------------------------------------------------------- parent

MEM_LIMIT_GB = float(os.environ.get("ZOO_MEM_GB", "10"))


def _limit_memory():  # runs in the child: a runaway tool fails with MemoryError, not OOM
    import resource
    lim = int(float(os.environ.get("ZOO_MEM_GB", MEM_LIMIT_GB)) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def run_one(zoo, name, tool, timeout, use_cache, protocol="warm") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "_worker", zoo, name, tool, protocol]
    if use_cache:
        cmd.append("--use-cache")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"},
                           preexec_fn=_limit_memory if float(os.environ.get("ZOO_MEM_GB", MEM_LIMIT_GB)) > 0
                           else None)
    except subprocess.TimeoutExpired:
        return {"zoo": zoo, "model": name, "tool": tool, "protocol": protocol,
                "status": "timeout", "time": time.perf_counter() - t0}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT "):])
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    if p.returncode == -9:
        tail = ["killed (SIGKILL: out of memory?)"]
    return {"zoo": zoo, "model": name, "tool": tool, "protocol": protocol, "status": "crash",
            "error": f"exit {p.returncode}: {tail[0][:300]}"}


def removed(r) -> float | None:
    if r.get("params_after") is None or not r.get("params_before"):
        return None
    return 1 - r["params_after"] / r["params_before"]


def verdicts(ours: dict | None, tp: dict | None, min_removed: float | None):
    """(our verdict, TP's verdict), each 'pass' or 'fail (...)' / 'timeout' / 'skip'."""
    def base(r):
        if r is None:
            return None
        s = r["status"]
        if s == "ran":
            return "ran"
        if s == "timeout":
            return "timeout"
        return f"fail ({r.get('error', s)})"

    tp_v = base(tp)
    if tp_v == "ran":
        need = MIN_REMOVED if min_removed is None else min_removed
        tp_v = "pass" if removed(tp) >= need else \
            f"fail (only {100 * removed(tp):.1f}% removed < {100 * need:.0f}%)"
    our_v = base(ours)
    if our_v == "ran":
        if min_removed is not None:
            need = min_removed
        elif tp_v == "pass":
            need = 0.5 * removed(tp)
        else:
            need = MIN_REMOVED
        our_v = "pass" if removed(ours) >= need else \
            f"fail (only {100 * removed(ours):.1f}% removed < {100 * need:.1f}%)"
    return our_v, tp_v


def _fmt_params(n):
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _fmt_after(r):
    if r is None or r.get("params_after") is None:
        return "-"
    return f"{_fmt_params(r['params_after'])} ({r['params_after'] / r['params_before']:.2f})"


def _fmt_time(r):
    if r is None:
        return "-"
    if r["status"] == "timeout":
        return f">{r['time']:.0f}s"
    return f"{r['time']:.1f}s" if r.get("time") is not None else "-"


def table(rows, tools, min_removed, out=sys.stdout):
    head = f"{'model':32} {'params':>9} | {'ours after (ratio)':>19} {'t':>7} | " \
           f"{'TP after (ratio)':>19} {'t':>7} | status ours / TP"
    print(head, file=out)
    print("-" * len(head), file=out)
    n_ours = n_tp = n = 0
    for name, res in rows:
        ours, tp = res.get("ours"), res.get("tp")
        first = ours or tp
        if first and first["status"] in ("giant",):
            print(f"{name:32} {_fmt_params(first.get('params_before')):>9} | skipped: "
                  f"> 300M parameters", file=out)
            continue
        n += 1
        ov, tv = verdicts(ours, tp, min_removed)
        n_ours += ov == "pass"
        n_tp += tv == "pass"
        print(f"{name:32} {_fmt_params(first.get('params_before')):>9} | "
              f"{_fmt_after(ours):>19} {_fmt_time(ours):>7} | "
              f"{_fmt_after(tp):>19} {_fmt_time(tp):>7} | "
              f"ours: {ov or '-'}  TP: {tv or '-'}", file=out)
    parts = []
    if "ours" in tools:
        parts.append(f"prune_explorer {n_ours}/{n}")
    if "tp" in tools:
        parts.append(f"Torch-Pruning {n_tp}/{n}")
    print(f"\nSUMMARY: passes {' vs '.join(parts)} models", file=out)
    return n_ours, n_tp, n


def _cell(r):
    if r is None:
        return "-"
    if r["status"] == "timeout":
        return "timeout"
    if removed(r) is None or r["status"] != "ran":
        return "fail"
    return f"{100 * removed(r):.1f}%"


def table_protocols(rows, tools, protocols, min_removed, out=sys.stdout):
    """Real-world zoos: share of parameters removed per tool and protocol, and ours / TP."""
    cols = [(t, p) for t in tools for p in protocols]
    head = f"{'model':38} {'params':>8} | " + " ".join(
        f"{('ours' if t == 'ours' else 'TP') + ' ' + p:>10}" for t, p in cols) + \
        f" | {'ours/TP':>7} | status"
    print(head, file=out)
    print("-" * len(head), file=out)
    n = 0
    passes = {c: 0 for c in cols}
    ratios = []
    for name, res in rows:
        first = next((r for r in res.values() if r), None)
        if first and first["status"] == "giant":
            print(f"{name:38} {_fmt_params(first.get('params_before')):>8} | skipped: > 300M",
                  file=out)
            continue
        n += 1
        status = []
        for p in protocols:
            ov, tv = verdicts(res.get(f"ours:{p}"), res.get(f"tp:{p}"), min_removed)
            if "ours" in tools:
                passes[("ours", p)] += ov == "pass"
                status.append(f"ours {p}: {ov}")
            if "tp" in tools:
                passes[("tp", p)] += tv == "pass"
                status.append(f"TP {p}: {tv}")
        ratio = "-"
        o, t = res.get(f"ours:{protocols[0]}"), res.get(f"tp:{protocols[0]}")
        if verdicts(o, t, min_removed) == ("pass", "pass"):
            ratios.append((name, removed(o) / removed(t)))
            ratio = f"{ratios[-1][1]:.3f}"
        short = "; ".join(x for x in status if not x.endswith(": pass")) or "all pass"
        print(f"{name:38} {_fmt_params(first.get('params_before')):>8} | " + " ".join(
            f"{_cell(res.get(f'{t}:{p}')):>10}" for t, p in cols) + f" | {ratio:>7} | "
            f"{short[:160]}", file=out)
    print(file=out)
    print("SUMMARY: passes " + ", ".join(
        f"{'prune_explorer' if t == 'ours' else 'Torch-Pruning'} {p} {passes[(t, p)]}/{n}"
        for t, p in cols), file=out)
    if ratios:
        ok = sum(r >= 0.95 for _n, r in ratios)
        worst = min(ratios, key=lambda x: x[1])
        print(f"SUMMARY: where both pass ({protocols[0]}), ours removes >= 95% of what TP "
              f"removes on {ok}/{len(ratios)} models (lowest: {worst[0]} {worst[1]:.3f})",
              file=out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        zoo, name, tool, protocol = argv[1:5]
        res = worker(zoo, name, tool, "--use-cache" in argv, protocol)
        print("@@RESULT " + json.dumps(res), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("zoo", choices=["torchvision", "timm", "hf", "ultralytics", "diffusers",
                                    "smp", "tv-tasks"])
    ap.add_argument("--protocols", help="comma list of: fresh (prune straight after building), "
                                        "warm (after one forward); default: warm for the "
                                        "classifier zoos, fresh,warm for the others")
    ap.add_argument("--tools", default="ours,tp", help="comma list of: ours, tp")
    ap.add_argument("--models", help="comma list of model names (default: the whole zoo)")
    ap.add_argument("--family", help="timm: only families (modules) containing this string")
    ap.add_argument("--limit", type=int, help="only the first N models")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per model per tool")
    ap.add_argument("--tp-timeout", type=float, help="Torch-Pruning's timeout (default: --timeout)")
    ap.add_argument("--use-cache", action="store_true", help="hf: build with use_cache=True")
    ap.add_argument("--min-removed", type=float,
                    help="fixed pass threshold (fraction of params removed) instead of "
                         "'half of TP's reduction, else 10%%'")
    ap.add_argument("--jsonl", help="append raw results to this file")
    ap.add_argument("--table-from", metavar="JSONL",
                    help="print the table from raw results saved with --jsonl (the last "
                         "result of each (model, tool) wins; models in file order) - "
                         "e.g. after re-running some rows")
    ap.add_argument("--mem-gb", type=float, default=MEM_LIMIT_GB,
                    help="address-space cap per worker process (GiB; 0 = none)")
    args = ap.parse_args(argv)
    os.environ["ZOO_MEM_GB"] = str(args.mem_gb)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    real = args.zoo not in ("torchvision", "timm", "hf")
    protocols = (args.protocols or ("fresh,warm" if real else "warm")).split(",")

    def show(rows):
        if real or protocols != ["warm"]:
            table_protocols(rows, tools, protocols, args.min_removed)
        else:
            table([(n, {t: r.get(f"{t}:warm") for t in tools}) for n, r in rows], tools,
                  args.min_removed)

    if args.table_from:
        res: dict[str, dict] = {}
        with open(args.table_from) as f:
            for line in f:
                r = json.loads(line)
                if r.get("zoo") == args.zoo:
                    key = f"{r['tool']}:{r.get('protocol', 'warm')}"
                    res.setdefault(r["model"], {})[key] = r
        show(list(res.items()))
        return 0

    if real:
        from zoo_realworld import ZOOS
    else:
        from zoo_models import ZOOS
    if args.models:
        names = args.models.split(",")
    elif args.zoo == "timm":
        names = ZOOS["timm"][0](args.family)
    else:
        names = ZOOS[args.zoo][0]()
    if args.limit:
        names = names[:args.limit]
    print(f"# zoo={args.zoo} models={len(names)} tools={tools} amount={AMOUNT} strategy=l1 "
          f"timeout={args.timeout:.0f}s mem cap={args.mem_gb:g}GiB use_cache={args.use_cache} "
          f"protocols={protocols}", flush=True)
    rows = []
    t_all = time.perf_counter()
    for name in names:
        res = {}
        for protocol in protocols:
            for tool in tools:
                limit = args.tp_timeout if (tool == "tp" and args.tp_timeout) else args.timeout
                r = run_one(args.zoo, name, tool, limit, args.use_cache, protocol)
                res[f"{tool}:{protocol}"] = r
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
                if r["status"] in ("giant",):
                    break
            if any(r["status"] == "giant" for r in res.values()):
                break
        rows.append((name, res))
        brief = "  ".join(f"{t}={r['status']}"
                          f"{'' if removed(r) is None else f' -{100 * removed(r):.0f}%'}"
                          f" {r.get('time', 0) or 0:.1f}s"
                          f"{' ' + r['error'][:120] if r.get('error') else ''}"
                          for t, r in res.items())
        print(f"[{len(rows)}/{len(names)}] {name}: {brief}", file=sys.stderr, flush=True)
    print(flush=True)
    show(rows)
    print(f"total wall time {time.perf_counter() - t_all:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
