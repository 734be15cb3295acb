"""DependencyGraph: trace a model once, then turn "remove channels [2, 6, 9] of conv1" into a
PruningPlan listing every coupled layer with its mapped indices — the classic API.

    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9])
    plan.exec()

After ``exec`` the graph follows the model (projected from the plan, or traced again where
Python-level sizes changed), so the next plan sees the new channel counts.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from . import index_mapping as im
from .classic import (OPTYPE, TORCH_BATCHNORM, TORCH_CONV, TORCH_EMBED,  # noqa: F401 (0.2.x
                      TORCH_LAYERNORM, TORCH_LINEAR, TORCH_MHA, TORCH_PRELU,  # tp.dependency.*)
                      ClassicGraphAPI, Dependency, Node, _prune_concat, _prune_elementwise_op,
                      _prune_split, count_prunable_channels, flatten_as_list)
from .dimgraph import DimGraph, build_dim_graph
from .errors import (InvalidIndicesError, PlanExecutionError, PruneAllChannelsError,
                     PruningError, StaleGraphError, TracingError, UnknownModuleError,
                     UnsupportedOperationError)
from .graph import ACTIVATION, NODE_LAYER, PARAM, Graph
from .module_walk import named_modules
from .layers import REGISTRY, LayerRegistry, LayerSpec, customized_spec
from .plan import PruningPlan
from .plan_builder import PlanBuilder, _classic_fn, _short
from .propagation import Closure, Problem, close
from .pruners import validate_indices
from .forward_io import model_fingerprint, without_gc
from .tracing import trace

HISTORY_ATTR = "_prune_explorer_history"


class DependencyGraph(ClassicGraphAPI):
    """Layer dependencies of one model, from one traced forward pass."""

    def __init__(self, registry: LayerRegistry | None = None):
        self.registry = (registry or REGISTRY).child()
        self.model: nn.Module | None = None
        self.example_inputs: Any = None
        self._graph: Graph | None = None
        self._dg: DimGraph | None = None
        self._stale = False  # the model changed through exec; catch up on next use
        self._pending = None  # the executed plan to project the graph with (see _follow)
        self.version = 0
        self._owners: dict[str, list[tuple[str, str]]] = {}
        self._param_name: dict[int, str] = {}
        self._executed: list[PruningPlan] = []
        self._watch: _Watch | None = None  # what check_fresh compares, see _tensor_watch
        self._modules_by_name: dict[str, nn.Module] = {}
        self._module_list: list | None = None  # named_modules(), kept with _modules_by_name
        self._name_of_module: dict[int, str] = {}

    def __deepcopy__(self, memo):
        """A copy on a copy of the model, traced afresh (a graph refers to tensors by id)."""
        import copy
        new = DependencyGraph()
        new.registry = self.registry
        if self.model is None:
            return new
        return new.build_dependency(copy.deepcopy(self.model, memo),
                                    copy.deepcopy(self.example_inputs, memo), verbose=False,
                                    fixed_outputs=getattr(self, "fixed_outputs", "primary"))

    # ---- building -----------------------------------------------------------------------------
    @without_gc
    def build_dependency(self, model: nn.Module, example_inputs: Any = None,
                         pruning_dim: int | None = None, output_transform: Callable | None = None,
                         verbose: bool = True, fixed_outputs="primary",
                         **kwargs) -> "DependencyGraph":
        """Trace ``model(example_inputs)`` and build the dependency graph. Returns ``self``.

        ``fixed_outputs`` says which outputs keep their shape: ``"primary"`` (default: a
        tensor, every tensor of a tuple, the first entry of a dict or ModelOutput such as
        ``logits``), ``"all"``, or a callable ``output -> the outputs to keep``
        (``lambda out: out[0]`` for a YOLO head, whose second output only feeds its loss).
        ``pruning_dim`` and ``output_transform`` are accepted for compatibility with the
        classic API; dims are found by tracing.
        """
        if example_inputs is None:
            example_inputs = kwargs.pop("inputs", None)
        if example_inputs is None:
            raise TypeError("build_dependency needs example_inputs: a tensor, a tuple of "
                            "tensors, or a dict of keyword arguments for model(...)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"build_dependency expects an nn.Module, got {type(model).__name__}")
        if not callable(fixed_outputs) and fixed_outputs not in ("primary", "all"):
            raise TypeError(f"fixed_outputs must be 'primary', 'all' or a callable output -> "
                            f"the outputs to keep (lambda out: out[0]), got {fixed_outputs!r}")
        self.model = model
        self.example_inputs = example_inputs
        self.verbose = verbose
        self.fixed_outputs = fixed_outputs
        self._trace()
        self._warn_unsupported()
        return self

    def _trace(self) -> None:
        graph = trace(self.model, self.example_inputs, self.registry.is_opaque,
                      getattr(self, "fixed_outputs", "primary"), is_known=self.prunes_itself)
        from .couplings import equal_split_pieces, shape_provenance, shared_size_dims
        dg = build_dim_graph(graph, self._opaque_relations(graph),
                             shared_size_dims(self.model, graph) + shape_provenance(graph)
                             + equal_split_pieces(self.model, graph))
        self._graph, self._dg = graph, dg
        self._stale, self._pending = False, None
        self.version += 1
        self._index_owners()
        self._watch = None  # built by the first check_fresh that finds the model unchanged

    @property
    def graph(self) -> Graph | None:
        """The traced graph, following the model (updated first if a plan was executed)."""
        if self._stale:
            self._catch_up()
        return self._graph

    @property
    def dg(self) -> DimGraph | None:
        if self._stale:
            self._catch_up()
        return self._dg

    def rebuild(self) -> "DependencyGraph":
        """Re-trace the (possibly pruned) model with the stored example inputs."""
        self._require_built()
        self._trace()
        return self

    def _index_owners(self) -> None:
        """One pass over the modules: each tensor's canonical name (the first it is reached
        by, as ``named_parameters`` gives it) and every (module, attr) that holds it."""
        every = named_modules(self.model, remove_duplicate=False)
        self._modules_by_name = dict(every)
        self._module_list = _first_names(every)
        self._name_of_module = name_of = {}
        param_name: dict[int, str] = {}
        buffer_name: dict[int, str] = {}
        held: list[tuple[str, str, int]] = []
        for mname, m in every:
            if id(m) in name_of:
                continue  # named_modules() lists a shared module once, by its first name
            name_of[id(m)] = mname
            prefix = mname + "." if mname else ""
            for attr, t in m._parameters.items():
                if t is not None:
                    param_name.setdefault(id(t), prefix + attr)
                    held.append((mname, attr, id(t)))
            for attr, t in m._buffers.items():
                if t is not None:
                    buffer_name.setdefault(id(t), prefix + attr)
                    held.append((mname, attr, id(t)))
        for k, v in buffer_name.items():
            param_name.setdefault(k, v)
        owners: dict[str, list[tuple[str, str]]] = {}
        for mname, attr, tid in held:
            owners.setdefault(param_name[tid], []).append((mname, attr))
        self._param_name = param_name
        self._owners = owners

    def prunes_itself(self, module: nn.Module) -> bool:
        """A layer whose sizes exec re-derives from its tensors (conv, linear, norms)."""
        spec = self.registry.lookup(module)
        return spec is not None and not spec.opaque and spec.out_fn is not None

    def _opaque_relations(self, graph: Graph):
        def for_node(node):
            module = self.submodule(node.module) if node.module else None
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
                          f"{more}; plans that reach them will be refused.", stacklevel=4)
        if self.graph.uncalled_modules and self.verbose:
            names = ", ".join(self.graph.uncalled_modules[:6])
            warnings.warn(f"these layers were not called with the example inputs and will not "
                          f"be pruned: {names}. Trace in the mode (train/eval) and with inputs "
                          f"that reach them.", stacklevel=4)

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
        if self._graph is None:
            raise PruningError("call build_dependency(model, example_inputs) first")

    def check_fresh(self) -> None:
        """Raise StaleGraphError if the model's tensors changed since the graph was traced."""
        self._require_built()
        if self._stale:
            self._catch_up()
        if self._watch is not None and _unchanged(self._watch):
            return
        modules = named_modules(self.model)  # walked afresh: the model may have changed
        now = model_fingerprint(self.model, modules)
        if now == self.graph.fingerprint:
            self._watch = _tensor_watch(modules)
        else:
            before = dict(self.graph.fingerprint)
            changed = [n for n, s in now if before.get(n) != s][:3] or [
                n for n in before if n not in dict(now)][:3]
            raise StaleGraphError(
                f"the model changed after tracing ({', '.join(changed)} differ); call "
                f"DG.build_dependency(model, example_inputs) again before planning")

    def module_name(self, module: nn.Module | str) -> str:
        self._require_built()
        if isinstance(module, str):
            if module in self._modules_by_name:
                return module
            try:
                self.model.get_submodule(module)
            except AttributeError:
                raise UnknownModuleError(
                    f"{module!r} is not a module of this model; names look like "
                    f"{_examples(self.model)}") from None
            return module
        name = self._name_of_module.get(id(module))
        if name is not None and self._modules_by_name.get(name) is module:
            return name
        for name, m in self.model.named_modules():
            if m is module:
                return name
        raise UnknownModuleError(
            f"{type(module).__name__} {_short(module)} is not part of the traced model; pass a "
            f"module of the model given to build_dependency (e.g. model.conv1)")

    def spec_of(self, module: nn.Module) -> LayerSpec | None:
        return self.registry.lookup(module)

    def submodule(self, name: str) -> nn.Module:
        """The module called ``name`` ("" for the model), from a table built at tracing."""
        m = self._modules_by_name.get(name)
        return m if m is not None else (self.model.get_submodule(name) if name else self.model)

    def tensor(self, name: str) -> torch.Tensor:
        """The parameter or buffer ``name`` (the one place scoring reads a weight)."""
        owner, _, attr = name.rpartition(".")
        m = self.submodule(owner)
        t = m._parameters.get(attr)
        return t if t is not None else m._buffers[attr]


    def owners_of(self, tensor_name: str) -> list[tuple[str, str]]:
        """Every (module, attribute) that holds tensor ``tensor_name`` (tied weights: several)."""
        return self._owners.get(tensor_name, [])

    def channel_scores(self, name: str, dim: int, strategy: str, cache: dict | None = None):
        """Per-index importance of tensor ``name`` along ``dim`` for a strategy (None: the
        strategy does not score this tensor). Scoring reads weights here only, so a graph of
        a model that was never loaded (``plan_pretrained``) reads them from disk instead."""
        from .groups import slice_scores
        score = cache.get(("_score", strategy)) if cache is not None else None
        if score is None:
            score = slice_scores(strategy, cache)
            if cache is not None:
                cache[("_score", strategy)] = score
        return score(name, self.tensor(name), dim, self.submodule(name.rpartition(".")[0]))

    def root_vertex(self, module: nn.Module | str, side: str = "out") -> int:
        """The dim-graph vertex for a layer's output (or input) channels."""
        name = self.module_name(module)
        m = self.submodule(name)
        node = None
        if name in self.graph.module_nodes:
            node = self.graph.nodes[self.graph.module_nodes[name][0]]
        elif not self.owns_traced_params(m):
            # (a layer with children of its own, smp's Conv2dStaticSamePadding calling its
            # static_padding, is no leaf node, but its weights were traced: it roots too)
            parent = name
            while parent:
                parent = parent.rpartition(".")[0]
                if parent in self.graph.module_nodes and self.graph.nodes[
                        self.graph.module_nodes[parent][0]].opaque:
                    pm = self.model.get_submodule(parent) if parent else self.model
                    raise UnknownModuleError(
                        f"{name} ({type(m).__name__}) is part of {parent} "
                        f"({type(pm).__name__}), which is pruned as a whole; plan on {parent} "
                        f"instead")
            raise UnknownModuleError(
                f"{name} ({type(m).__name__}) was never called in forward with the example "
                f"inputs, so it has no dependencies to prune; check the inputs or the mode")
        spec = self.registry.lookup(m)
        if node is not None and node.opaque:
            for vid, vi in self.dg.virtuals.items():
                if vi.node == node.id and vi.name in (("embed", "channels", "out channels")
                                                      if side == "out" else
                                                      ("embed", "channels", "in channels")):
                    return vid
            raise UnsupportedOperationError(f"{name} ({type(m).__name__}) has no {side}put "
                                            f"channels to prune")
        if node is not None and spec is not None and side == "in" and isinstance(
                m, nn.modules.conv._ConvNd) and m.groups > 1:
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

    def owns_traced_params(self, m: nn.Module) -> bool:
        """A registered layer type whose own weights the trace read (it ran, as ops)."""
        spec = self.registry.lookup(m)
        return spec is not None and not spec.opaque and any(
            self._param_name.get(id(t)) in self.graph.param_values
            for t in m._parameters.values() if t is not None)

    # ---- plans --------------------------------------------------------------------------------
    @without_gc
    def get_pruning_plan(self, module: nn.Module | str, pruning_fn: Callable | str | None = None,
                         idxs: Iterable[int] = (), *, allow_output_change: bool | None = None,
                         strict: bool = True, policy: str = "cheapest") -> PruningPlan:
        """Plan the removal of channels ``idxs`` of ``module`` and of everything coupled to them.

        ``pruning_fn`` picks the side as in the classic API: an output-side function
        (``tp.prune_conv``, ``tp.prune_linear``, ...) prunes the layer's output channels, an
        input-side one (``tp.prune_related_conv``, ...) its input channels. ``"out"`` and
        ``"in"`` work too. ``idxs=[]`` gives a plan that changes nothing. A request whose plan
        changes the model's output shape (a classifier, a segmentation head, a transformer's
        hidden size) is obeyed with a warning, as in the classic API;
        ``allow_output_change=False`` refuses it instead (``True`` allows it silently). With
        ``strict=False`` an invalid plan is returned with its ``problems`` instead of raising
        (the explorer shows them). ``policy`` says how indices that are not whole slices of a
        reshape are widened: ``"cheapest"`` (fewest extra channels), ``"heads"`` (whole
        attention heads) or ``"dims"`` (the same slots per head).
        """
        from .request import empty_plan, layer_width, output_changes, warn_output_change
        self._require_built()
        self.check_fresh()
        side = _side_of(pruning_fn)
        name = self.module_name(module)
        m = self.submodule(name)
        fn_name = _fn_name(pruning_fn, self.registry.lookup(m), m, side)
        try:
            root = self.root_vertex(name, side)
            size = self.dg.size[root]
        except UnsupportedOperationError:
            # a size-1 dim has no vertex: a one-channel layer is validated from its own width
            if name not in self.graph.module_nodes or layer_width(self.registry, m, side) != 1:
                raise
            root, size = None, 1
        where = f"{name} ({type(m).__name__}, {size} {side}put channels)"
        checked = validate_indices(idxs, size, where)
        if not checked:
            return empty_plan(self, name, side, fn_name, m)
        seeds = {root: np.asarray(checked, dtype=im.INDEX)}
        explicit = allow_output_change is None
        cl = self.close(seeds, True if explicit else allow_output_change, policy)
        plan = self.plan_from_seeds(seeds, name, side, fn_name, strict=strict, policy=policy,
                                    closure=cl)
        if explicit and not plan.problems:
            warn_output_change(name, output_changes(self.dg, cl))
        return plan

    @without_gc
    def groups(self, ignored_layers: Iterable = (), policy: str = "heads") -> list:
        """Every group of coupled layers, in graph order: its root layer, kind ("residual",
        "heads" or "channels"), channel count, prunable units and member layers — or the
        reason it cannot be pruned (``group.problem``)."""
        from .groups import find_groups
        self._require_built()
        return find_groups(self, ignored_layers, policy)

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
        return PlanBuilder(self, cl, root, side, trigger).build(
            [int(i) for v in seeds for i in seeds[v]][:100000], groups)

    # ---- execution ----------------------------------------------------------------------------
    @without_gc
    def execute(self, plan: PruningPlan, verify: bool | str = "auto", *,
                _traced_now: bool = False) -> int:
        """Exec a plan transactionally. After the surgery one forward on the stored example
        inputs (heavy ops shape-only, see ``verify.py``) checks that the model runs and that
        its outputs have the predicted shapes; on failure the model is restored bit for bit
        and ``PlanExecutionError`` names the layer. ``verify=False`` skips that check (the
        caller takes the risk). The graph then follows the model: updated in place from the
        plan, or traced again on next use where Python-level sizes changed."""
        from .execution import Snapshot, apply_actions, record_history
        from .verify import check_model_runs, leaf_shortcuts, value_sized
        self._require_built()
        if plan.executed:
            raise PlanExecutionError("this plan was already executed; compute a new plan")
        if plan._version != self.version:
            raise StaleGraphError("this plan was computed before the model last changed; "
                                  "compute it again with DG.get_pruning_plan(...)")
        if plan.problems:
            raise _as_error(plan.problems[0], plan.root, plan.side, {}, self)
        if self._stale:  # another plan changed the model since this one was computed
            raise StaleGraphError("this plan was computed before the model last changed; "
                                  "compute it again with DG.get_pruning_plan(...)")
        if not _traced_now:  # (prune_model traced the model itself, and only read it since)
            self.check_fresh()
        snap = Snapshot(self.model, plan.actions, self, self._modules_by_name)
        traced = (self._graph, self._dg, self.version, self._param_name, self._owners)
        new_shapes = getattr(plan, "_new_shapes", {})
        try:
            apply_actions(self.model, plan.actions, self.registry, self._modules_by_name)
            if verify:
                graph, a = self._graph, plan.actions
                sized = value_sized(graph)  # (a detector's box count): not predicted
                expected = [None if v in sized else new_shapes.get(v, graph.values[v].shape)
                            for v in graph.outputs]
                changed = {name.rpartition(".")[0] for name, _d, _i in a.cuts} | set(a.sync) | {
                    m for m, _a, _n in a.counts} | {m for m, _s in a.opaque} | {
                    m for m, _a, _o, _n in a.ints}
                shortcuts = leaf_shortcuts(graph, self.submodule, new_shapes, changed)
                check_model_runs(self.model, self.example_inputs, expected, shortcuts,
                                 python_state=graph.writes_state,
                                 modules=None if a.opaque else self._module_list)
        except Exception as exc:
            snap.restore()
            # the model is bit-identical to the one traced before: keep that graph, so plans
            # and groups computed on it (prune_model's retries) stay valid
            self._graph, self._dg, self.version, self._param_name, self._owners = traced
            self._stale, self._pending = False, None
            where = exc.args[0] if isinstance(exc, TracingError) and exc.args else repr(exc)
            raise PlanExecutionError(
                f"executing the plan rooted at {plan.root} failed and the model was restored "
                f"unchanged: {where}") from exc
        self._follow(plan, new_shapes)
        if plan.actions.opaque:  # an opaque layer's own code may have replaced its children
            every = named_modules(self.model, remove_duplicate=False)
            self._modules_by_name = dict(every)
            self._module_list = _first_names(every)
        # exec changed the shapes of the tensors it cut, and nothing else a plan can see
        # (opaque layers may replace their own tensors: those are watched afresh)
        self._watch = None if plan.actions.opaque or self._watch is None else \
            self._watch.reshaped()
        plan.executed = True
        plan._snapshot = snap
        plan._traced = traced
        record_history(self.model, plan)
        self._executed.append(plan)
        return plan.params_removed

    def _follow(self, plan: PruningPlan, new_shapes) -> None:
        """The graph no longer describes the model: it is brought up to date on next use,
        projected from this plan where that is exact, else traced again."""
        self.version += 1  # plans of the old graph are stale from now on
        self._stale = True
        closure = getattr(plan, "_closure", None)
        self._pending = None if closure is None else (
            closure, new_shapes, plan.actions, getattr(plan, "suspect_nodes", ()))

    def _catch_up(self) -> None:
        from .graph_update import project
        pending, self._pending = self._pending, None
        updated = None
        if pending is not None:
            try:
                updated = project(self._graph, self._dg, *pending)
            except Exception:  # never trust a half-done projection: trace again instead
                updated = None
        if updated is None:
            version = self.version
            self._trace()
            self.version = version  # nothing changed since the exec that bumped it
        else:
            self._graph, self._dg = updated
            self._stale = False

    def undo(self, plan: PruningPlan | None = None) -> PruningPlan:
        """Undo the last executed plan (or check that ``plan`` is it): the model gets back its
        exact previous tensors and attributes, and the graph it had then."""
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
        graph, dg, _version, self._param_name, self._owners = last._traced
        self._graph, self._dg, self._stale, self._pending = graph, dg, False, None
        self._watch = None
        self.version += 1  # plans made after the exec no longer fit
        return last


