"""Peak memory of a dependency-graph build: prune_explorer vs Torch-Pruning 1.6.1.

    python benchmarks/memory.py [--models resnet50,densenet121,vit_b_16,bert-base]

Each measurement runs in a fresh process, after the model is built and has run one forward
pass (so allocator warm-up and the model's own memory are in the baseline):
- ``rss``: peak resident-set size during the build minus the RSS just before it (psutil,
  sampled every 1 ms by a thread) - tensors included;
- ``py``: tracemalloc peak of Python-level allocations during the build (a separate run:
  tracemalloc slows Python down and does not see torch's tensor allocator).
For reference, ``fwd`` is the same RSS measure for one forward pass with grad.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import build, call, emit, run_worker, threads  # noqa: E402

MODELS = ["resnet50", "densenet121", "vit_b_16", "bert-base"]


class RssPeak:
    def __init__(self, interval=0.001):
        import psutil
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta(self):
        return self.peak - self.base


def worker(name: str, tool: str, mode: str) -> dict:
    threads()
    import gc
    import tracemalloc
    model, x = build(name)
    call(model, x)  # warm-up with grad
    if tool == "ours":
        import prune_explorer as pe
        fn = lambda: pe.DependencyGraph().build_dependency(model, example_inputs=x)  # noqa: E731
    elif tool == "tp":
        import torch_pruning as TP
        fn = lambda: TP.DependencyGraph().build_dependency(  # noqa: E731
            model, example_inputs=x, verbose=False)
    else:
        fn = lambda: call(model, x)  # noqa: E731
    gc.collect()
    if mode == "py":
        tracemalloc.start()
        keep = fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"status": "ok", "peak": peak}
    with RssPeak() as r:
        keep = fn()  # noqa: F841 - the graph is alive at the end, as in real use
    return {"status": "ok", "peak": r.delta}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        emit(worker(*argv[1:4]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args(argv)
    script = os.path.abspath(__file__)
    mb = lambda r: f"{r['peak'] / 2**20:8.1f}" if r.get("status") == "ok" else \
        f"{r.get('status'):>8}"  # noqa: E731
    hdr = (f"{'model':14} {'ours rss':>8} {'TP rss':>8} {'fwd rss':>8} | {'ours py':>8} "
           f"{'TP py':>8} | {'rss o/TP':>8} {'py o/TP':>8}   (MiB)")
    print(hdr)
    print("-" * len(hdr))
    for name in args.models.split(","):
        r = {(tool, mode): run_worker(script, [name, tool, mode], args.timeout)
             for tool, mode in (("ours", "rss"), ("tp", "rss"), ("fwd", "rss"),
                                ("ours", "py"), ("tp", "py"))}

        def ratio(mode):
            a, b = r[("ours", mode)], r[("tp", mode)]
            if a.get("status") == "ok" and b.get("status") == "ok" and b["peak"] > 0:
                return f"{a['peak'] / b['peak']:8.2f}"
            return f"{'-':>8}"
        print(f"{name:14} {mb(r[('ours', 'rss')])} {mb(r[('tp', 'rss')])} "
              f"{mb(r[('fwd', 'rss')])} | {mb(r[('ours', 'py')])} {mb(r[('tp', 'py')])} | "
              f"{ratio('rss')} {ratio('py')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
