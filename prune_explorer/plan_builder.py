"""From a closure to a PruningPlan: ordered steps with indices, parameter and MAC counts,
the reason each layer is coupled, and the exact actions exec will perform."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from . import index_mapping as im
from .attributes import check_updates, infer_int_updates
from .explain import explain
from .graph import BUFFER, NODE_OP, PARAM
from .layers import LayerSpec
from .metrics import node_macs, predicted_node_macs
from .plan import ROLE_IN, ROLE_OUT, ROLE_PASS, ROLE_ROOT, Actions, PruningPlan, Step
from .propagation import Closure
from .pruners import removed_numel

if TYPE_CHECKING:  # pragma: no cover
    from .traced_view import TracedView

_ROLE_RANK = {ROLE_ROOT: 0, ROLE_OUT: 1, ROLE_IN: 2, ROLE_PASS: 3}


class PlanBuilder:
    """Closure -> ordered steps with indices, counts, explanations and exec actions."""

    def __init__(self, dgraph: TracedView, cl: Closure, root: str, side: str, trigger: str):
        self.G = dgraph
        self.cl = cl
        self.root = root
        self.side = side
        self.trigger = trigger
        self.graph = dgraph.graph
        self.dg = dgraph.dg
        self._sides: dict[str, object] = {}  # module -> _sides_of, once per layer

    def build(self, idxs: list[int], groups: int) -> PruningPlan:
        G, cl, graph, dg = self.G, self.cl, self.graph, self.dg
        steps: dict[tuple, dict] = {}
        cuts: dict[str, dict[int, np.ndarray]] = {}
        counts: dict[tuple[str, str], int] = {}
        opaque: dict[str, dict[str, list[int]]] = {}
        touched_nodes: list[str] = []
        new_shapes: dict[int, list[int]] = {}
        node_rank: dict[str, int] = {}
        extra_ints: list = []
        self.owner_step: dict[int, tuple] = {}  # vertex -> key of the step that owns it

        def step(key, v, rank, **fields):
            s = steps.get(key)
            if s is None:
                s = steps[key] = {"anchor": v, "cuts": [], "rank": rank, **fields}
            return s

        for order, v in enumerate(cl.order):
            n = cl.count(v)
            if not n:
                continue
            key = dg.key[v]
            if key[0] == "virtual":
                vi = dg.virtuals[v]
                node = graph.nodes[vi.node]
                node_rank.setdefault(node.id, order)
                if node.opaque and vi.module is not None:
                    opaque.setdefault(vi.module, {})[vi.name] = cl.pruned(v).tolist()
                    skey = ("opaque", vi.module)
                    step(skey, v, node_rank[node.id], kind="opaque", module=vi.module)
                    self.owner_step[v] = skey
                elif vi.attr and (vi.module or node.scope):
                    # a layer's own attribute; for a call inside a non-leaf module (a conv
                    # under a weight-norm parametrization) the attribute of that module
                    owner = vi.module if vi.module is not None else node.scope
                    m = G.submodule(owner)
                    if getattr(m, vi.attr, None) == dg.size[v]:
                        counts[(owner, vi.attr)] = n
                    else:
                        # a conv called functionally (timm's BlurPool: groups=self.channels,
                        # or groups=x.shape[1], which follows by itself)
                        extra_ints.extend(_attr_holding(m, owner, dg.size[v], n))
                continue
            value = graph.values[key[0]]
            shape = new_shapes.setdefault(value.id, list(value.shape))
            shape[key[1]] -= n
            if value.kind in (PARAM, BUFFER):
                cuts.setdefault(value.name, {})[key[1]] = cl.pruned(v)
                mod, _, attr = value.name.rpartition(".")
                skey = self._module_side(mod, attr, key[1])
                rank = min((node_rank.get(nid, order) for nid in graph.module_nodes.get(mod, ())),
                           default=order)
                s = step(skey, v, rank, kind=skey[2] if skey[0] == "module" else "param",
                         module=mod if skey[0] == "module" else value.name)
                s["cuts"].append((value.name, key[1]))
                self.owner_step[v] = skey
            else:
                for nid in self._nodes_of_value(value.id):
                    node_rank.setdefault(nid, order)
                    if nid not in touched_nodes:
                        touched_nodes.append(nid)
                    node = graph.nodes[nid]
                    if node.kind == NODE_OP:
                        step(("pass", nid), v, node_rank[nid], kind="pass", module=nid)
                producer = graph.nodes.get(value.producer)
                if producer is not None:
                    self.owner_step[v] = ("node", producer.id)

        # each layer step's classic function, while the layer is as the plan found it (a
        # depthwise conv pruned to one channel is no grouped conv afterwards)
        self._fns = {}
        for st in steps.values():
            kind = st["kind"]
            if kind != "pass" and kind != "param":
                m = G.submodule(st["module"])
                self._fns[(st["module"], kind)] = _classic_fn(G.registry.lookup(m), m, kind)

        # predicted MACs per touched node
        layer_nodes = set(touched_nodes)
        for mod in {s["module"] for s in steps.values() if s["kind"] != "pass"}:
            layer_nodes.update(graph.module_nodes.get(mod, ()))
        layer_nodes = {nid for nid in layer_nodes if nid in graph.nodes}
        shapes = {k: tuple(v) for k, v in new_shapes.items()}
        before = node_macs(graph)
        after = predicted_node_macs(graph, shapes, sorted(layer_nodes))
        macs_gone = {nid: before.get(nid, 0) - after.get(nid, 0) for nid in after}
        for mod, sets in opaque.items():
            m = G.submodule(mod)
            spec = G.registry.lookup(m)
            if spec.macs is not None:
                for nid in graph.module_nodes.get(mod, ()):
                    node = graph.nodes[nid]
                    macs_gone[nid] = spec.macs(m, node, graph, {}) - spec.macs(m, node, graph, sets)

        # exact parameter counts (shapes as they are before exec, for the steps' counts too)
        total_params = 0
        self.param_shape: dict[str, tuple | None] = {}  # cut tensor -> shape (None: a buffer)
        self.tensor_shape: dict[str, tuple] = {}  # cut tensor -> shape
        for tname, dims in cuts.items():
            t = G.tensor(tname)
            self.tensor_shape[tname] = shape = tuple(t.shape)
            if isinstance(t, nn.Parameter):
                self.param_shape[tname] = shape
                total_params += removed_numel(shape, {d: len(i) for d, i in dims.items()})
            else:
                self.param_shape[tname] = None
        opaque_params = {}
        for mod, sets in opaque.items():
            m = G.submodule(mod)
            opaque_params[mod] = G.registry.lookup(m).prune(m, sets, True)
            total_params += opaque_params[mod]

        actions = Actions(
            cuts=[(t, d, idx.tolist()) for t, dims in cuts.items() for d, idx in dims.items()],
            counts=[(m, a, n) for (m, a), n in counts.items()],
            opaque=[(m, s) for m, s in opaque.items()],
        )
        def pruned_of(value: int, dim: int) -> np.ndarray:
            v = dg.vertex_of.get((value, dim))
            return cl.pruned(v) if v is not None else np.zeros(0, dtype=im.INDEX)

        def knows_layer(name: str) -> bool:
            return G.prunes_itself(G.submodule(name))

        actions.ints, suspects = infer_int_updates(
            G.model, graph, touched_nodes + sorted(layer_nodes), shapes, pruned_of, knows_layer)
        actions.ints += self._size_attrs(layer_nodes, shapes, actions.ints)
        actions.ints += check_updates(G.model, graph, shapes, actions.ints)
        actions.ints += [u for u in extra_ints if (u[0], u[1]) not in
                         {(m, a) for m, a, _o, _n in actions.ints}]
        sync = []
        for tname in cuts:
            for mname, _ in G.owners_of(tname) or [(tname.rpartition(".")[0], "")]:
                if mname not in sync:
                    sync.append(mname)
        for (m, _a), _n in counts.items():
            if m not in sync:
                sync.append(m)
        actions.sync = sync

        total_macs = sum(v for v in macs_gone.values() if v > 0)
        # the steps are worked out when first read (maybe after exec): from what is known now
        finish = partial(self._finish_steps, steps, cuts, dict(macs_gone), opaque_params)
        plan = PruningPlan(G, self.root, self.side, idxs, finish, actions, total_params,
                           total_macs, list(cl.problems), None, groups)
        plan._version = G.version
        plan._closure = cl
        plan.suspect_nodes = suspects
        # the shapes exec leaves: its check forward compares the outputs with them, and the
        # graph is updated to them without tracing again (see graph_update)
        plan._new_shapes = shapes
        plan.touched_nodes = set(touched_nodes) | layer_nodes
        return plan

    def _size_attrs(self, nodes, shapes, planned) -> list:
        """Size attributes of layers with nothing to cut (a BatchNorm or InstanceNorm without
        affine weights) follow the width of the tensor they read."""
        G, graph = self.G, self.graph
        done = {(m, a) for m, a, _o, _n in planned}
        out = []
        for nid in sorted(nodes):
            node = graph.nodes[nid]
            if not node.module or node.call_index:
                continue
            m = G.submodule(node.module)
            spec = G.registry.lookup(m)
            if spec is None or spec.size_attrs is None or any(
                    t is not None for t in m._parameters.values()):
                continue  # with tensors to cut, sync_layer re-derives sizes from them
            acts = [v for v in node.inputs if graph.values[v].kind in ("activation", "input")]
            if not acts or acts[0] not in shapes:
                continue
            for attr, value in spec.size_attrs(m, shapes[acts[0]]):
                if (node.module, attr) not in done and getattr(m, attr, None) != value:
                    out.append((node.module, attr, getattr(m, attr, None), value))
        return out

    def _module_side(self, mod: str, attr: str, dim: int) -> tuple:
        sides = self._sides.get(mod, self)  # (None is an answer too)
        if sides is self:
            sides = self._sides[mod] = self._sides_of(mod)
        if sides == "coupled":
            return ("module", mod, "out")
        if sides == "missing":
            return ("param", mod, "param")
        if sides is not None:
            if (attr, dim) in sides[0]:
                return ("module", mod, "out")
            if (attr, dim) in sides[1]:
                return ("module", mod, "in")
        return ("param", f"{mod}.{attr}" if mod else attr, "param")

    def _sides_of(self, mod: str):
        """A layer's (output-side, input-side) tensor dims; "coupled" when both are one;
        None for tensors no layer spec claims (bare parameters, opaque layers)."""
        G = self.G
        try:
            m = G.submodule(mod)
        except AttributeError:
            return "missing"
        spec = G.registry.lookup(m)
        if spec is None or spec.opaque:
            return None
        if spec.coupled(m):
            return "coupled"
        return (tuple(spec.out_params(m)), tuple(spec.in_params(m)))

    def _nodes_of_value(self, value: int) -> list[str]:
        graph = self.graph
        out = []
        v = graph.values[value]
        if v.producer and v.producer in graph.nodes:
            out.append(v.producer)
        for reader in self.dg.readers.get(value, ()):
            if reader[0] not in out and reader[0] in graph.nodes:
                out.append(reader[0])
        return out

    def _finish_steps(self, steps, cuts, macs_gone, opaque_params):
        G, cl, graph = self.G, self.cl, self.graph
        position = {v: i for i, v in enumerate(cl.order)}
        ordered = sorted(steps.items(), key=lambda kv: (
            0 if kv[1]["module"] == self.root and kv[1]["kind"] != "pass" else 1, kv[1]["rank"],
            position[kv[1]["anchor"]]))
        fn_of_key: dict[tuple, str] = {}
        index_of_key: dict[tuple, int] = {}
        node_step: dict[str, tuple] = {}
        counted: dict[str, dict[int, int]] = {}  # tensor -> dims already counted by a step
        result: list[Step] = []
        highlighted: dict[str, int] = {}  # node -> index of the step it is shown with
        for key, s in ordered:
            kind, target = s["kind"], s["module"]
            if kind == "pass":
                node = graph.nodes[target]
                nodes, fn, module_repr, params = (target,), _pass_fn(node), node.type, 0
            elif kind == "param":
                readers = tuple(r[0] for r in self.dg.readers.get(graph.param_values.get(target), ()))
                nodes = (target,) + tuple(dict.fromkeys(readers))
                fn = "prune_parameter"
                module_repr = f"Parameter{list(self.tensor_shape[target])}"
                params = self._step_params(s["cuts"], cuts, counted)
            else:
                m = G.submodule(target)
                nodes = tuple(graph.module_nodes.get(target, ()))
                for tname, _d in s["cuts"]:
                    for owner, _a in G.owners_of(tname):
                        nodes += tuple(n for n in graph.module_nodes.get(owner, ()) if n not in nodes)
                fn, module_repr = self._fns[(target, kind)], partial(_short, m)
                if kind == "opaque":
                    params = opaque_params.get(target, 0)
                else:
                    params = self._step_params(s["cuts"], cuts, counted)
            index = len(result)
            fn_of_key[key] = fn
            index_of_key[key] = index
            for n in nodes:
                node_step.setdefault(n, key)
            is_root = target == self.root and kind != "pass" and not result
            role = ROLE_ROOT if is_root else {"out": ROLE_OUT, "in": ROLE_IN, "opaque": ROLE_OUT,
                                              "param": ROLE_OUT}.get(kind, ROLE_PASS)
            macs = sum(macs_gone.pop(n, 0) for n in nodes) if kind != "pass" else sum(
                macs_gone.pop(n, 0) for n in nodes if graph.nodes[n].kind == NODE_OP)
            st = Step(target=target, kind=kind, fn=fn, idxs=self._display_idxs(s, cuts),
                      params=params, macs=max(macs, 0), module_repr=module_repr, nodes=nodes,
                      role=role)
            if is_root:
                st.trigger, st.why = self.trigger, "the root of the plan"
            else:  # words and triggers are worked out when first read
                st.trigger = partial(self._trigger, s["anchor"], key, index, fn_of_key,
                                       index_of_key, node_step)
                st.why = partial(_explain_step, cl, s["anchor"], self.root, nodes, kind, st)
            result.append(st)
            for n in nodes:
                prev = highlighted.get(n)
                if prev is None or _ROLE_RANK[role] < _ROLE_RANK[result[prev].role]:
                    highlighted[n] = index
        return result, highlighted

    def _step_params(self, step_cuts, cuts, counted: dict) -> int:
        """Parameters a step removes. A tensor cut along two dims (rows in one step, columns
        in another) counts the overlap once: each cut counts what is left after earlier ones."""
        total = 0
        for tname, d in step_cuts:
            shape = self.param_shape[tname]
            if shape is None:
                continue
            done = counted.get(tname)
            if done is None:  # the first cut of this tensor: nothing counted before it
                counted[tname] = {d: len(cuts[tname][d])}
                total += removed_numel(shape, counted[tname])
                continue
            before = removed_numel(shape, done)
            done[d] = len(cuts[tname][d])
            total += removed_numel(shape, done) - before
        return total

    def _trigger(self, v: int, key: tuple, index: int, fn_of_key: dict, index_of_key: dict,
                 node_step: dict) -> str:
        """The fn of the nearest earlier step on the path from the root to this one."""
        for prev in [v] + [p for p, _ri in reversed(self.cl.path(v))]:
            owner = self.owner_step.get(prev)
            if owner is None:
                continue
            if owner[0] == "node":
                owner = node_step.get(owner[1])
            if owner is not None and owner != key and index_of_key.get(owner, index) < index:
                return fn_of_key[owner]
        return self.trigger

    def _display_idxs(self, s, cuts) -> list[int]:
        cl = self.cl
        if s["kind"] == "pass":
            # in the op's own output space (after a concat, the offset channels)
            node = self.graph.nodes[s["module"]]
            for out in node.outputs:
                for d in range(len(self.graph.values[out].shape)):
                    v = self.dg.vertex_of.get((out, d))
                    if v is not None and cl.count(v):
                        return cl.pruned(v).tolist()
            return cl.pruned(s["anchor"]).tolist()
        if s["kind"] == "opaque":
            return cl.pruned(s["anchor"]).tolist()
        if s["cuts"]:
            tname, d = s["cuts"][0]
            return cuts[tname][d].tolist()
        return cl.pruned(s["anchor"]).tolist()


def _explain_step(cl, v, root, nodes, kind, step) -> str:
    return explain(cl, v, root, set(nodes), kind, step.module_repr)


def _attr_holding(m, name: str, old: int, removed: int) -> list:
    """The one size-like int attribute of ``m`` equal to ``old`` (groups kept elsewhere)."""
    from .attributes import _HINT
    hits = [a for a, v in vars(m).items() if not a.startswith("_") and type(v) is int and
            v == old and _HINT.search(a)]
    return [(name, hits[0], old, old - removed)] if len(hits) == 1 else []


def _classic_fn(spec: LayerSpec | None, m: nn.Module, kind: str) -> str:
    if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1:
        return "prune_group_conv"
    if spec is None:
        return "prune_parameter"
    fn = spec.in_fn if kind == "in" else spec.out_fn
    if fn is None:
        return f"prune_{type(m).__name__.lower()}" + ("_in" if kind == "in" else "")
    return getattr(fn, "__name__", str(fn))


def _pass_fn(node) -> str:
    t = node.type.lower()
    if t in ("cat", "concat", "concatenate", "stack", "hstack", "vstack"):
        return "_prune_concat"
    if t in ("split", "chunk", "unbind", "tensor_split", "getitem"):
        return "_prune_split"
    if t in ("view", "reshape", "flatten", "unflatten", "permute", "transpose"):
        return "_prune_reshape"
    return "_prune_elementwise_op"


def _short(m) -> str:
    if not isinstance(m, nn.Module):
        return repr(m)[:90]
    text = repr(m) if not list(m.children()) else f"{type(m).__name__}(...)"
    text = text.replace("\n", " ")
    return text if len(text) <= 90 else text[:87] + "..."


