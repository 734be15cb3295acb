"""What a plan costs, as data a page can evaluate: the MAC formula of a call, and the
parameters and MACs an opaque layer loses as polynomials in the counts of its dims. Used by
``group_data`` (the one-file report replays plans with them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from .graph import Ref
from .metrics import call_macs

if TYPE_CHECKING:  # pragma: no cover
    from .traced_view import TracedView


def mac_formula(call, graph, value: Callable[[int], int]) -> list:
    """``metrics.fast_macs`` as data: which values' (new) shapes it multiplies (``value``
    interns a value id for the page). Other formulas: their traced value and the values whose
    shapes would change it."""
    p, a = call.packet, call.args

    def ref(x):
        if not isinstance(x, Ref):
            raise TypeError
        return value(x.value)

    try:
        if p in ("convolution", "_convolution"):
            out = next(o for o in call.outputs if o is not None)
            return ["conv", ref(a[0]), ref(a[1]), value(out),
                    int(bool(a[6])) if len(a) > 6 else 0]
        if p in ("mm", "bmm"):
            return [p, ref(a[0]), ref(a[1])]
        if p in ("addmm", "baddbmm"):
            return ["mm" if p == "addmm" else "bmm", ref(a[1]), ref(a[2])]
        if p.startswith("_scaled_dot_product") and len(
                graph.values[a[0].value].shape) == 4:
            return ["sdpa", ref(a[0]), ref(a[1]), ref(a[2])]
    except (TypeError, IndexError, AttributeError, StopIteration):
        pass
    # a formula only torch's flop counter knows: the page has its value while no shape moves
    refs = sorted({x.value for x in call.args if isinstance(x, Ref)} |
                  {o for o in call.outputs if o is not None})
    traced = call_macs(call, {vid: v.shape for vid, v in graph.values.items()})
    return ["?", traced, [value(r) for r in refs]]


def opaque_costs(G: "TracedView", module: str, rng: np.random.Generator) -> dict:
    """Parameters and MACs an opaque layer (``nn.MultiheadAttention``, a registered custom
    layer) loses, as integer polynomials (degree <= 2) in the counts of its dims, fitted on the
    registry's own dry runs with random index sets and kept only if they reproduce every
    sample exactly; else ``None``, and the page says those numbers come from the engine only.
    """
    dg, graph = G.dg, G.graph
    verts = [(vi.name, v) for v, vi in dg.virtuals.items() if vi.module == module]
    names = [n for n, _ in verts]
    sizes = [dg.size[v] for _, v in verts]
    m = G.model.get_submodule(module)
    spec = G.registry.lookup(m)
    nodes = [nid for nid in graph.module_nodes.get(module, ())]
    monos = [()] + [(i,) for i in range(len(names))] + [
        (i, j) for i in range(len(names)) for j in range(i, len(names))]

    def costs(counts):
        sets = {}
        for name, size, c in zip(names, sizes, counts):
            if c:
                sets[name] = sorted(rng.choice(size, int(c), replace=False).tolist())
        row = [spec.prune(m, sets, True)]
        if spec.macs is not None:
            row += [spec.macs(m, graph.nodes[n], graph, {}) - spec.macs(m, graph.nodes[n], graph,
                                                                         sets) for n in nodes]
        return row

    X, Y = [], []
    for k in range(3 * len(monos) + 6):
        counts = [0 if (k + i) % 3 == 0 else int(rng.integers(0, s)) for i, s in
                  enumerate(sizes)]
        try:
            y = costs(counts)
        except Exception:  # noqa: BLE001 - a layer that refuses this count: not a sample
            continue
        X.append([np.prod([counts[i] for i in mono]) if mono else 1 for mono in monos])
        Y.append(y)
    out = {"verts": [v for _, v in verts], "params": None, "macs": None, "nodes": nodes}
    if len(X) < len(monos) + 4:
        return out
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    coef = np.rint(np.linalg.lstsq(X, Y, rcond=None)[0]).astype(np.int64)
    exact = np.all(X.astype(np.int64) @ coef == Y.astype(np.int64), axis=0)
    terms = lambda col: [[list(mono), int(c)] for mono, c in zip(monos, coef[:, col]) if c]
    if exact[0]:
        out["params"] = terms(0)
    if spec.macs is None:
        out["macs"] = False  # the engine counts its MACs from its calls, as for any node
    elif exact[1:].all():
        out["macs"] = [terms(1 + i) for i in range(len(nodes))]
    return out
