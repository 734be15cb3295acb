"""DependencyGraph: trace a model once, then turn "remove channels [2, 6, 9] of conv1" into a
PruningPlan listing every coupled layer with its mapped indices — the classic API.

    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9])
    plan.exec()

After ``exec`` the graph is re-traced, so the next plan sees the new channel counts.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from . import index_mapping as im
from .attributes import infer_int_updates
from .dimgraph import DimGraph, build_dim_graph
from .errors import (InvalidIndicesError, PlanExecutionError, PruneAllChannelsError,
                     PruningError, StaleGraphError, TracingError, UnknownModuleError,
                     UnsupportedOperationError)
from .explain import explain
from .graph import ACTIVATION, BUFFER, NODE_LAYER, NODE_OP, PARAM, Graph
from .layers import REGISTRY, LayerRegistry, LayerSpec, customized_spec
from .metrics import node_macs, predicted_node_macs
from .plan import (ROLE_IN, ROLE_OUT, ROLE_PASS, ROLE_ROOT, Actions, PruningPlan, Step)
from .propagation import Closure, Problem, close
from .pruners import removed_numel, validate_indices
from .tracing import model_fingerprint, trace

HISTORY_ATTR = "_prune_explorer_history"
_ROLE_RANK = {ROLE_ROOT: 0, ROLE_OUT: 1, ROLE_IN: 2, ROLE_PASS: 3}


class DependencyGraph:
    """Layer dependencies of one model, from one traced forward pass."""

    def __init__(self, registry: LayerRegistry | None = None):
        self.registry = (registry or REGISTRY).child()
        self.model: nn.Module | None = None
        self.example_inputs: Any = None
        self.graph: Graph | None = None
        self.dg: DimGraph | None = None
        self.version = 0
        self._owners: dict[str, list[tuple[str, str]]] = {}
        self._param_name: dict[int, str] = {}
        self._executed: list[PruningPlan] = []

    # ---- building -----------------------------------------------------------------------------
    def build_dependency(self, model: nn.Module, example_inputs: Any = None,
                         pruning_dim: int | None = None, output_transform: Callable | None = None,
                         verbose: bool = True, fixed_outputs: str = "primary",
                         **kwargs) -> "DependencyGraph":
        """Trace ``model(example_inputs)`` and build the dependency graph. Returns ``self``.

        ``fixed_outputs="primary"`` keeps the main output's shape (a tensor, every tensor of a
        tuple, the first entry of a dict or ModelOutput such as ``logits``); ``"all"`` keeps
        every returned tensor's shape. ``pruning_dim`` and ``output_transform`` are accepted
        for compatibility with the classic API; dims are found by tracing.
        """
        if example_inputs is None:
            example_inputs = kwargs.pop("inputs", None)
        if example_inputs is None:
            raise TypeError("build_dependency needs example_inputs: a tensor, a tuple of "
                            "tensors, or a dict of keyword arguments for model(...)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"build_dependency expects an nn.Module, got {type(model).__name__}")
        self.model = model
        self.example_inputs = example_inputs
        self.verbose = verbose
        self.fixed_outputs = fixed_outputs
        self._trace()
        self._warn_unsupported()
        return self

    def _trace(self) -> None:
        graph = trace(self.model, self.example_inputs, self.registry.is_opaque,
                      getattr(self, "fixed_outputs", "primary"))
        from .couplings import shape_provenance, shared_size_dims
        dg = build_dim_graph(graph, self._opaque_relations(graph),
                             shared_size_dims(self.model, graph) + shape_provenance(graph))
        self.graph, self.dg = graph, dg
        self.version += 1
        self._index_owners()

    def rebuild(self) -> "DependencyGraph":
        """Re-trace the (possibly pruned) model with the stored example inputs."""
        self._require_built()
        self._trace()
        return self

    def _index_owners(self) -> None:
        self._param_name = {}
        for n, p in self.model.named_parameters():
            self._param_name.setdefault(id(p), n)
        for n, b in self.model.named_buffers():
            self._param_name.setdefault(id(b), n)
        owners: dict[str, list[tuple[str, str]]] = {}
        for mname, m in self.model.named_modules():
            for attr, t in list(m._parameters.items()) + list(m._buffers.items()):
                if t is None:
                    continue
                canon = self._param_name.get(id(t))
                if canon is not None:
                    owners.setdefault(canon, []).append((mname, attr))
        self._owners = owners

    def _opaque_relations(self, graph: Graph):
        def for_node(node):
            module = self.model.get_submodule(node.module) if node.module else None
            spec = self.registry.lookup(module) if module is not None else None
            if spec is None or spec.relations is None:
                return None
            return lambda ctx: spec.relations(ctx, module, node)
        return for_node

    def _warn_unsupported(self) -> None:
        bad = {}
        for nid, op in self.dg.unknown:
            node = self.graph.nodes[nid]
            if not any(self.graph.values[v].kind == ACTIVATION or
                       self.graph.values[v].kind == "input" for v in node.inputs):
                continue
            bad.setdefault(nid, f"{node.type}, {op}" if node.kind == NODE_LAYER else op)
        if bad and self.verbose:
            names = ", ".join(f"{n} ({op})" for n, op in list(bad.items())[:8])
            more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
            warnings.warn(f"prune_explorer does not know how channels flow through {names}"
                          f"{more}; plans that reach them will be refused.", stacklevel=3)
        if self.graph.uncalled_modules and self.verbose:
            names = ", ".join(self.graph.uncalled_modules[:6])
            warnings.warn(f"these layers were not called with the example inputs and will not "
                          f"be pruned: {names}. Trace in the mode (train/eval) and with inputs "
                          f"that reach them.", stacklevel=3)

    @property
    def unsupported(self) -> list[tuple[str, str]]:
        """(node, op) pairs the engine cannot carry channels through."""
        self._require_built()
        return list(self.dg.unknown)

    def register_customized_layer(self, layer_type: type, in_ch_pruning_fn: Callable,
                                  out_ch_pruning_fn: Callable, get_in_ch_fn: Callable,
                                  get_out_ch_fn: Callable) -> None:
        """Register a custom layer type (classic API). Call before ``build_dependency``; the
        layer is then treated as a black box pruned with the given functions."""
        self.registry.register(layer_type, customized_spec(
            in_ch_pruning_fn, out_ch_pruning_fn, get_in_ch_fn, get_out_ch_fn))
        if self.model is not None:
            self._trace()

    # ---- lookups ------------------------------------------------------------------------------
    def _require_built(self) -> None:
        if self.graph is None:
            raise PruningError("call build_dependency(model, example_inputs) first")

    def check_fresh(self) -> None:
        """Raise StaleGraphError if the model's tensors changed since the graph was traced."""
        self._require_built()
        now = model_fingerprint(self.model)
        if now != self.graph.fingerprint:
            before = dict(self.graph.fingerprint)
            changed = [n for n, s in now if before.get(n) != s][:3] or [
                n for n in before if n not in dict(now)][:3]
            raise StaleGraphError(
                f"the model changed after tracing ({', '.join(changed)} differ); call "
                f"DG.build_dependency(model, example_inputs) again before planning")

    def module_name(self, module: nn.Module | str) -> str:
        self._require_built()
        if isinstance(module, str):
            try:
                self.model.get_submodule(module)
            except AttributeError:
                raise UnknownModuleError(
                    f"{module!r} is not a module of this model; names look like "
                    f"{_examples(self.model)}") from None
            return module
        for name, m in self.model.named_modules():
            if m is module:
                return name
        raise UnknownModuleError(
            f"{type(module).__name__} {_short(module)} is not part of the traced model; pass a "
            f"module of the model given to build_dependency (e.g. model.conv1)")

    def spec_of(self, module: nn.Module) -> LayerSpec | None:
        return self.registry.lookup(module)

    def tensor(self, name: str) -> torch.Tensor:
        owner, _, attr = name.rpartition(".")
        m = self.model.get_submodule(owner) if owner else self.model
        t = m._parameters.get(attr)
        return t if t is not None else m._buffers[attr]

    def root_vertex(self, module: nn.Module | str, side: str = "out") -> int:
        """The dim-graph vertex for a layer's output (or input) channels."""
        name = self.module_name(module)
        m = self.model.get_submodule(name) if name else self.model
        if name not in self.graph.module_nodes:
            raise UnknownModuleError(
                f"{name} ({type(m).__name__}) was never called in forward with the example "
                f"inputs, so it has no dependencies to prune; check the inputs or the mode")
        spec = self.registry.lookup(m)
        node = self.graph.nodes[self.graph.module_nodes[name][0]]
        if node.opaque:
            for vid, vi in self.dg.virtuals.items():
                if vi.node == node.id and vi.name in (("embed", "channels", "out channels")
                                                      if side == "out" else
                                                      ("embed", "channels", "in channels")):
                    return vid
            raise UnsupportedOperationError(f"{name} ({type(m).__name__}) has no {side}put "
                                            f"channels to prune")
        if spec is not None and side == "in" and isinstance(m, nn.modules.conv._ConvNd) \
                and m.groups > 1:
            x = next(v for v in node.inputs if self.graph.values[v].kind != PARAM)
            return self.dg.vertex(x, 1)
        dims = None
        if spec is not None:
            dims = spec.out_params(m) if side == "out" else spec.in_params(m)
        if not dims:
            dims = (("weight", 0 if side == "out" else 1),)
        for attr, dim in dims:
            t = getattr(m, attr, None)
            if not isinstance(t, torch.Tensor):
                continue
            canon = self._param_name.get(id(t))
            vid = self.graph.param_values.get(canon)
            if vid is not None and (vid, dim) in self.dg.vertex_of:
                return self.dg.vertex_of[(vid, dim)]
        raise UnsupportedOperationError(
            f"{name} ({type(m).__name__}) has no traced {side}put channels to prune; "
            f"prune a layer with weights (conv, linear, norm, embedding)")

    # ---- plans --------------------------------------------------------------------------------
    def get_pruning_plan(self, module: nn.Module | str, pruning_fn: Callable | str | None = None,
                         idxs: Iterable[int] = (), *, allow_output_change: bool = False,
                         strict: bool = True, policy: str = "cheapest") -> PruningPlan:
        """Plan the removal of channels ``idxs`` of ``module`` and of everything coupled to them.

        ``pruning_fn`` picks the side as in the classic API: an output-side function
        (``tp.prune_conv``, ``tp.prune_linear``, ...) prunes the layer's output channels, an
        input-side one (``tp.prune_related_conv``, ...) its input channels. ``"out"`` and
        ``"in"`` work too. With ``strict=False`` an invalid plan is returned with its
        ``problems`` instead of raising (the explorer shows them). ``policy`` says how indices
        that are not whole slices of a reshape are widened: ``"cheapest"`` (fewest extra
        channels), ``"heads"`` (whole attention heads) or ``"dims"`` (the same slots per head).
        """
        self._require_built()
        self.check_fresh()
        side = _side_of(pruning_fn)
        name = self.module_name(module)
        root = self.root_vertex(name, side)
        size = self.dg.size[root]
        m = self.model.get_submodule(name) if name else self.model
        where = f"{name} ({type(m).__name__}, {size} {side}put channels)"
        checked = validate_indices(idxs, size, where)
        if not checked:
            raise InvalidIndicesError(f"no indices given for {where}; pass e.g. idxs=[2, 6, 9]")
        fn_name = _fn_name(pruning_fn, self.registry.lookup(m), m, side)
        return self.plan_from_seeds({root: np.asarray(checked, dtype=im.INDEX)}, name, side,
                                    fn_name, allow_output_change=allow_output_change,
                                    strict=strict, policy=policy)

    def close(self, seeds: dict[int, np.ndarray], allow_output_change: bool = False,
              policy: str = "cheapest") -> Closure:
        self._require_built()
        return close(self.dg, seeds, allow_output_change=allow_output_change, policy=policy)

    def plan_from_seeds(self, seeds: dict[int, np.ndarray], root: str, side: str,
                        trigger: str, *, allow_output_change: bool = False, strict: bool = True,
                        policy: str = "cheapest", closure: Closure | None = None,
                        groups: int = 1) -> PruningPlan:
        cl = closure or self.close(seeds, allow_output_change, policy)
        if cl.problems and strict:
            raise _as_error(cl.problems[0], root, side, seeds, self)
        return _PlanBuilder(self, cl, root, side, trigger).build(
            [int(i) for v in seeds for i in seeds[v]][:100000], groups)

    # ---- execution ----------------------------------------------------------------------------
    def execute(self, plan: PruningPlan, verify: bool = True) -> int:
        from .execution import apply_actions, record_history, Snapshot
        self._require_built()
        if plan.executed:
            raise PlanExecutionError("this plan was already executed; compute a new plan")
        if plan._version != self.version:
            raise StaleGraphError("this plan was computed before the model last changed; "
                                  "compute it again with DG.get_pruning_plan(...)")
        if plan.problems:
            raise _as_error(plan.problems[0], plan.root, plan.side, {}, self)
        self.check_fresh()
        snap = Snapshot(self.model, plan.actions, self)
        try:
            apply_actions(self.model, plan.actions, self.registry)
            if verify:
                self._trace()
        except Exception as exc:
            snap.restore()
            if verify:
                try:
                    self._trace()
                except Exception:  # pragma: no cover - restored model should trace
                    pass
            where = exc.args[0] if isinstance(exc, TracingError) and exc.args else repr(exc)
            raise PlanExecutionError(
                f"executing the plan rooted at {plan.root} failed and the model was restored "
                f"unchanged: {where}") from exc
        if not verify:
            self._trace()
        plan.executed = True
        plan._snapshot = snap
        record_history(self.model, plan)
        self._executed.append(plan)
        return plan.params_removed

    def undo(self, plan: PruningPlan | None = None) -> PruningPlan:
        """Undo the last executed plan (or check that ``plan`` is it): the model gets back its
        exact previous tensors and attributes, and the graph is re-traced."""
        from .execution import HISTORY_ATTR
        self._require_built()
        if not self._executed:
            raise PlanExecutionError("nothing to undo: no plan was executed on this graph")
        last = self._executed[-1]
        if plan is not None and plan is not last:
            raise PlanExecutionError("only the last executed plan can be undone")
        last._snapshot.restore()
        history = self.model.__dict__.get(HISTORY_ATTR)
        if history:
            history.pop()
        self._executed.pop()
        last.executed = False
        self._trace()
        return last