class _Watch:
    """The model's structure and tensors as they are now: each module's child, parameter and
    buffer dicts (with their sizes), which object each entry holds, and each tensor's shape.
    Comparing takes identity checks only; the fingerprint explains a difference."""

    __slots__ = ("sizes", "items", "shapes")

    def __init__(self, sizes, items, shapes):
        self.sizes, self.items, self.shapes = sizes, items, shapes

    def reshaped(self) -> "_Watch":
        """The same watch after exec changed tensor shapes (and nothing else)."""
        return _Watch(self.sizes, self.items, [(t, t.shape) for t, _s in self.shapes])


def _tensor_watch(modules: list[tuple[str, nn.Module]]) -> _Watch:
    sizes, items, shapes = [], [], []
    for _name, m in modules:
        for d in (m._modules, m._parameters, m._buffers):
            sizes.append((d, len(d)))
            for k, v in d.items():
                items.append((d, k, v))
        for d in (m._parameters, m._buffers):
            for v in d.values():
                if v is not None:
                    shapes.append((v, v.shape))
    return _Watch(sizes, items, shapes)


def _first_names(every: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """``named_modules()`` (each module once, by its first name) from the walk that lists
    shared modules under every name: the same pairs in the same order."""
    seen: set[int] = set()
    out = []
    for name, m in every:
        if id(m) not in seen:
            seen.add(id(m))
            out.append((name, m))
    return out


def _unchanged(watch: _Watch) -> bool:
    for d, n in watch.sizes:
        if len(d) != n:
            return False
    for d, k, v in watch.items:
        if d.get(k) is not v:
            return False
    for t, shape in watch.shapes:
        if t.shape != shape:
            return False
    return True


def _side_of(pruning_fn) -> str:
    if pruning_fn is None:
        return "out"
    if isinstance(pruning_fn, str):
        if pruning_fn in ("out", "in"):
            return pruning_fn
        name = pruning_fn
    else:
        side = getattr(pruning_fn, "side", None)  # 0.2.8 pruner objects say it
        if side in ("out", "in"):
            return side
        name = getattr(pruning_fn, "__name__", "")
    return "in" if name.startswith("prune_related") or name.endswith(
        ("_in_channel", "_in_channels")) else "out"


def _fn_name(pruning_fn, spec: LayerSpec | None, m: nn.Module, side: str) -> str:
    if pruning_fn is not None and not isinstance(pruning_fn, str):
        return getattr(pruning_fn, "__name__", str(pruning_fn))
    return _classic_fn(spec, m, side)


def _examples(model: nn.Module) -> str:
    names = [n for n, _ in model.named_modules() if n][:3]
    return ", ".join(repr(n) for n in names)


def _as_error(problem: Problem, root: str, side: str, seeds, G: DependencyGraph) -> PruningError:
    msg = f"cannot prune {root} ({side}put channels): {problem.message}"
    if problem.kind == "all-channels":
        return PruneAllChannelsError(msg)
    return UnsupportedOperationError(msg)
