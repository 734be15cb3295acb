"""Model-zoo pass table: prune_explorer vs Torch-Pruning 1.6.1 at amount 0.5 (L1).

    python benchmarks/zoo.py torchvision                 # every torchvision classifier < 300M
    python benchmarks/zoo.py timm --limit 20 --family vit
    python benchmarks/zoo.py hf [--use-cache]
    python benchmarks/zoo.py torchvision --tools ours --models resnet18,vgg11

Each (model, tool) runs in its own subprocess on a freshly built model, under a timeout, so a
hang or a crash only costs its own row. A model *passes* for a tool when, after pruning half
of every group's channels with L1 importance (the classifier ignored), it still runs on the
example input, keeps its output shape, and lost a real share of its parameters: at least half
of what Torch-Pruning removes from the same model where TP passes, at least 10% elsewhere
(``--min-removed`` overrides both with one fixed fraction).
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
    return model(**x) if isinstance(x, dict) else model(x)


def _prune_ours(model, x, classifier):
    import prune_explorer as pe
    report = pe.prune_model(model, x, amount=AMOUNT, strategy="l1",
                            ignored_layers=[classifier] if classifier is not None else None)
    return {"groups": len(report.groups), "skipped": len(report.skipped),
            "skipped_first": [list(s) for s in report.skipped[:3]]}


def _prune_tp(model, x, classifier, zoo):
    import torch_pruning as TP
    kw = {}
    if zoo == "hf":
        from zoo_models import hf_num_heads
        kw["num_heads"] = hf_num_heads(model)
        kw["output_transform"] = _out_tensor
    imp = TP.importance.MagnitudeImportance(p=1)
    pruner = TP.pruner.MetaPruner(model, x, importance=imp, pruning_ratio=AMOUNT,
                                  ignored_layers=[classifier] if classifier is not None else [],
                                  **kw)
    pruner.step()
    if zoo == "hf":
        from zoo_models import hf_fix_after_tp
        hf_fix_after_tp(model, pruner)
    return {}


def worker(zoo: str, name: str, tool: str, use_cache: bool) -> dict:
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from zoo_models import GIANT_PARAMS, ZOOS, build_hf
    res = {"zoo": zoo, "model": name, "tool": tool}
    try:
        if zoo == "hf":
            model, x, classifier = build_hf(name, use_cache=use_cache)
        else:
            model, x, classifier = ZOOS[zoo][1](name)
    except Exception as e:  # noqa: BLE001
        res.update(status="build-error", error=f"{type(e).__name__}: {str(e)[:300]}")
        return res
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    res["params_before"] = count(model)
    if res["params_before"] > GIANT_PARAMS:
        res["status"] = "giant"
        return res
    try:
        with torch.no_grad():
            ref = _out_tensor(_call(model, x))
    except Exception as e:  # noqa: BLE001
        res.update(status="build-error", error=f"forward: {type(e).__name__}: {str(e)[:300]}")
        return res
    res["out_shape"] = list(ref.shape)
    t0 = time.perf_counter()
    try:
        res["info"] = _prune_ours(model, x, classifier) if tool == "ours" else \
            _prune_tp(model, x, classifier, zoo)
    except Exception as e:  # noqa: BLE001
        res.update(status="error", time=time.perf_counter() - t0,
                   error=f"{type(e).__name__}: {_short(e)}")
        return res
    res["time"] = time.perf_counter() - t0
    res["params_after"] = count(model)
    try:
        with torch.no_grad():
            out = _out_tensor(_call(model.eval(), x))
    except Exception as e:  # noqa: BLE001
        res.update(status="error", error=f"after pruning, forward: {type(e).__name__}: "
                                          f"{_short(e)}")
        return res
    if list(out.shape) != res["out_shape"]:
        res.update(status="error", error=f"output shape {list(out.shape)} != {res['out_shape']}")
        return res
    if not torch.isfinite(out).all():
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


def run_one(zoo, name, tool, timeout, use_cache) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "_worker", zoo, name, tool]
    if use_cache:
        cmd.append("--use-cache")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"},
                           preexec_fn=_limit_memory if float(os.environ.get("ZOO_MEM_GB", MEM_LIMIT_GB)) > 0
                           else None)
    except subprocess.TimeoutExpired:
        return {"zoo": zoo, "model": name, "tool": tool, "status": "timeout",
                "time": time.perf_counter() - t0}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT "):])
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    if p.returncode == -9:
        tail = ["killed (SIGKILL: out of memory?)"]
    return {"zoo": zoo, "model": name, "tool": tool, "status": "crash",
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        zoo, name, tool = argv[1:4]
        res = worker(zoo, name, tool, "--use-cache" in argv)
        print("@@RESULT " + json.dumps(res), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("zoo", choices=["torchvision", "timm", "hf"])
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
    if args.table_from:
        res: dict[str, dict] = {}
        with open(args.table_from) as f:
            for line in f:
                r = json.loads(line)
                if r.get("zoo") == args.zoo:
                    res.setdefault(r["model"], {})[r["tool"]] = r
        table(list(res.items()), tools, args.min_removed)
        return 0

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
          f"timeout={args.timeout:.0f}s mem cap={args.mem_gb:g}GiB use_cache={args.use_cache}",
          flush=True)
    rows = []
    t_all = time.perf_counter()
    for name in names:
        res = {}
        for tool in tools:
            limit = args.tp_timeout if (tool == "tp" and args.tp_timeout) else args.timeout
            r = run_one(args.zoo, name, tool, limit, args.use_cache)
            res[tool] = r
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(r) + "\n")
            if r["status"] in ("giant",):
                break
        rows.append((name, res))
        brief = "  ".join(f"{t}={r['status']}"
                          f"{'' if removed(r) is None else f' -{100 * removed(r):.0f}%'}"
                          f" {r.get('time', 0) or 0:.1f}s"
                          f"{' ' + r['error'][:120] if r.get('error') else ''}"
                          for t, r in res.items())
        print(f"[{len(rows)}/{len(names)}] {name}: {brief}", file=sys.stderr, flush=True)
    print(flush=True)
    table(rows, tools, args.min_removed)
    print(f"total wall time {time.perf_counter() - t_all:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