class _PlanBuilder:
    """Closure -> ordered steps with indices, counts, explanations and exec actions."""

    def __init__(self, dgraph: DependencyGraph, cl: Closure, root: str, side: str, trigger: str):
        self.G = dgraph
        self.cl = cl
        self.root = root
        self.side = side
        self.trigger = trigger
        self.graph = dgraph.graph
        self.dg = dgraph.dg

    def build(self, idxs: list[int], groups: int) -> PruningPlan:
        G, cl, graph, dg = self.G, self.cl, self.graph, self.dg
        steps: dict[tuple, dict] = {}
        cuts: dict[str, dict[int, np.ndarray]] = {}
        counts: dict[tuple[str, str], int] = {}
        opaque: dict[str, dict[str, list[int]]] = {}
        touched_nodes: list[str] = []
        new_shapes: dict[int, list[int]] = {}
        node_rank: dict[str, int] = {}
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
                elif vi.attr and vi.module is not None:
                    counts[(vi.module, vi.attr)] = n
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
            m = G.model.get_submodule(mod)
            spec = G.registry.lookup(m)
            if spec.macs is not None:
                for nid in graph.module_nodes.get(mod, ()):
                    node = graph.nodes[nid]
                    macs_gone[nid] = spec.macs(m, node, graph, {}) - spec.macs(m, node, graph, sets)

        # exact parameter counts
        total_params = 0
        for tname, dims in cuts.items():
            t = G.tensor(tname)
            if isinstance(t, nn.Parameter):
                total_params += removed_numel(t.shape, {d: len(i) for d, i in dims.items()})
        opaque_params = {}
        for mod, sets in opaque.items():
            m = G.model.get_submodule(mod)
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

        actions.ints, suspects = infer_int_updates(
            G.model, graph, touched_nodes + sorted(layer_nodes), shapes, pruned_of)
        sync = []
        for tname in cuts:
            for mname, _ in G._owners.get(tname, [(tname.rpartition(".")[0], "")]):
                if mname not in sync:
                    sync.append(mname)
        for (m, _a), _n in counts.items():
            if m not in sync:
                sync.append(m)
        actions.sync = sync

        total_macs = sum(v for v in macs_gone.values() if v > 0)
        out_steps, highlighted = self._finish_steps(steps, cuts, dict(macs_gone), opaque_params)
        plan = PruningPlan(G, self.root, self.side, idxs, out_steps, actions, total_params,
                           total_macs, list(cl.problems), highlighted, groups)
        plan._version = G.version
        plan._closure = cl
        plan.suspect_nodes = suspects
        plan.touched_nodes = set(touched_nodes) | layer_nodes
        return plan

    def _module_side(self, mod: str, attr: str, dim: int) -> tuple:
        G = self.G
        try:
            m = G.model.get_submodule(mod) if mod else G.model
        except AttributeError:
            return ("param", mod, "param")
        spec = G.registry.lookup(m)
        if spec is None or spec.opaque:
            return ("param", f"{mod}.{attr}" if mod else attr, "param")
        if spec.coupled(m):
            return ("module", mod, "out")
        if (attr, dim) in spec.out_params(m):
            return ("module", mod, "out")
        if (attr, dim) in spec.in_params(m):
            return ("module", mod, "in")
        return ("param", f"{mod}.{attr}" if mod else attr, "param")

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
        ordered = sorted(steps.items(), key=lambda kv: (
            0 if kv[1]["module"] == self.root and kv[1]["kind"] != "pass" else 1, kv[1]["rank"],
            cl.order.index(kv[1]["anchor"]) if len(cl.order) < 5000 else 0))
        fn_of_key: dict[tuple, str] = {}
        node_step: dict[str, tuple] = {}
        counted: dict[str, dict[int, int]] = {}  # tensor -> dims already counted by a step
        result: list[Step] = []
        highlighted: dict[str, dict] = {}
        for key, s in ordered:
            kind, target = s["kind"], s["module"]
            if kind == "pass":
                node = graph.nodes[target]
                nodes, fn, module_repr, params = (target,), _pass_fn(node), node.type, 0
            elif kind == "param":
                t = G.tensor(target)
                readers = tuple(r[0] for r in self.dg.readers.get(graph.param_values.get(target), ()))
                nodes = (target,) + tuple(dict.fromkeys(readers))
                fn, module_repr = "prune_parameter", f"Parameter{list(t.shape)}"
                params = self._step_params(s["cuts"], cuts, counted)
            else:
                m = G.model.get_submodule(target) if target else G.model
                spec = G.registry.lookup(m)
                nodes = tuple(graph.module_nodes.get(target, ()))
                for tname, _d in s["cuts"]:
                    for owner, _a in G._owners.get(tname, ()):
                        nodes += tuple(n for n in graph.module_nodes.get(owner, ()) if n not in nodes)
                fn, module_repr = _classic_fn(spec, m, kind), _short(m)
                if kind == "opaque":
                    params = opaque_params.get(target, 0)
                else:
                    params = self._step_params(s["cuts"], cuts, counted)
            fn_of_key[key] = fn
            for n in nodes:
                node_step.setdefault(n, key)
            v = s["anchor"]
            is_root = target == self.root and kind != "pass" and not result
            role = ROLE_ROOT if is_root else {"out": ROLE_OUT, "in": ROLE_IN, "opaque": ROLE_OUT,
                                              "param": ROLE_OUT}.get(kind, ROLE_PASS)
            trigger = self.trigger if is_root else self._trigger(v, key, fn_of_key, node_step)
            why = "the root of the plan" if is_root else explain(
                cl, v, self.root, set(nodes), kind, module_repr)
            macs = sum(macs_gone.pop(n, 0) for n in nodes) if kind != "pass" else sum(
                macs_gone.pop(n, 0) for n in nodes if graph.nodes[n].kind == NODE_OP)
            st = Step(target=target, kind=kind, fn=fn, idxs=self._display_idxs(s, cuts),
                      params=params, macs=max(macs, 0), trigger=trigger, why=why,
                      module_repr=module_repr, nodes=nodes, role=role)
            result.append(st)
            for n in nodes:
                prev = highlighted.get(n)
                if prev is None or _ROLE_RANK[role] < _ROLE_RANK[prev["role"]]:
                    highlighted[n] = {"role": role, "idxs": st.idxs, "why": why, "fn": fn,
                                      "step": len(result) - 1}
        return result, highlighted

    def _step_params(self, step_cuts, cuts, counted: dict) -> int:
        """Parameters a step removes. A tensor cut along two dims (rows in one step, columns
        in another) counts the overlap once: each cut counts what is left after earlier ones."""
        total = 0
        for tname, d in step_cuts:
            t = self.G.tensor(tname)
            if not isinstance(t, nn.Parameter):
                continue
            done = counted.setdefault(tname, {})
            before = removed_numel(t.shape, done)
            done[d] = len(cuts[tname][d])
            total += removed_numel(t.shape, done) - before
        return total

    def _trigger(self, v: int, key: tuple, fn_of_key: dict, node_step: dict) -> str:
        for prev in [v] + [p for p, _ri in reversed(self.cl.path(v))]:
            owner = self.owner_step.get(prev)
            if owner is None:
                continue
            if owner[0] == "node":
                owner = node_step.get(owner[1])
            if owner is not None and owner != key and owner in fn_of_key:
                return fn_of_key[owner]
        return self.trigger

    def _display_idxs(self, s, cuts) -> list[int]:
        cl = self.cl
        if s["kind"] == "pass":
            return cl.pruned(s["anchor"]).tolist()
        if s["kind"] == "opaque":
            return cl.pruned(s["anchor"]).tolist()
        if s["cuts"]:
            tname, d = s["cuts"][0]
            return cuts[tname][d].tolist()
        return cl.pruned(s["anchor"]).tolist()


def _side_of(pruning_fn) -> str:
    if pruning_fn is None:
        return "out"
    if isinstance(pruning_fn, str):
        if pruning_fn in ("out", "in"):
            return pruning_fn
        name = pruning_fn
    else:
        name = getattr(pruning_fn, "__name__", "")
    return "in" if name.startswith("prune_related") else "out"


def _fn_name(pruning_fn, spec: LayerSpec | None, m: nn.Module, side: str) -> str:
    if pruning_fn is not None and not isinstance(pruning_fn, str):
        return getattr(pruning_fn, "__name__", str(pruning_fn))
    return _classic_fn(spec, m, side)


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


def _examples(model: nn.Module) -> str:
    names = [n for n, _ in model.named_modules() if n][:3]
    return ", ".join(repr(n) for n in names)


def _as_error(problem: Problem, root: str, side: str, seeds, G: DependencyGraph) -> PruningError:
    msg = f"cannot prune {root} ({side}put channels): {problem.message}"
    if problem.kind == "all-channels":
        return PruneAllChannelsError(msg)
    return UnsupportedOperationError(msg)
