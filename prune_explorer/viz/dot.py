"""The traced graph as DOT, laid out by Graphviz's ``dot`` into an SVG the explorer restyles.

    view = GraphView(DG)                      # structure: module tree, repeated blocks, labels
    layout = view.layout(view.default_state(budget=150))
    layout.svg                                # decorated SVG, no highlight yet
    spec = view.highlight_spec(layout, plan.highlighted)
    highlight_svg(layout.svg, spec)           # the same SVG with pe-root/pe-out/pe-in/pe-pass

Layout once, highlight many times: a plan only changes classes on elements already drawn.

DOM contract of the SVG
-----------------------
- every drawn graph node is ``<g class="node pe-node pe-<kind>" data-node="<node id>">``
  (``kind``: layer, op, io, param; a bare ``nn.Parameter`` read by an op is drawn as a small
  node named after the parameter, as plan steps name it);
- a collapsed module is ``<g class="node pe-module" data-module="<path>">``; a fold of
  repeated blocks is ``<g class="node pe-fold" data-fold="<first>" data-modules="a,b,...">``;
- a module cluster is ``<g class="cluster pe-cluster" data-module="<path>">``;
- an edge is ``<g class="edge pe-edge" data-src=... data-dst=...>`` labelled with the tensor's
  shape (batch dimension dropped: ``64×56×56``);
- with a plan highlighted every touched node gets exactly one of ``pe-root``, ``pe-out``,
  ``pe-in``, ``pe-pass``; a collapsed module or fold that hides touched nodes gets
  ``pe-inside`` and ``data-inside="<strongest role>"``; edges between touched nodes get
  ``pe-flow``; the ``<svg>`` gets ``pe-active``.
"""

from __future__ import annotations

import html
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..graph import ACTIVATION, INPUT, NODE_INPUT, NODE_LAYER, NODE_OUTPUT, PARAM, Graph

ROLES = ("root", "out", "in", "pass")
_ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
DEFAULT_BUDGET = 150

FONT = "Helvetica"
_TYPE_COLORS = (  # type family -> colour of the type line
    (("Conv", "conv"), "#1d4ed8"),
    (("Norm", "norm"), "#15803d"),
    (("Linear", "linear", "matmul", "bmm", "addmm"), "#6d28d9"),
    (("Attention", "attention"), "#be185d"),
    (("Embedding",), "#c2410c"),
)


# ---- small formatting helpers -----------------------------------------------------------------
def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            v = n / div
            text = f"{v:.3g}" if v < 100 else f"{v:.0f}"
            return f"{text}{suffix}{unit}"
    return f"{int(n)}{unit}"


def idx_text(idxs: Iterable[int], limit: int = 160) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> '0-3, 7, 9-10' (shortened past ``limit`` characters)."""
    idxs = sorted(int(i) for i in idxs)
    parts: list[str] = []
    i = 0
    while i < len(idxs):
        j = i
        while j + 1 < len(idxs) and idxs[j + 1] == idxs[j] + 1:
            j += 1
        parts.append(str(idxs[i]) if i == j else f"{idxs[i]}-{idxs[j]}")
        i = j + 1
    text = ", ".join(parts)
    if len(text) > limit:
        cut = text[:limit].rsplit(",", 1)[0]
        text = f"{cut}, … ({len(idxs)} in all)"
    return text


def parse_indices(text: str | Iterable[int]) -> list[int]:
    """'2, 6, 9' or '0-15, 20' (or a list) -> sorted unique ints. Raises ValueError."""
    if not isinstance(text, str):
        return sorted({int(i) for i in text})
    out: set[int] = set()
    for part in re.split(r"[,\s;]+", text.strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*(?:-|–|\.\.|:)\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"range {part!r} goes backwards")
            out.update(range(a, b + 1))
        elif re.fullmatch(r"\d+", part):
            out.add(int(part))
        else:
            raise ValueError(f"cannot read {part!r} as an index or a range like 0-15")
    return sorted(out)


def shape_text(shape: tuple, batch: int | None) -> str:
    dims = list(shape)
    if len(dims) >= 2 and batch is not None and dims[0] == batch:
        dims = dims[1:]
    return "×".join(str(d) for d in dims) if dims else "scalar"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _type_color(t: str) -> str:
    for keys, color in _TYPE_COLORS:
        if any(k in t for k in keys):
            return color
    return "#475569"


def _channels(m) -> tuple[int, int] | None:
    for a, b in (("in_channels", "out_channels"), ("in_features", "out_features"),
                 ("num_embeddings", "embedding_dim")):
        if isinstance(getattr(m, a, None), int) and isinstance(getattr(m, b, None), int):
            return getattr(m, a), getattr(m, b)
    for a in ("num_features", "num_channels", "embed_dim", "num_parameters"):
        n = getattr(m, a, None)
        if isinstance(n, int):
            return n, n
    ns = getattr(m, "normalized_shape", None)
    if isinstance(ns, tuple) and ns:
        return ns[-1], ns[-1]
    w = getattr(m, "weight", None)
    shape = getattr(w, "shape", None)
    if shape is not None and len(shape) >= 2:
        return int(shape[1]), int(shape[0])
    if shape is not None and len(shape) == 1:
        return int(shape[0]), int(shape[0])
    return None


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _ancestors(path: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b', 'a.b.c'];  '' -> []."""
    if not path:
        return []
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


