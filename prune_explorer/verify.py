"""After exec: does the pruned model still run, and do its outputs have the shapes the plan
predicted? One forward on the stored example inputs answers both.

The forward runs with its heavy ops shape-only (``shape_only.py``: convolutions and matmuls
return placeholders of the exact layout, everything else runs for real), so the check costs
a fraction of a forward. PyTorch's own leaf layers need not run at all: one the plan does not
touch (same input shape, same tensors) returns a placeholder of the output shape it was
traced with, and one it changed does the same with the shapes the plan predicts, if its shape
rule (``leaf_shapes``) says that its tensors and attributes after the surgery turn the one
into the other. Each checks that it got the input shape it expects. A plan on one layer then
costs little more than the Python of the model's forward, and a whole-model plan little more
than the ops between the layers. Where values could steer the model's code, or anything fails, it runs
again for real: a failure is only reported when the real forward fails too. The model is left
as it was found: buffers (BatchNorm statistics), the RNG state and tensors a forward keeps on
its modules are restored, and ``torch.no_grad`` keeps autograd out of it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import shape_only as _so
from .errors import TracingError
from .leaf_shapes import rule_for
from .module_walk import named_modules
from .forward_io import iter_tensors, kept_state, normalize_inputs


class VerificationError(TracingError):
    """The model failed (or produced unexpected shapes) after a plan's surgery. ``scope`` is
    the innermost module that was running, ``""`` for the model's own forward."""

    def __init__(self, message: str, scope: str = ""):
        super().__init__(message)
        self.scope = scope


class _Where:
    """The modules running right now, innermost last (global hooks: two registrations)."""

    def __init__(self, modules):
        self.names = {id(m): n for n, m in modules}
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def pre(self, module, args):
        name = self.names.get(id(module))
        if name is not None:
            self.stack.append(name)

    def post(self, module, args, output):
        name = self.names.get(id(module))
        if name is not None and self.stack and self.stack[-1] == name:
            self.stack.pop()


class _Mismatch(Exception):
    """A shortcut layer got another input than it was traced with: ask the real forward."""


class _Shortcut:
    """The forward of a leaf layer that need not run: the output shape of its traced call,
    or the one the plan predicts for it, nothing computed."""

    def __init__(self, calls: list, run: "_so.Run"):
        self.calls = calls  # per call: (input shape, output shape, dtype)
        self.k = 0
        self.run = run

    def __call__(self, *args, **kwargs):
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) or \
                self.k >= len(self.calls):
            raise _Mismatch
        shape_in, shape_out, dtype = self.calls[self.k]
        self.k += 1
        if tuple(args[0].shape) != shape_in:
            raise _Mismatch
        with torch._C._DisableTorchDispatch():
            out = torch.empty(shape_out, dtype=dtype, device=args[0].device)
        self.run.mark(out)
        return out


def leaf_shortcuts(graph, submodule, changed_values, changed_modules) -> dict:
    """module -> its calls (input shape, output shape, dtype), for PyTorch's own leaf layers
    with one tensor in and one out that need not run: those a plan leaves as they were (the
    traced shapes), and those it changed whose shape rule (``leaf_shapes``), asked *after*
    the surgery, turns the input shape the plan predicts into the output shape it predicts.
    ``changed_values``: value -> new shape."""
    from .graph import ACTIVATION, INPUT
    out = {}
    for mname, nids in graph.module_nodes.items():
        m = submodule(mname)
        if m._modules or not type(m).__module__.startswith("torch.nn.modules") or \
                "forward" in m.__dict__:
            continue
        changed = mname in changed_modules
        rule = rule_for(m)
        if changed and rule is None:
            continue
        calls = []
        for nid in nids:
            node = graph.nodes[nid]
            if node.opaque:
                break
            acts = [v for v in node.inputs if graph.values[v].kind in (ACTIVATION, INPUT)]
            if len(acts) != 1 or len(node.outputs) != 1:
                break
            if not changed and any(v in changed_values for v in node.inputs + node.outputs):
                if rule is None:
                    break
                changed = True  # its input or output changes: the rule speaks for it
            o = graph.values[node.outputs[0]]
            shape_in = tuple(changed_values.get(acts[0], graph.values[acts[0]].shape))
            shape_out = tuple(changed_values.get(o.id, o.shape))
            calls.append((shape_in, shape_out, getattr(torch, o.dtype)))
        else:
            # a changed layer that does not fit the prediction runs (and fails) for real
            if not changed or all(rule(m, i) == o for i, o, _t in calls):
                out[m] = calls
    return out


