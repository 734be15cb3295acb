"""trace(model, example_inputs) -> Graph, from one forward pass.

Every ATen op is recorded with its exact arguments (split sizes, view targets, dims) through a
``TorchDispatchMode``; a ``TorchFunctionMode`` names them after the Python call the user wrote
(``flatten``, ``chunk``, ``matmul``), and forward hooks group them into layer nodes. Nothing is
guessed from autograd: the index maps later read the recorded arguments and shapes. The heavy
ops only produce shapes (``shape_only.py``) unless the model's code reads their values; then
the forward is traced again with real values, so the graph is the same either way.

The trace runs under ``torch.no_grad()``, leaves train/eval mode alone (so branches that only
run in training are traced when the model is in training), restores buffers (BatchNorm running
statistics) and the RNG state afterwards, and removes its hooks in ``finally``.

The recorder and the two interception modes live in ``recorder.py``; what tracing shares
with the check after exec (inputs, fingerprint, kept state) in ``forward_io.py``.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from typing import Any, Callable

import torch
from torch import nn

from . import shape_only as _so
from .errors import TracingError
from .traced_ints import SHAPE_CHECKS
from .graph import BUFFER, INPUT, NODE_INPUT, NODE_LAYER, NODE_OUTPUT, PARAM, Graph, Node
from .module_walk import named_modules
from .outputs import fixed_tensors, tensor_paths
from .recorder import _DispatchRecorder, _FunctionNamer, _Recorder
# what other modules import from here (the helpers around a forward live in forward_io)
from .forward_io import (  # noqa: F401
    KeptState,
    _check_devices,
    describe_inputs,
    gc_paused,
    iter_tensors,
    kept_state,
    model_fingerprint,
    normalize_inputs,
    tracing_message,
    without_gc,
)


def primary_tensors(output: Any) -> list[torch.Tensor]:
    """The outputs whose shape a pruned model must keep: everything in a tensor, tuple or
    list; in a dict-like or dataclass output (a Hugging Face ModelOutput) only the first
    entry that holds tensors (logits), so auxiliary entries such as hidden states or
    ``encoder_last_hidden_state`` may shrink with the model."""
    if isinstance(output, dict):
        for v in output.values():
            found = list(iter_tensors(v))
            if found:
                return found
        return []
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        for f in dataclasses.fields(output):
            found = list(iter_tensors(getattr(output, f.name, None)))
            if found:
                return found
        return []
    return list(iter_tensors(output))


def trace(model: nn.Module, example_inputs: Any,
          is_opaque: Callable[[nn.Module], bool] = lambda m: False,
          fixed_outputs="primary", shape_only: bool = True,
          is_known: Callable[[nn.Module], bool] | None = None) -> Graph:
    """Run ``model(example_inputs)`` once and record it as a Graph.

    ``fixed_outputs``: which outputs keep their shape: ``"primary"`` (see
    ``primary_tensors``), ``"all"``, or a callable ``output -> the part to keep`` (see
    ``outputs``). With ``shape_only`` the heavy ops (convolutions, matmuls, norms) only
    produce shapes; where values could steer the run (``if x.sum() > 0``, ``nonzero``), or
    anything fails, it is traced again with real values, so the graph is the same either way.
    ``is_known`` names the layers whose own sizes exec re-derives: the ints and shape reads
    inside them are not recorded."""
    args, kwargs = normalize_inputs(example_inputs)
    _check_devices(model, args, kwargs, example_inputs)
    modules = named_modules(model)
    if shape_only:
        try:
            graph, rec = _trace_once(model, example_inputs, args, kwargs, modules, is_opaque,
                                     fixed_outputs, True, is_known)
            if rec.so.needs_values is None:
                return graph
        except (_so.NeedsValues, TracingError):
            pass
    return _trace_once(model, example_inputs, args, kwargs, modules, is_opaque, fixed_outputs,
                       False, is_known)[0]


def _trace_once(model, example_inputs, args, kwargs, modules, is_opaque, fixed_outputs,
                shape_only: bool, is_known=None):
    rec = _Recorder(model, is_opaque, modules, shape_only, is_known)

    # inputs
    input_ids: list[int] = []
    if len(args) == 1 and not kwargs:
        names = ["input"]
    else:
        names = [f"input_{i}" for i in range(len(args))]
    for name, a in zip(names, args):
        for j, t in enumerate(iter_tensors(a)):
            nid = rec.unique_id(name if j == 0 else f"{name}_{j}")
            v = rec.new_value(t, INPUT, nid, producer=nid)
            input_ids.append(v)
            rec.nodes[nid] = Node(nid, NODE_INPUT, "Input", "", outputs=(v,))
    for key, a in kwargs.items():
        for j, t in enumerate(iter_tensors(a)):
            nid = rec.unique_id(key if j == 0 else f"{key}_{j}")
            v = rec.new_value(t, INPUT, nid, producer=nid)
            input_ids.append(v)
            rec.nodes[nid] = Node(nid, NODE_INPUT, "Input", "", outputs=(v,))

    try:
        with gc_paused():
            return _record(model, example_inputs, args, kwargs, modules, rec, input_ids,
                           fixed_outputs), rec
    finally:
        rec.tensor_ids.clear()
        rec.namer = None  # it points back at the recorder: no cycle left for the collector


def _record(model, example_inputs, args, kwargs, modules, rec: "_Recorder", input_ids,
            fixed_outputs) -> Graph:
    handles = []
    checks = SHAPE_CHECKS.set(rec.note_check)
    try:
        # global hooks: two registrations instead of two per module
        handles.append(nn.modules.module.register_module_forward_pre_hook(rec.pre_hook))
        handles.append(nn.modules.module.register_module_forward_hook(rec.post_hook,
                                                                      with_kwargs=True))
        with ExitStack() as stack:
            # (a shape-only trace of an eval model copies no buffer: nothing writes one)
            kept = stack.enter_context(kept_state(model, modules, shape_only_run=rec.so))
            stack.enter_context(torch.no_grad())
            rec.namer = stack.enter_context(_FunctionNamer(rec))
            stack.enter_context(_DispatchRecorder(rec))
            try:
                try:
                    output = model(*args, **kwargs)
                finally:
                    rec.namer.step_back()  # a layer that raised never reached its post-hook
            except Exception as exc:
                where = rec.frames[-1].module if rec.frames and rec.frames[-1].module else (
                    rec.scope or "the model's forward")
                err = TracingError(tracing_message(model, where, exc, example_inputs))
                err.scope = where if where != "the model's forward" else ""
                raise err from exc
    finally:
        SHAPE_CHECKS.reset(checks)
        for h in handles:
            h.remove()

    out_ids = []
    output_paths: dict[int, str] = {}
    for path, t in tensor_paths(output):
        vid = rec.value_of(t)
        if vid not in out_ids:
            out_ids.append(vid)
            output_paths[vid] = path
    rec.nodes["output"] = Node("output", NODE_OUTPUT, "Output", "", inputs=tuple(out_ids))

    primary = None
    if fixed_outputs != "all":
        primary = tuple(dict.fromkeys(v for v in (rec.known(t) for t in fixed_tensors(
            output, fixed_outputs)) if v is not None))
    called = set(rec.module_calls)
    uncalled = tuple(
        n for n, m in modules
        if n and rec.leaf_kind.get(id(m)) in (NODE_LAYER, "opaque") and n not in called
        and not any(n.startswith(c + ".") for c in called))
    param_values = {v.name: v.id for v in rec.values.values() if v.kind in (PARAM, BUFFER)}
    graph = Graph(
        nodes=_prune_external_outputs(rec.nodes, rec.values),
        values=rec.values,
        inputs=tuple(input_ids),
        outputs=tuple(out_ids),
        module_nodes={k: tuple(v) for k, v in rec.module_calls.items()},
        param_values=param_values,
        uncalled_modules=uncalled,
        fingerprint=model_fingerprint(model, modules),
        primary_outputs=primary,
        output_paths=output_paths,
        shape_reads=frozenset(rec.shape_reads),
        shape_checks=tuple(sorted(rec.shape_checks, key=str)),
        writes_state=bool(kept.python_changed),
    )
    return graph


def _prune_external_outputs(nodes: dict[str, Node], values) -> dict[str, Node]:
    """Keep, as a node's outputs, only the values read by another node (or the model output)."""
    read_elsewhere: set[int] = set()
    for n in nodes.values():
        nid = n.id
        for v in n.inputs:
            if values[v].producer != nid:
                read_elsewhere.add(v)
    out = {}
    for nid, n in nodes.items():
        if n.kind in (NODE_INPUT, NODE_OUTPUT):
            out[nid] = n
            continue
        ext = tuple([v for v in n.outputs if v in read_elsewhere])
        out[nid] = dataclasses.replace(n, outputs=ext) if ext != n.outputs else n
    return out