# ---- view state and layout --------------------------------------------------------------------
@dataclass
class ViewState:
    """What is drawn: modules collapsed to one node, and folded runs of repeated blocks (each
    named by its first folded module)."""

    collapsed: set[str] = field(default_factory=set)
    folded: set[str] = field(default_factory=set)

    def copy(self) -> "ViewState":
        return ViewState(set(self.collapsed), set(self.folded))


@dataclass
class Layout:
    svg: str  # decorated SVG, no highlight
    dot: str
    state: ViewState
    visible: dict[str, str]  # graph node id / bare parameter -> key of the element drawing it
    elements: dict[str, dict]  # element key -> {"kind", "title", "lines", ...} (tooltips)
    edges: dict[str, tuple[str, str]]  # edge id -> (src key, dst key)
    seconds: float = 0.0  # building DOT + dot + decorating

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    def shown(self, node: str) -> bool:
        """True when the node is drawn as itself (not hidden in a collapsed module or fold)."""
        return self.visible.get(node) == node


class GraphView:
    """The module tree, repeated blocks and labels of a traced model, ready to lay out."""

    def __init__(self, graph: Graph, model=None, macs: dict[str, int] | None = None):
        self.graph = graph
        self.model = model
        self._modules = dict(model.named_modules()) if model is not None else {}
        if macs is None:
            from ..metrics import node_macs
            macs = node_macs(graph)
        self.macs = macs
        first_input = graph.values.get(graph.inputs[0]) if graph.inputs else None
        self.batch = first_input.shape[0] if first_input is not None and first_input.shape \
            else None
        self._build_tree()
        self._build_runs()

    # structure ---------------------------------------------------------------------------------
    def _build_tree(self) -> None:
        g = self.graph
        node_modules = {n.module for n in g.nodes.values() if n.module}
        self._has_desc = {a for m in node_modules for a in _ancestors(_parent(m))}
        self.container: dict[str, str] = {}
        for nid, n in g.nodes.items():
            if n.kind in (NODE_INPUT, NODE_OUTPUT):
                self.container[nid] = ""
            elif n.module:
                self.container[nid] = _parent(n.module)
            else:
                self.container[nid] = n.scope or ""
        # bare parameters read by the graph (class tokens, position embeddings, ...)
        self.params: dict[str, int] = {}
        for vid, v in g.values.items():
            if v.kind == PARAM and v.name and _parent(v.name) not in node_modules:
                self.params[v.name] = vid
                self.container[v.name] = _parent(v.name)
        self.order = list(g.nodes) + list(self.params)
        self.chain = {k: _ancestors(c) for k, c in self.container.items()}
        self.children: dict[str, list[str]] = {}
        self.subtree: dict[str, list[str]] = {}
        for k in self.order:
            prev = ""
            for m in self.chain[k]:
                kids = self.children.setdefault(prev, [])
                if m not in kids:
                    kids.append(m)
                self.subtree.setdefault(m, []).append(k)
                prev = m
        self.modules = [m for m in self.subtree]  # container modules, first-seen order
        self.depth = {m: m.count(".") + 1 for m in self.modules}
        self.position = {k: i for i, k in enumerate(self.order)}

    def module_type(self, path: str) -> str:
        m = self._modules.get(path)
        return type(m).__name__ if m is not None else "Module"

    def _signature(self, path: str) -> tuple:
        g = self.graph
        inside = set(self.subtree[path])
        pre = path + "."

        def rel(k: str) -> str:
            return k[len(pre):] if k.startswith(pre) else "?" + k

        sig = [self.module_type(path)]
        for k in self.subtree[path]:
            n = g.nodes.get(k)
            if n is None:
                sig.append(("param", rel(k)))
                continue
            srcs = set()  # external inputs count once: dense blocks read every earlier block
            for v in n.inputs:
                val = g.values[v]
                if val.kind in (ACTIVATION, INPUT):
                    srcs.add(rel(val.producer) if val.producer in inside else "^")
            sig.append((rel(k), n.type, n.kind, tuple(sorted(srcs))))
        return tuple(sig)

    def _build_runs(self) -> None:
        """Consecutive sibling modules with the same structure (types and wiring; channel
        counts may differ) whose nodes follow each other in the graph."""
        self.runs: list[list[str]] = []
        sigs = {m: self._signature(m) for m in self.modules}
        for parent, kids in self.children.items():
            run: list[str] = []
            for m in kids:
                if run and sigs[m] == sigs[run[-1]] and \
                        self.position[self.subtree[m][0]] == \
                        self.position[self.subtree[run[-1]][-1]] + 1:
                    run.append(m)
                    continue
                if len(run) >= 2:
                    self.runs.append(run)
                run = [m]
            if len(run) >= 2:
                self.runs.append(run)
        # a fold shows the first block of a run and folds the rest (>= 2 blocks)
        self.folds: dict[str, list[str]] = {r[1]: r[1:] for r in self.runs if len(r) >= 3}

    # state -> what is drawn ----------------------------------------------------------------------
    def visible_map(self, state: ViewState) -> dict[str, str]:
        fold_of = {m: key for key in state.folded if key in self.folds
                   for m in self.folds[key]}
        out = {}
        for k in self.order:
            key = k
            for m in self.chain[k]:
                if m in fold_of:
                    key = "fold:" + fold_of[m]
                    break
                if m in state.collapsed:
                    key = "module:" + m
                    break
            out[k] = key
        return out

    def count(self, state: ViewState) -> int:
        return len(set(self.visible_map(state).values()))

    def default_state(self, budget: int = DEFAULT_BUDGET) -> ViewState:
        """Everything expanded if it fits ``budget`` drawn nodes; else repeated blocks folded;
        else modules collapsed from the deepest level up until it fits."""
        state = ViewState()
        if self.count(state) <= budget:
            return state
        state.folded = set(self.folds)
        if self.count(state) <= budget:
            return state
        for d in range(max(self.depth.values(), default=0), 0, -1):
            state.collapsed |= {m for m in self.modules if self.depth[m] == d}
            if self.count(state) <= budget:
                break
        return state

    def reveal(self, state: ViewState, node: str) -> ViewState:
        """A copy of ``state`` in which ``node`` is drawn as itself."""
        s = state.copy()
        chain = set(self.chain.get(node, ()))
        s.collapsed -= chain
        s.folded = {k for k in s.folded if not chain & set(self.folds.get(k, ()))}
        return s

    def expand(self, state: ViewState, key: str, budget: int = DEFAULT_BUDGET) -> ViewState:
        """Open a collapsed module ("module:<path>" or a path) or a fold ("fold:<first>").
        Blocks it reveals stay collapsed when drawing them all would pass ``budget``."""
        s = state.copy()
        if key.startswith("fold:"):
            first = key[5:]
            s.folded.discard(first)
            revealed = list(self.folds.get(first, ()))
        else:
            path = key[7:] if key.startswith("module:") else key
            s.collapsed.discard(path)
            revealed = [c for c in self.children.get(path, ())]
        if self.count(s) > budget:
            s.collapsed |= set(revealed)
        return s

    def collapse(self, state: ViewState, path: str) -> ViewState:
        s = state.copy()
        path = path[7:] if path.startswith("module:") else path
        if path in self.subtree:
            s.collapsed.add(path)
        return s

    # labels ------------------------------------------------------------------------------------
    def _params(self, path: str, recurse: bool) -> int:
        m = self._modules.get(path)
        if m is None:
            return 0
        return sum(p.numel() for p in m.parameters(recurse=recurse))

    def node_info(self, k: str) -> dict:
        """Tooltip and label facts about a graph node or bare parameter."""
        g = self.graph
        if k in self.params:
            v = g.values[self.params[k]]
            return {"kind": "param", "title": k, "type": "Parameter",
                    "lines": [f"Parameter {list(v.shape)}", f"{human(_numel(v.shape))} params"],
                    "params": _numel(v.shape), "macs": 0}
        n = g.nodes[k]
        info: dict[str, Any] = {"kind": n.kind, "title": k, "type": n.type, "params": 0,
                                "macs": int(self.macs.get(k, 0))}
        lines = []
        if n.module and n.module in self._modules:
            m = self._modules[n.module]
            ch = _channels(m) if n.kind == NODE_LAYER else None
            text = n.type + (f" · {ch[0]}→{ch[1]}" if ch else "")
            ks = getattr(m, "kernel_size", None)
            if isinstance(ks, tuple) and ks and max(ks) > 1:
                text += " · " + "×".join(str(x) for x in ks)
            groups = getattr(m, "groups", 1)
            if isinstance(groups, int) and groups > 1:
                text += f" · g{groups}"
            lines.append(text)
            if n.call_index == 0:
                # a module whose submodules are not drawn (MultiheadAttention) counts them all
                info["params"] = self._params(n.module, recurse=n.module not in self._has_desc)
            else:
                lines.append(f"call {n.call_index + 1} (shares the weights)")
            if ch:
                info["channels"] = list(ch)
        else:
            lines.append(n.type)
        if info["params"]:
            lines.append(f"{human(info['params'])} params")
        if info["macs"]:
            lines.append(f"{human(info['macs'])} MACs")
        outs = [g.values[v] for v in n.outputs if v in g.values]
        if outs:
            lines.append("out " + ", ".join(shape_text(v.shape, self.batch) for v in outs[:2]))
        info["lines"] = lines
        return info

    def _label(self, k: str, info: dict) -> tuple[str, dict]:
        """DOT attributes of a drawn graph node / parameter."""
        g = self.graph
        n = g.nodes.get(k)
        container = self.container[k]
        name = k[len(container) + 1:] if container and k.startswith(container + ".") else k
        if info["kind"] == "param":
            label = (f'<<B>{_esc(name)}</B><BR/><FONT POINT-SIZE="8" COLOR="#92400e">'
                     f'{_esc(info["lines"][0])}</FONT>>')
            return label, {"shape": "note", "fillcolor": "#fffbeb", "color": "#d97706",
                           "fontsize": "9"}
        if n.kind in (NODE_INPUT, NODE_OUTPUT):
            shapes = [shape_text(g.values[v].shape, self.batch) for v in
                      (n.outputs if n.kind == NODE_INPUT else n.inputs) if v in g.values]
            sub = f'<BR/><FONT POINT-SIZE="8" COLOR="#475569">{_esc(", ".join(shapes[:3]))}' \
                  f'</FONT>' if shapes and n.kind == NODE_INPUT else ""
            return f"<<B>{_esc(n.type.lower() if n.type else k)}</B>{sub}>", {
                "shape": "oval", "fillcolor": "#f1f5f9", "color": "#64748b"}
        if n.kind == NODE_LAYER:
            rows = [f"<B>{_esc(name)}</B>",
                    f'<FONT POINT-SIZE="9" COLOR="{_type_color(n.type)}">'
                    f'{_esc(info["lines"][0])}</FONT>']
            if info["params"]:
                rows.append(f'<FONT POINT-SIZE="8" COLOR="#64748b">'
                            f'{human(info["params"])} params</FONT>')
            elif n.call_index:
                rows.append(f'<FONT POINT-SIZE="8" COLOR="#64748b">'
                            f'call {n.call_index + 1}</FONT>')
            return "<" + "<BR/>".join(rows) + ">", {}
        # op
        noop = not n.inputs and not n.outputs
        base = name.split(":")[0].rstrip("_").lower()
        text = _esc(name) if base == n.type.rstrip("_").lower() else \
            f'{_esc(name)} <FONT COLOR="#64748b">{_esc(n.type)}</FONT>'
        attrs = {"fillcolor": "#f1f5f9", "fontsize": "9", "height": "0.22", "color": "#94a3b8",
                 "margin": "0.08,0.02"}
        if noop:
            attrs.update(style="rounded,dashed", fillcolor="none", fontcolor="#94a3b8")
            text += ' <FONT COLOR="#94a3b8">(no-op)</FONT>'
        return f"<{text}>", attrs

    # DOT ---------------------------------------------------------------------------------------
    def to_dot(self, state: ViewState) -> tuple[str, dict, dict, dict]:
        g = self.graph
        vis = self.visible_map(state)
        elements: dict[str, dict] = {}
        members: dict[str, list[str]] = {}  # key -> hidden nodes
        for k in self.order:
            members.setdefault(vis[k], []).append(k)
        ids: dict[str, str] = {}
        node_lines: dict[str, list[str]] = {}  # cluster path -> DOT lines
        cluster_of: dict[str, str] = {}

        def place(key: str, path: str, line: str):
            cluster_of[key] = path
            node_lines.setdefault(path, []).append(line)

        for key, hidden in members.items():
            nid = ids[key] = f"n{len(ids)}"
            if key.startswith("module:"):
                path = key[7:]
                info = self._group_info(key, [path], hidden)
                label = (f'<<B>{_esc(path)}</B><BR/><FONT POINT-SIZE="9" COLOR="#334155">'
                         f'{_esc(self.module_type(path))} · {info["n_layers"]} layers</FONT>'
                         f'<BR/><FONT POINT-SIZE="8" COLOR="#64748b">'
                         f'{human(info["params"])} params · ▸ expand</FONT>>')
                attrs = {"shape": "box3d", "style": "filled", "fillcolor": "#e2e8f0",
                         "color": "#64748b"}
                parent = _parent(path)
            elif key.startswith("fold:"):
                first = key[5:]
                mods = self.folds[first]
                info = self._group_info(key, mods, hidden)
                label = (f'<<B>{_esc(self.module_type(first))} ×{len(mods)}</B><BR/>'
                         f'<FONT POINT-SIZE="9" COLOR="#334155">{_esc(first)} … '
                         f'{_esc(mods[-1].rsplit(".", 1)[-1])}</FONT><BR/>'
                         f'<FONT POINT-SIZE="8" COLOR="#64748b">{human(info["params"])} params'
                         f' · ▸ unfold</FONT>>')
                attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "#e0e7ff",
                         "color": "#4f46e5", "peripheries": "2"}
                parent = _parent(first)
            else:
                info = self.node_info(key)
                label, attrs = self._label(key, info)
                parent = self.container[key]
                while parent and parent not in self.subtree:
                    parent = _parent(parent)
            elements[key] = info
            a = " ".join(f'{k}="{v}"' for k, v in attrs.items())
            place(key, parent, f'{nid} [id="{nid}" label={label} {a}];')

        # edges between drawn elements, one per pair, labelled with the first tensor's shape
        edge_lines: list[str] = []
        edges: dict[str, tuple[str, str]] = {}
        seen: dict[tuple[str, str], str] = {}
        connected: set[str] = set()
        labelled: set[int] = set()
        for k in self.order:
            n = g.nodes.get(k)
            if n is None:
                continue
            dst = vis[k]
            for v in n.inputs:
                val = g.values[v]
                if val.kind in (ACTIVATION, INPUT):
                    src_node = val.producer
                elif val.kind == PARAM and val.name in self.params:
                    src_node = val.name
                else:
                    continue
                src = vis.get(src_node) if src_node else None
                if src is None or src == dst or (src, dst) in seen:
                    continue
                eid = f"e{len(edges)}"
                seen[(src, dst)] = eid
                edges[eid] = (src, dst)
                connected.update((src, dst))
                # one label per tensor: a tensor read by many (dense blocks) is labelled once,
                # which keeps dot fast (every label is a node to place)
                if v in labelled:
                    edge_lines.append(f'{ids[src]} -> {ids[dst]} [id="{eid}"];')
                else:
                    labelled.add(v)
                    label = shape_text(val.shape, self.batch)
                    edge_lines.append(f'{ids[src]} -> {ids[dst]} [id="{eid}" LABEL="{label}"];')
        # labels are nodes to place for dot: with dense wiring (DenseNet) place them after
        # the layout instead (xlabel), which is ~10x faster there
        dense = len(edges) > 1.5 * max(len(members), 1) or len(edges) > 600
        lab = "xlabel" if dense else "label"
        edge_lines = [line.replace(" LABEL=", f" {lab}=") for line in edge_lines]
        # keep no-op nodes (dropout in eval) next to the node before them
        prev_in: dict[str, str] = {}
        for k in self.order:
            key = vis[k]
            path = cluster_of.get(key, "")
            if key == k and key not in connected and path in prev_in:
                edge_lines.append(f'{ids[prev_in[path]]} -> {ids[key]} [style="invis"];')
            prev_in[path] = key

        # nested clusters
        kids: dict[str, list[str]] = {}
        used = set()
        for path in node_lines:
            p = path
            while p and p not in used:
                used.add(p)
                kids.setdefault(_parent(p), []).append(p)
                p = _parent(p)
        cluster_ids: dict[str, str] = {}
        out = ["digraph G {",
               f'graph [rankdir=TB fontname="{FONT}" fontsize=10 nodesep=0.22 ranksep=0.32 '
               f'bgcolor="transparent" pad=0.25 outputorder="edgesfirst"'
               # dense wiring: bound crossing minimisation and ranking (minutes -> seconds)
               + (' mclimit=0.1 nslimit=1 nslimit1=1' if dense else '') + '];',
               f'node [fontname="{FONT}" fontsize=10 shape=box style="rounded,filled" '
               f'fillcolor="#ffffff" color="#94a3b8" penwidth=1.2 margin="0.10,0.04" '
               f'height=0.3];',
               f'edge [fontname="{FONT}" fontsize=8 color="#94a3b8" fontcolor="#64748b" '
               f'arrowsize=0.55 penwidth=1];']
        fills = ("#f8fafc", "#f1f5f9", "#ffffff")

        def emit(path: str, depth: int):
            for child in sorted(kids.get(path, ()), key=lambda c: self.position[
                    self.subtree[c][0]] if c in self.subtree else 0):
                cid = cluster_ids[child] = f"c{len(cluster_ids)}"
                label = f"{child} · {self.module_type(child)}"
                out.append(f'subgraph cluster_{cid} {{ id="{cid}" label="{_esc(label)}" '
                           f'labeljust="l" fontsize=9 fontcolor="#475569" style="rounded,filled" '
                           f'fillcolor="{fills[depth % len(fills)]}" color="#cbd5e1";')
                emit(child, depth + 1)
                out.append("}")
            out.extend(node_lines.get(path, ()))

        emit("", 0)
        out.extend(edge_lines)
        out.append("}")
        names = {ids[k]: k for k in ids}
        names.update({cid: f"cluster:{p}" for p, cid in cluster_ids.items()})
        return "\n".join(out), elements, names, (vis, edges)

    def _group_info(self, key: str, mods: list[str], hidden: list[str]) -> dict:
        params = sum(self._params(m, True) for m in mods)
        layers = sum(1 for k in hidden if k in self.graph.nodes and
                     self.graph.nodes[k].kind == NODE_LAYER)
        macs = sum(int(self.macs.get(k, 0)) for k in hidden)
        kind = "fold" if key.startswith("fold:") else "module"
        title = f"{self.module_type(mods[0])} ×{len(mods)}: {mods[0]} … {mods[-1]}" \
            if kind == "fold" else f"{mods[0]} ({self.module_type(mods[0])})"
        return {"kind": kind, "title": title, "type": self.module_type(mods[0]),
                "params": params, "macs": macs, "n_layers": layers, "modules": mods,
                "lines": [f"{layers} layers, {len(hidden)} nodes hidden", f"{human(params)} params",
                          f"{human(macs)} MACs", "click to " + ("unfold" if kind == "fold"
                                                               else "expand")]}

    def layout(self, state: ViewState | None = None, budget: int = DEFAULT_BUDGET) -> Layout:
        t0 = time.perf_counter()
        state = state if state is not None else self.default_state(budget)
        dot, elements, names, (vis, edges) = self.to_dot(state)
        raw = render(dot)
        svg = _decorate(raw, names, elements, edges)
        return Layout(svg, dot, state, vis, elements, edges, time.perf_counter() - t0)

    # highlight ---------------------------------------------------------------------------------
    def highlight_spec(self, layout: Layout, highlighted: dict[str, Any] | None,
                       heat: dict[str, float] | None = None) -> dict:
        """What to restyle for a plan: ``{"nodes": {key: role}, "inside": {key: role},
        "edges": [edge ids], "heat": {key: colour}, "info": {key: {...}}}``. ``highlighted``
        is ``plan.highlighted`` (node -> {"role", "idxs", "why", "fn"}) or node -> role."""
        nodes: dict[str, str] = {}
        inside: dict[str, str] = {}
        info: dict[str, dict] = {}
        for k, h in (highlighted or {}).items():
            role = h if isinstance(h, str) else h.get("role", "pass")
            key = layout.visible.get(k)
            if key is None:
                continue
            if key == k:
                nodes[k] = role
                if not isinstance(h, str):
                    info[k] = {"role": role, "idxs": idx_text(h.get("idxs", ()), 240),
                               "n": len(h.get("idxs", ())), "why": h.get("why", ""),
                               "fn": h.get("fn", "")}
            else:
                prev = inside.get(key)
                if prev is None or _ROLE_RANK[role] < _ROLE_RANK[prev]:
                    inside[key] = role
        touched = set(nodes) | set(inside)
        edges = [eid for eid, (s, d) in layout.edges.items() if s in touched and d in touched]
        heat_colors = {}
        for k, frac in (heat or {}).items():
            key = layout.visible.get(k)
            if key == k:
                heat_colors[k] = heat_color(frac)
        return {"nodes": nodes, "inside": inside, "edges": edges, "heat": heat_colors,
                "info": info, "active": bool(nodes or inside)}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def heat_color(frac: float) -> str:
    """0 -> pale cream, 1 -> red (a sequential scale, as the legend shows; text stays
    readable on every colour)."""
    stops = [(0.0, (255, 247, 236)), (0.25, (253, 212, 158)), (0.5, (252, 141, 89)),
             (1.0, (215, 48, 31))]
    f = min(max(float(frac), 0.0), 1.0)
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if f <= b:
            t = (f - a) / (b - a)
            rgb = [round(x + (y - x) * t) for x, y in zip(ca, cb)]
            return "#%02x%02x%02x" % tuple(rgb)
    return "#d7301f"


