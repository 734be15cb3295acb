"""Why is a layer in a plan? Turn the closure path from the root into words.

Examples: "reads conv1's output through relu → maxpool", "its output is added to conv1's
channels at layer1.0.add_", "normalizes conv1's output", "concatenated at channel offset 64
at cat_2", "flattened at flatten: channel 3 → features 147–195", "head_dim slots: ...".
"""

from __future__ import annotations

import numpy as np

from .dimgraph import BlockRel, MapRel
from .graph import ACTIVATION, NODE_OP
from .propagation import Closure

_JOINS = {"add": "added", "add_": "added", "sub": "subtracted", "sub_": "subtracted",
          "mul": "multiplied", "mul_": "multiplied", "div": "divided", "div_": "divided",
          "where": "selected", "maximum": "combined", "minimum": "combined",
          "cat": "concatenated", "stack": "stacked"}
_RESHAPES = ("view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "chunk",
             "split", "unbind", "squeeze", "unsqueeze")
_NORMS = ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm", "PReLU")


def explain(cl: Closure, v: int, root: str, own_nodes: set[str], kind: str = "in",
            node_type: str = "") -> str:
    """One sentence (plus notes) on how the step at vertex ``v`` is coupled to ``root``."""
    dg = cl.dg
    graph = dg.graph
    path = cl.path(v)
    if not path:
        return "the root of the plan"
    roots = set(graph.module_nodes.get(root, (root,)))
    ops: list[str] = []
    notes: list[str] = []
    join = None
    for prev, ri in path:
        rel = dg.rels[ri]
        node = graph.nodes.get(rel.node)
        if node is None:
            continue
        if rel.node not in own_nodes and rel.node not in roots and node.kind == NODE_OP and (
                not ops or ops[-1] != rel.node):
            ops.append(rel.node)
        if join is None and node.type in _JOINS and sum(
                1 for x in node.inputs if graph.values[x].kind == ACTIVATION) > 1 and \
                rel.node not in own_nodes:
            join = node
        note = _note(cl, prev, rel, node)
        if note and note not in notes:
            notes.append(note)
    via = " → ".join(ops[:6]) + (" → …" if len(ops) > 6 else "")
    if kind == "pass":
        text = f"carries {root}'s channels" + (f" after {via}" if via else "")
    elif kind == "in":
        text = f"reads {root}'s output" + (f" through {via}" if via else " directly")
    elif kind == "param":
        where = join.id if join is not None else (ops[-1] if ops else root)
        text = f"a parameter used at {where}, on {root}'s channels"
    elif join is not None and join.type not in ("cat", "stack"):
        text = f"its output is {_JOINS[join.type]} to {root}'s channels at {join.id}"
        if join.type in ("add", "add_"):
            text += " (a residual connection)"
    elif node_type.startswith(_NORMS):
        text = f"normalizes {root}'s channels" + (f" after {via}" if via else "") \
            if not node_type.startswith("PReLU") else f"acts per channel on {root}'s output"
    else:
        text = f"shares {root}'s channels" + (f" through {via}" if via else "")
    notes.sort(key=lambda n: n.startswith("viewed as"))  # the telling notes first
    if notes:
        text += "; " + "; ".join(notes[:3])
    return text


def _note(cl: Closure, prev: int, rel, node) -> str | None:
    dg = cl.dg
    if isinstance(rel, MapRel):
        why = rel.why
        if why.startswith("concatenated at offset"):
            return f"concatenated at channel offset {why.rsplit(' ', 1)[-1]} at {node.id}"
        if why in ("contracted in a matmul", "query/key dot product") and node.kind == NODE_OP:
            return f"paired index by index with its partner in the {node.type} at {node.id}"
        if why in ("batched matmul batch", "attention batch/heads") and node.kind == NODE_OP \
                and dg.head_like()[prev]:
            return f"the same heads as its partner in the {node.type} at {node.id}"
        if why == "grouped-query attention":
            return f"k/v heads shared by several query heads at {node.id}"
        if why == "sized the same by the code":
            return f"{node.id} sizes it from another tensor's width, so they stay equal"
        if why == "chunk":
            return f"chunked at {node.id}: every piece loses the same slots"
        return None
    if isinstance(rel, BlockRel):
        if node.kind == NODE_OP and node.type not in _RESHAPES:
            return None  # reshapes inside a matmul or einsum: an implementation detail
        small, big = (rel.left, rel.right) if len(rel.left) <= len(rel.right) else (
            rel.right, rel.left)
        if len(small) != 1 or len(big) < 2:
            return f"reshaped at {node.id}"
        factors = " × ".join(str(dg.size[x]) for x in big)
        if rel.why.startswith("grouped conv"):
            return f"{node.id} is a grouped conv ({factors}): a group goes whole, a slot in every group"
        if rel.why.startswith("heads"):
            return f"{node.id} splits its embedding into {factors} (heads × head_dim)"
        if rel.why.startswith("group norm"):
            return f"{node.id} normalizes in groups ({factors}): whole groups or the same slot in each"
        if rel.why.startswith("sized by the code"):
            return f"{node.id} sizes its {factors} view from another tensor's width"
        masks = [cl.masks.get(x) for x in big]
        if sum(1 for x in big if not dg.fixed[x]) < 2 and not all(dg.fixed[x] for x in big[1:]):
            return None  # a merge with batch-like dims: nothing to tell
        if prev in big and all(dg.fixed[x] for x in big[1:]) and masks[0] is not None and \
                masks[0].any():
            inner = int(np.prod([dg.size[x] for x in big[1:]]))
            c = int(np.argmax(masks[0]))
            return f"flattened at {node.id}: channel {c} → features {c * inner}–{(c + 1) * inner - 1}"
        heads = dg.head_like()
        live = [x for x in big if not dg.fixed[x]]
        if len(live) == 2 and heads[live[0]] and not heads[live[1]]:
            return (f"split into {dg.size[live[0]]} heads × {dg.size[live[1]]} at {node.id}")
        return f"viewed as {factors} at {node.id}"
    return None