def value_sized(graph) -> frozenset:
    """Values whose size the model's *values* decide: outputs of ``nonzero``, boolean-mask
    indexing, ``unique`` and the like (see ``shape_only.DATA_DEPENDENT``), and everything
    computed from them or made with a size read from them (``torch.zeros(len(boxes), ...)``). A detector's boxes after score thresholding and NMS are such values:
    pruning changes the scores, so their count after a plan is not a prediction the check can
    hold the model to (it still has to run and return as many tensors)."""
    out = graph.memo.get("value_sized")
    if out is not None:
        return out
    from .graph import Ref
    if not any(c.packet in _SIZE_FROM_VALUES for node in graph.nodes.values()
               for c in node.calls):
        # every size below starts at one of those calls: without them there is none
        out = graph.memo["value_sized"] = frozenset()
        return out
    dtypes = {vid: v.dtype for vid, v in graph.values.items()}

    def sizes_from_values(call) -> bool:
        if not any(o is not None for o in call.outputs):
            return False  # .item(), ``if x.any()``: control flow, not a tensor's size
        packet = call.packet
        if packet in _so.DATA_DEPENDENT:
            return True
        if packet == "index" and len(call.args) > 1:
            return any(isinstance(i, Ref) and dtypes.get(i.value) in ("bool", "uint8")
                       for i in call.args[1] or ())
        return packet == "repeat_interleave" and len(call.args) == 1 and \
            isinstance(call.args[0], Ref)

    def reads_sized(srcs) -> bool:  # an int read from such a value's shape (len(boxes))
        return any(s is not None and s[0] in sized for s in srcs)

    made_by = {o: c for node in graph.nodes.values() for c in node.calls for o in c.outputs
               if o is not None}

    def written_through_views(v) -> list:  # v and the tensors it is a view of
        chain = [v]
        while (c := made_by.get(v)) is not None and _alias(c.op) == "view" and c.args and \
                isinstance(c.args[0], Ref) and c.args[0].value not in chain:
            v = c.args[0].value
            chain.append(v)
        return chain

    sized: set[int] = set()
    changed = True
    while changed:  # nodes are in run order: one pass, a second to confirm
        changed = False
        for node in graph.nodes.values():
            if node.outputs and not sized.issuperset(node.outputs) and (
                    any(v in sized for v in node.inputs) or reads_sized(node.int_sources) or
                    any(sizes_from_values(c) or reads_sized(c.int_sources)
                        for c in node.calls)):
                sized.update(node.outputs)
                changed = True
            for c in node.calls:  # im_mask[y0:y1] = mask: a write into a view of im_mask
                if c.args and isinstance(c.args[0], Ref) and _alias(c.op) == "write" and \
                        any(v in sized for v in c.tensor_args()):
                    new = [v for v in written_through_views(c.args[0].value) if v not in sized]
                    if new:
                        sized.update(new)
                        changed = True
    out = graph.memo["value_sized"] = frozenset(sized)
    return out


# the packets ``sizes_from_values`` can answer yes for
_SIZE_FROM_VALUES = _so.DATA_DEPENDENT | {"index", "repeat_interleave"}

_ALIAS: dict[str, str | None] = {}


def _alias(name: str) -> str | None:
    """``"view"`` for an ATen op that returns a view of its first argument, ``"write"`` for
    one that writes into it in place (``aten.copy_.default``), else None (from the schema)."""
    if name not in _ALIAS:
        kind = None
        try:
            ns, packet, overload = name.split(".")
            schema = getattr(getattr(getattr(torch.ops, ns), packet), overload)._schema
            first = schema.arguments[0].alias_info if schema.arguments else None
            if first is not None and first.is_write:
                kind = "write"
            elif first is not None and schema.returns and \
                    schema.returns[0].alias_info is not None:
                kind = "view"
        except (AttributeError, ValueError, RuntimeError):
            pass
        _ALIAS[name] = kind
    return _ALIAS[name]


