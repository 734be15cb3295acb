"""CPU latency of pruned models against their MACs reduction.

    python benchmarks/latency.py [--models resnet50,mobilenet_v2,vit_b_16] [--amounts .3,.5,.7]

For each model and amount, a fresh model is pruned with ``prune_model(amount, 'l1')`` (the
classifier ignored) and its batch-1 latency measured with torch.utils.benchmark.Timer
(``blocked_autorange``, median) on ``BENCH_THREADS`` (default 1) threads, next to the
unpruned model's latency measured in the same process. Prints the latency ratio against the
MACs ratio: a ratio near the MACs ratio means the pruned channels turn into real speed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.utils import benchmark  # noqa: E402

from common import build, classifier_of, threads  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "vit_b_16"]


def latency(model, x, min_run_time: float) -> float:
    t = benchmark.Timer(stmt="with torch.no_grad(): model(x)",
                        globals={"model": model, "x": x, "torch": torch},
                        num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--amounts", default="0.3,0.5,0.7")
    ap.add_argument("--min-run-time", type=float, default=2.0)
    args = ap.parse_args(argv)
    threads()
    import prune_explorer as pe
    print(f"# threads={torch.get_num_threads()}, batch 1, median latency (ms)")
    hdr = (f"{'model':14} {'amount':>6} {'params':>7} {'MACs (G)':>9} {'latency':>9} | "
           f"{'params r':>8} {'MACs r':>7} {'lat r':>6} {'lat r/MACs r':>12}")
    print(hdr)
    print("-" * len(hdr))
    for name in args.models.split(","):
        base, x = build(name)
        lat0 = latency(base, x, args.min_run_time)
        macs0 = None
        for amount in [float(a) for a in args.amounts.split(",")]:
            model, x = build(name)
            rep = pe.prune_model(model, x, amount=amount, strategy="l1",
                                 ignored_layers=[classifier_of(model)])
            macs0 = rep.macs_before
            if amount == float(args.amounts.split(",")[0]):
                print(f"{name:14} {0:6.1f} {rep.params_before / 1e6:6.1f}M "
                      f"{rep.macs_before / 1e9:9.2f} {1e3 * lat0:9.2f} | {1:8.2f} {1:7.2f} "
                      f"{1:6.2f} {1:12.2f}")
            lat = latency(model.eval(), x, args.min_run_time)
            lat0b = latency(base, x, args.min_run_time)  # re-measured side by side
            lr = lat / ((lat0 + lat0b) / 2)
            print(f"{name:14} {amount:6.1f} {rep.params_after / 1e6:6.1f}M "
                  f"{rep.macs_after / 1e9:9.2f} {1e3 * lat:9.2f} | {rep.params_ratio:8.2f} "
                  f"{rep.macs_ratio:7.2f} {lr:6.2f} {lr / rep.macs_ratio:12.2f}", flush=True)
            lat0 = lat0b
        del base, macs0
    return 0


if __name__ == "__main__":
    sys.exit(main())
