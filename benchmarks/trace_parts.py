"""Where a trace's time goes: one forward under each layer of the tracing machinery, added
one at a time, as a fraction of a plain forward (no grad), interleaved in one process.

    python benchmarks/trace_parts.py [--models mobilenet_v3_large,resnet50] [--repeats 9]

Rows: the plain forward; heavy ops as placeholders under a bare dispatch mode (what any
shape-only trace pays); + our module hooks; + the function mode that names calls; + our
per-op recording (= the forward inside ``trace``); the whole ``trace`` (adds its set-up:
kept state, recorder tables, graph assembly); the whole ``build_dependency`` (adds the dim
graph). Wall clock (``time.perf_counter``), median, ``BENCH_THREADS`` threads (default 1).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from common import build, threads

import prune_explorer as pe
from prune_explorer import recorder, shape_only, tracing
from prune_explorer.module_walk import named_modules


class _Placeholders(TorchDispatchMode):
    """Heavy ops give placeholders (the shape-only rules), nothing is recorded."""

    def __init__(self):
        super().__init__()
        self.run = shape_only.Run()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.run.call(func, args, kwargs)


def stages(model, x):
    DG = pe.DependencyGraph().build_dependency(model, x)
    modules = named_modules(model)

    def forward(hooks: bool, namer: bool, record: bool):
        def run():
            rec = recorder._Recorder(model, DG.registry.is_opaque, modules, True,
                                     DG.prunes_itself)
            handles = []
            if hooks:
                handles = [nn.modules.module.register_module_forward_pre_hook(rec.pre_hook),
                           nn.modules.module.register_module_forward_hook(
                               rec.post_hook, with_kwargs=True)]
            try:
                with torch.no_grad():
                    if namer:
                        rec.namer = recorder._FunctionNamer(rec)
                        rec.namer.__enter__()
                    mode = recorder._DispatchRecorder(rec) if record else _Placeholders()
                    try:
                        with mode:
                            model(x)
                    finally:
                        if namer:
                            rec.namer.step_back()
                            rec.namer.__exit__(None, None, None)
            finally:
                for h in handles:
                    h.remove()
        return run

    def plain():
        with torch.no_grad():
            model(x)

    return {
        "forward (no grad)": plain,
        "placeholders, bare mode": forward(False, False, False),
        "+ module hooks": forward(True, False, False),
        "+ function namer": forward(True, True, False),
        "+ per-op recording": forward(True, True, True),
        "trace (+ set-up, graph)": lambda: tracing.trace(model, x, DG.registry.is_opaque,
                                                         is_known=DG.prunes_itself),
        "build (+ dim graph)": lambda: pe.DependencyGraph().build_dependency(model, x),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v3_large,resnet50")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    threads()
    print(f"# threads={torch.get_num_threads()} repeats={args.repeats} clock=wall (median ms)")
    for name in args.models.split(","):
        model, x = build(name)
        fns = stages(model, x)
        for f in fns.values():  # warm up: each shape-only rule is checked once
            f()
        times = {k: [] for k in fns}
        gc.collect()
        was = gc.isenabled()
        gc.disable()
        try:
            for _ in range(args.repeats):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
        finally:
            if was:
                gc.enable()
        base = statistics.median(times["forward (no grad)"])
        print(f"\n{name}")
        for k, v in times.items():
            m = statistics.median(v)
            print(f"  {k:26} {m * 1e3:8.1f} ms  {m / base:5.2f}x forward")


if __name__ == "__main__":
    main()