HEAT_STOPS = [(f, heat_color(f)) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


# ---- rendering --------------------------------------------------------------------------------
def render(dot: str, engine: str = "dot", timeout: float = 120.0) -> str:
    """DOT source -> SVG text with Graphviz's ``dot`` (run as a subprocess with a timeout, so a
    pathological graph cannot hang the kernel)."""
    try:
        proc = subprocess.run([engine, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True,
                              timeout=timeout)
    except FileNotFoundError as exc:
        raise RuntimeError("Graphviz's `dot` is not installed: apt-get install graphviz "
                           "(or brew install graphviz, conda install graphviz)") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"dot took more than {timeout:.0f}s to lay this graph out; collapse "
                           f"some modules (fewer nodes) and try again") from exc
    if proc.returncode != 0:
        raise RuntimeError("dot failed: " + proc.stderr.decode("utf-8", "replace")[:500])
    return proc.stdout.decode("utf-8")


_G_RE = re.compile(r'<g id="([nce]\d+)" class="(node|cluster|edge)">\n<title>[^<]*</title>')


def _decorate(svg: str, names: dict[str, str], elements: dict[str, dict],
              edges: dict[str, tuple[str, str]]) -> str:
    """Add data-node / data-module / data-fold, pe-* classes and readable titles."""
    def repl(m: re.Match) -> str:
        gid, cls = m.group(1), m.group(2)
        if cls == "edge":
            src, dst = edges.get(gid, ("", ""))
            return (f'<g id="{gid}" class="edge pe-edge" data-src="{_esc(src)}" '
                    f'data-dst="{_esc(dst)}">\n<title>{_esc(src)} → {_esc(dst)}</title>')
        key = names.get(gid, "")
        if cls == "cluster":
            path = key[8:]
            return (f'<g id="{gid}" class="cluster pe-cluster" data-module="{_esc(path)}">\n'
                    f'<title>{_esc(path)}</title>')
        info = elements.get(key, {})
        if key.startswith("module:"):
            return (f'<g id="{gid}" class="node pe-module" data-module="{_esc(key[7:])}">\n'
                    f'<title>{_esc(info.get("title", key))}</title>')
        if key.startswith("fold:"):
            mods = ",".join(info.get("modules", ()))
            return (f'<g id="{gid}" class="node pe-fold" data-fold="{_esc(key[5:])}" '
                    f'data-modules="{_esc(mods)}">\n<title>{_esc(info.get("title", key))}</title>')
        kind = info.get("kind", "op")
        kind = "io" if kind in (NODE_INPUT, NODE_OUTPUT) else kind
        return (f'<g id="{gid}" class="node pe-node pe-{kind}" data-node="{_esc(key)}">\n'
                f'<title>{_esc(key)}</title>')

    svg = _G_RE.sub(repl, svg)
    svg = re.sub(r"<svg ", '<svg class="pe-graph" ', svg, count=1)
    # drop the XML prolog and doctype: the SVG is embedded in HTML
    start = svg.find("<svg")
    return svg[start:] if start > 0 else svg


_NODE_G_RE = re.compile(r'<g id="([nce]\d+)" class="([^"]*)" (data-node|data-module|data-fold|'
                        r'data-src)="([^"]*)"')


def highlight_svg(svg: str, spec: dict | None) -> str:
    """The SVG with a highlight spec (``GraphView.highlight_spec``) applied as classes: the
    static counterpart of what the canvas does in the browser."""
    if not spec or not (spec.get("nodes") or spec.get("inside") or spec.get("heat")):
        return svg
    nodes, inside = spec.get("nodes", {}), spec.get("inside", {})
    edges, heat = set(spec.get("edges", ())), spec.get("heat", {})
    info = spec.get("info", {})

    def repl(m: re.Match) -> str:
        gid, cls, attr, val = m.groups()
        key = html.unescape(val)
        extra = ""
        if attr == "data-node":
            if key in nodes:
                cls += f" pe-{nodes[key]}"
                i = info.get(key)
                if i:
                    extra += f' data-idxs="{_esc(i["idxs"])}" data-why="{_esc(i["why"])}"'
            if key in heat:
                cls += " pe-hot"
                extra += f' style="--pe-heat:{heat[key]}"'
        elif attr == "data-module" and "pe-module" in cls and f"module:{key}" in inside:
            cls += " pe-inside"
            extra = f' data-inside="{inside["module:" + key]}"'
        elif attr == "data-fold" and f"fold:{key}" in inside:
            cls += " pe-inside"
            extra = f' data-inside="{inside["fold:" + key]}"'
        elif attr == "data-src" and gid in edges:
            cls += " pe-flow"
        return f'<g id="{gid}" class="{cls}"{extra} {attr}="{val}"'

    svg = _NODE_G_RE.sub(repl, svg)
    classes = "pe-graph pe-active" + (" pe-heat" if heat else "")
    return svg.replace('<svg class="pe-graph"', f'<svg class="{classes}"', 1)
