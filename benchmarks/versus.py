"""This checkout against an earlier revision of itself, side by side in one process.

A speed-up is only worth keeping if it changes nothing a user sees, and on a machine whose
Python speed moves 2x from hour to hour only a ratio taken in one process means anything.
So the earlier revision's ``prune_explorer`` is unpacked under another name (``git archive``;
the package imports itself relatively) and both are run interleaved:

- build: ``DependencyGraph().build_dependency`` (and one plain forward for scale);
- ``prune_model(amount=0.5, "l1", classifier ignored)`` on a fresh model each run;
- sameness: the traced graphs (nodes, calls, values, MACs) and dim graphs (vertices, relations,
  fixed dims) are equal, and ``prune_model`` with l1, l2 and lamp leaves equal state dicts.
  A call's Python-level name is not compared: calls inside torch's own layers no longer
  record one (see ``recorder._FunctionNamer.step_aside``).

    python benchmarks/versus.py --rev 0a3b584 --models mobilenet_v3_large,resnet50
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build, call, classifier_of, threads  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_revision(rev: str):
    """The package as it was at ``rev``, imported as ``pe_rev``."""
    tmp = tempfile.mkdtemp(prefix="pe_rev_")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "prune_explorer"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    shutil.move(os.path.join(tmp, "prune_explorer"), os.path.join(tmp, "pe_rev"))
    sys.path.insert(0, tmp)
    import pe_rev
    return pe_rev


def _calls(graph):
    return repr([(nid, n.kind, n.type, n.scope, n.inputs, n.outputs, n.py_ints,
                  [(c.op, c.args, c.kwargs, c.outputs, c.macs) for c in n.calls])
                 for nid, n in graph.nodes.items()])


def same_graphs(old, new, name: str) -> str:
    model, x = build(name)
    a = old.DependencyGraph().build_dependency(model, x, verbose=False)
    b = new.DependencyGraph().build_dependency(model, x, verbose=False)
    if _calls(a.graph) != _calls(b.graph):
        return "graphs differ"
    if repr(a.graph.values) != repr(b.graph.values) or a.graph.outputs != b.graph.outputs:
        return "values differ"
    da, db = a.dg, b.dg
    if da.size != db.size or da.key != db.key or len(da.rels) != len(db.rels) or \
            not (da.fixed == db.fixed).all() or da.handled != db.handled:
        return "dim graphs differ"
    return "same"


def same_pruning(old, new, name: str) -> str:
    import torch
    for strategy in ("l1", "l2", "lamp"):
        m1, x = build(name)
        m2 = copy.deepcopy(m1)
        old.prune_model(m1, x, amount=0.5, strategy=strategy, ignored_layers=[classifier_of(m1)])
        new.prune_model(m2, x, amount=0.5, strategy=strategy, ignored_layers=[classifier_of(m2)])
        s1, s2 = m1.state_dict(), m2.state_dict()
        if s1.keys() != s2.keys() or any(
                s1[k].shape != s2[k].shape or not torch.equal(s1[k], s2[k]) for k in s1):
            return f"{strategy}: pruned models differ"
    return "same"


def timings(old, new, name: str, repeats: int) -> dict:
    import torch
    model, x = build(name)

    def fwd():
        with torch.no_grad():
            call(model, x)

    def pm(pkg):
        m, xx = build(name)
        gc.collect()
        t0 = time.process_time()
        pkg.prune_model(m, xx, amount=0.5, strategy="l1", ignored_layers=[classifier_of(m)])
        return time.process_time() - t0

    runs = {"build old": lambda: old.DependencyGraph().build_dependency(model, x, verbose=False),
            "build new": lambda: new.DependencyGraph().build_dependency(model, x, verbose=False),
            "forward": fwd}
    ts: dict[str, list[float]] = {k: [] for k in list(runs) + ["prune old", "prune new"]}
    for f in runs.values():
        f()
    pm(old), pm(new)
    for _ in range(repeats):
        for k, f in runs.items():
            gc.collect()
            t0 = time.process_time()
            f()
            ts[k].append(time.process_time() - t0)
        ts["prune old"].append(pm(old))
        ts["prune new"].append(pm(new))
    return {k: sorted(v)[len(v) // 2] for k, v in ts.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", required=True, help="the earlier git revision")
    ap.add_argument("--models", default="mobilenet_v3_large,resnet50")
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    threads()
    import prune_explorer as new
    old = load_revision(args.rev)
    print(f"# this checkout vs {args.rev}: CPU time, median of {args.repeats}, interleaved, "
          f"one process, threads=1 (ms)")
    print(f"{'model':20} {'build old':>9} {'new':>7} {'new/old':>7} {'/fwd':>5} | "
          f"{'prune old':>9} {'new':>7} {'new/old':>7} | graphs, pruned models")
    for name in args.models.split(","):
        t = timings(old, new, name, args.repeats)
        sameness = f"{same_graphs(old, new, name)}, {same_pruning(old, new, name)}"
        print(f"{name:20} {1e3 * t['build old']:9.1f} {1e3 * t['build new']:7.1f} "
              f"{t['build new'] / t['build old']:7.2f} {t['build new'] / t['forward']:5.2f} | "
              f"{1e3 * t['prune old']:9.1f} {1e3 * t['prune new']:7.1f} "
              f"{t['prune new'] / t['prune old']:7.2f} | {sameness}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