def _forward(model: nn.Module, args, kwargs, modules, shape_only: bool, shortcuts=None,
             python_state: bool = True):
    """(output shapes, error, scope) of one forward."""
    where = _Where(modules)
    mode = _so.ShapeOnlyMode() if shape_only else None
    handles = [] if shape_only else [
        nn.modules.module.register_module_forward_pre_hook(where.pre),
        nn.modules.module.register_module_forward_hook(where.post)]
    swapped = []
    try:
        if mode is not None:  # swapped before kept_state, which would drop them as new
            for m, calls in (shortcuts or {}).items():
                m.forward = _Shortcut(calls, mode.run)
                swapped.append(m)
        # (placeholders never write: the buffers are copied only before an op that does)
        with kept_state(model, modules, python_state,
                        shape_only_run=mode.run if mode is not None else None), \
                torch.no_grad():
            if mode is not None:
                with mode:
                    output = model(*args, **kwargs)
            else:
                output = model(*args, **kwargs)
    except (Exception, _so.NeedsValues) as exc:
        return None, exc, where.stack[-1] if where.stack else ""
    finally:
        for m in swapped:
            m.__dict__.pop("forward", None)
        for h in handles:
            h.remove()
    if mode is not None and mode.run.needs_values is not None:
        return None, _so.NeedsValues(mode.run.needs_values), ""
    shapes, seen = [], set()
    for t in iter_tensors(output):
        if id(t) not in seen:  # the trace lists a tensor returned twice once
            seen.add(id(t))
            shapes.append(tuple(t.shape))
    return shapes, None, ""


def check_model_runs(model: nn.Module, example_inputs: Any,
                     expected: Sequence[tuple[int, ...] | None] | None = None,
                     shortcuts: dict | None = None, python_state: bool = True,
                     modules: list | None = None) -> None:
    """Raise ``VerificationError`` unless ``model(example_inputs)`` runs and returns tensors of
    the ``expected`` shapes (``None`` entries and ``expected=None`` are not checked).
    ``shortcuts`` (see ``leaf_shortcuts``) are layers that need not run. ``python_state=False``
    does not save and restore the modules' Python state (``Graph.writes_state``: the traced
    forward wrote none). ``modules``: ``named_modules(model)`` as a list, when the caller
    keeps that table."""
    args, kwargs = normalize_inputs(example_inputs)
    if modules is None:
        modules = named_modules(model)
    shapes, exc, scope = _forward(model, args, kwargs, modules, True, shortcuts, python_state)
    if exc is not None or not _matches(shapes, expected):
        # placeholders can mislead a forward that reads values: only the real one decides
        shapes, exc, scope = _forward(model, args, kwargs, modules, False,
                                      python_state=python_state)
    if exc is not None:
        raise VerificationError(_failure_message(model, scope, exc), scope) from exc
    if not _matches(shapes, expected):
        raise VerificationError("after the surgery " + _mismatch_message(shapes, expected) +
                                "; the plan's prediction is wrong for this model")


def _failure_message(model: nn.Module, scope: str, exc: BaseException) -> str:
    if scope:
        try:
            where = f"{scope} ({type(model.get_submodule(scope)).__name__})"
        except AttributeError:
            where = scope
    else:
        where = "the model's own forward"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"after the surgery the model no longer runs on its example inputs: {where} "
            f"failed with {type(exc).__name__}: {first}. The plan does not fit this code "
            f"(a size it reads, or an op prune_explorer maps wrongly); add {scope or 'the layer'}"
            f" to ignored_layers, or plan on another layer")


def _matches(shapes, expected) -> bool:
    if expected is None:
        return True
    if shapes is None or len(shapes) != len(expected):
        return False
    return all(e is None or tuple(s) == tuple(e) for s, e in zip(shapes, expected))


def _mismatch_message(shapes, expected) -> str:
    if len(shapes) != len(expected):
        return (f"the model now returns {len(shapes)} tensors where it returned "
                f"{len(expected)}")
    for i, (s, e) in enumerate(zip(shapes, expected)):
        if e is not None and tuple(s) != tuple(e):
            return (f"output {i} of the model now has shape {list(s)} where the plan "
                    f"predicted {list(e)}")
    return "the model's outputs changed"
