"""Shape-only tracing against real tracing on the whole torchvision zoo: the two graphs must be
identical (nodes with every recorded call and argument, values with their shapes), and the
table says how much the shape-only trace saves.

    python benchmarks/shape_only_zoo.py > benchmarks/results/shape_only_zoo.txt

Every classifier of ``torchvision.models`` (<= 300M parameters), random weights, 1x3x224x224
(299 for inception_v3), eval mode, one thread; times are CPU seconds of one trace each (the
first shape-only trace of a process also checks each shape rule against the real kernel once).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torchvision  # noqa: E402

from common import build, threads  # noqa: E402


def main() -> int:
    import prune_explorer as pe
    from prune_explorer import tracing
    DG = pe.DependencyGraph()  # its registry and its notion of the layers it prunes itself
    opts = dict(is_opaque=DG.registry.is_opaque, is_known=DG.prunes_itself)
    threads()
    same = total = 0
    print(f"{'model':22} {'graphs':>9} {'shape-only':>11} {'real':>7} {'ratio':>6}")
    for name in torchvision.models.list_models(module=torchvision.models):
        model, x = build(name)
        if sum(p.numel() for p in model.parameters()) > 300e6:
            continue
        t0 = time.process_time()
        a = tracing.trace(model, x, shape_only=True, **opts)
        t1 = time.process_time()
        b = tracing.trace(model, x, shape_only=False, **opts)
        t2 = time.process_time()
        ok = (a.nodes == b.nodes and a.values == b.values and a.outputs == b.outputs and
              a.primary_outputs == b.primary_outputs and a.shape_reads == b.shape_reads)
        total += 1
        same += ok
        print(f"{name:22} {'identical' if ok else 'DIFFERENT':>9} {t1 - t0:11.3f} {t2 - t1:7.3f} "
              f"{(t1 - t0) / (t2 - t1):6.2f}", flush=True)
        del model, a, b
    print(f"\n{same} of {total} graphs identical")
    return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
