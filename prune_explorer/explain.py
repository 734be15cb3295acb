"""Why is a layer in a plan? Turn the closure path from the root into words.

Examples: "reads bn1's output through relu → maxpool", "joined to the root's channels by
add at layer1.0.add_", "concatenated at channel offset 64 at cat_2", "flattened at flatten:
channel 3 → features 147–195", "split into 12 × 64 (heads) at attn.view".
"""

from __future__ import annotations

import numpy as np

from .dimgraph import BlockRel, MapRel
from .graph import NODE_OP
from .propagation import Closure

_JOINS = {"add": "added", "add_": "added", "sub": "subtracted", "sub_": "subtracted",
          "mul": "multiplied", "mul_": "multiplied", "div": "divided", "div_": "divided",
          "where": "selected", "maximum": "maxed", "minimum": "minned"}


def explain(cl: Closure, v: int, root: str, own_nodes: set[str]) -> str:
    dg = cl.dg
    graph = dg.graph
    path = cl.path(v)
    if not path:
        return "the root of the plan"
    via: list[str] = []
    notes: list[str] = []
    for prev, ri in path:
        rel = dg.rels[ri]
        node = graph.nodes.get(rel.node)
        if node is None:
            continue
        if rel.node not in own_nodes and rel.node != root and (not via or via[-1] != rel.node):
            if node.kind == NODE_OP or rel.node not in _root_nodes(graph, root):
                via.append(rel.node)
        note = _note(cl, prev, rel, node)
        if note and note not in notes:
            notes.append(note)
    via = [n for n in via if n not in _root_nodes(graph, root)]
    text = f"reads {root}'s channels"
    if via:
        text += " through " + " → ".join(via)
    else:
        text += " directly"
    if notes:
        text += "; " + "; ".join(notes[:3])
    return text


def _root_nodes(graph, root: str) -> set[str]:
    return set(graph.module_nodes.get(root, (root,)))


def _note(cl: Closure, prev: int, rel, node) -> str | None:
    dg = cl.dg
    if isinstance(rel, MapRel):
        why = rel.why
        if why.startswith("concatenated at offset"):
            return f"concatenated at channel offset {why.rsplit(' ', 1)[-1]} at {node.id}"
        if why in ("contracted in a matmul", "query/key dot product"):
            return f"contracted with its partner in {node.id} ({node.type})"
        if why == "grouped-query attention":
            return f"key/value heads shared by query heads at {node.id}"
        if node.type in _JOINS and sum(1 for x in node.inputs
                                       if dg.graph.values[x].kind in ("activation", "input")) > 1:
            return f"{_JOINS[node.type]} to another branch at {node.id}"
        if why == "split" or why == "slice":
            return f"{why} at {node.id}"
        return None
    if isinstance(rel, BlockRel):
        sizes_l = [dg.size[x] for x in rel.left]
        sizes_r = [dg.size[x] for x in rel.right]
        small, big = (rel.left, rel.right) if len(rel.left) <= len(rel.right) else (
            rel.right, rel.left)
        if len(small) == 1 and len(big) > 1:
            factors = " × ".join(str(dg.size[x]) for x in big)
            mask = cl.masks.get(small[0])
            if rel.why.startswith("grouped conv"):
                return f"{node.id} is a grouped conv ({factors}): channels go by group and slot"
            if rel.why.startswith("heads"):
                return f"{node.id} splits its embedding into {factors} (heads × head_dim)"
            if rel.why.startswith("chunk"):
                return f"chunked into {factors} at {node.id}: every piece loses the same slots"
            # a flatten: the small side is the merged one when it is the later tensor
            first = None
            if mask is not None and mask.any():
                first = int(np.argmax(mask))
            bigmask = [cl.masks.get(x) for x in big]
            if prev in big and all(m is None or not m.any() for m in bigmask[1:]):
                inner = int(np.prod([dg.size[x] for x in big[1:]]))
                c = int(np.argmax(cl.masks[big[0]])) if cl.masks.get(big[0]) is not None else 0
                return (f"flattened at {node.id}: channel {c} → features {c * inner}–"
                        f"{(c + 1) * inner - 1}")
            return f"reshaped to {factors} at {node.id}" + (f" (first index {first})"
                                                            if first is not None else "")
        return f"reshaped {sizes_l} → {sizes_r} at {node.id}"
    return None
