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
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
import weakref
from contextlib import ExitStack, contextmanager
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from . import shape_only as _so
from .errors import TracingError
from .traced_ints import SHAPE_CHECKS, TracedInt, provenance_of
from .graph import (
    ACTIVATION,
    BUFFER,
    CONSTANT,
    INPUT,
    NODE_INPUT,
    NODE_LAYER,
    NODE_OP,
    NODE_OUTPUT,
    PARAM,
    Call,
    Graph,
    Node,
    Ref,
    Value,
)

from .module_walk import named_modules
from .module_state import restore_python_state, runs_torch_forward, save_python_state
from .outputs import fixed_tensors, tensor_paths

# Python-level functions that only read metadata: never worth a frame.
_METADATA_FUNCS = {"__get__", "size", "dim", "numel", "is_contiguous", "_set_grad_enabled", "stride",
                   "__len__", "data_ptr", "element_size", "is_floating_point", "is_complex",
                   "__format__", "__repr__", "__bool__", "__index__", "__int__", "__float__",
                   "__hash__", "get_device", "untyped_storage", "storage_offset", "has_names",
                   "is_nonzero", "__iter__", "__reversed__", "_is_view", "__dlpack__"}

_DUNDER_NAMES = {"__add__": "add", "__radd__": "add", "__iadd__": "add_", "__sub__": "sub",
                 "__rsub__": "sub", "__isub__": "sub_", "__mul__": "mul", "__rmul__": "mul",
                 "__imul__": "mul_", "__truediv__": "div", "__rtruediv__": "div",
                 "__itruediv__": "div_", "__matmul__": "matmul", "__rmatmul__": "matmul",
                 "__getitem__": "getitem", "__setitem__": "setitem", "__neg__": "neg",
                 "__pow__": "pow", "__rpow__": "pow", "__floordiv__": "floordiv",
                 "__mod__": "mod", "__and__": "and", "__or__": "or", "__eq__": "eq",
                 "__ne__": "ne", "__lt__": "lt", "__le__": "le", "__gt__": "gt", "__ge__": "ge",
                 "__invert__": "invert", "__abs__": "abs"}


def normalize_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """A tensor, a tuple/list of positional args, or a dict of keyword args -> (args, kwargs)."""
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def iter_tensors(obj: Any, _depth: int = 0):
    """Tensors inside nested tuples/lists/dicts/dataclasses (HF ModelOutput is a dict)."""
    if _depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_tensors(v, _depth + 1)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from iter_tensors(v, _depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from iter_tensors(getattr(obj, f.name, None), _depth + 1)


def describe_inputs(example_inputs: Any) -> str:
    args, kwargs = normalize_inputs(example_inputs)

    def one(x):
        if isinstance(x, torch.Tensor):
            return f"Tensor({str(x.dtype).replace('torch.', '')}, {list(x.shape)}, {x.device})"
        return type(x).__name__

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) or "nothing"


def model_fingerprint(model: nn.Module, modules=None) -> tuple:
    """Shapes of every parameter and buffer: cheap, and changes whenever a layer is resized."""
    seen: set[int] = set()
    out = []
    for mname, m in (modules if modules is not None else model.named_modules()):
        prefix = mname + "." if mname else ""
        for n, t in itertools.chain(m._parameters.items(), m._buffers.items()):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append((prefix + n, tuple(t.shape)))
    return tuple(out)


def _tensor_names(modules) -> tuple[dict[int, str], dict[int, str]]:
    """id -> first qualified name of every parameter and buffer, in one pass."""
    params: dict[int, str] = {}
    buffers: dict[int, str] = {}
    for mname, m in modules:
        prefix = mname + "." if mname else ""
        for n, p in m._parameters.items():
            if p is not None and id(p) not in params:
                params[id(p)] = prefix + n
        for n, b in m._buffers.items():
            if b is not None and id(b) not in buffers:
                buffers[id(b)] = prefix + n
    return params, buffers


_DTYPE_NAMES: dict = {}


def _dtype_of(t: torch.Tensor) -> str:
    name = _DTYPE_NAMES.get(t.dtype)
    if name is None:
        name = _DTYPE_NAMES[t.dtype] = str(t.dtype).replace("torch.", "")
    return name


class _Frame:
    """A node under construction: a module call, or a Python-level torch call."""

    __slots__ = ("kind", "name", "type", "scope", "module", "calls", "produced", "inputs", "seen",
                 "node_id", "opaque", "fn_ints", "fn_srcs", "call_index", "arg_names")

    def __init__(self, kind, name, type_, scope, module=None, opaque=False, call_index=0):
        self.kind = kind  # "layer" | "op"
        self.name = name
        self.type = type_
        self.scope = scope
        self.module = module
        self.opaque = opaque
        self.calls: list[Call] = []
        self.produced: list[int] = []
        self.inputs: list[int] = []
        self.seen: set[int] = set()  # values already listed as inputs or produced
        self.node_id: str | None = None
        self.fn_ints: tuple = ()
        self.fn_srcs: tuple = ()
        self.call_index = call_index
        self.arg_names: list[str] = []


class _Recorder:
    def __init__(self, model: nn.Module, is_opaque: Callable[[nn.Module], bool],
                 modules: list[tuple[str, nn.Module]], shape_only: bool = False,
                 is_known: Callable[[nn.Module], bool] | None = None):
        self.model = model
        # heavy ops return placeholders (see shape_only.py); None: everything runs for real
        self.so = _so.Run() if shape_only else None
        self.module_names = {id(m): n for n, m in modules}
        self.param_names, self.buffer_names = _tensor_names(modules)
        self.is_opaque = is_opaque
        self.leaf_kind: dict[int, str | None] = {}
        # layers the registry prunes itself (conv, linear, norms): the Python ints and sizes
        # their forward passes to torch are the layer's own business, re-derived after exec
        self.known_leaves: set[int] = set()
        self.in_known_leaf = False
        # known layers that run torch's own forward (no subclass forward, no hooks of their
        # own): nothing inside them needs a Python-level name, so the function mode steps
        # aside while they run (``_FunctionNamer.step_aside``)
        self.plain_leaves: set[int] = set()
        self.namer: "_FunctionNamer | None" = None
        for name, m in modules:
            has_children = bool(m._modules)
            if is_opaque(m):
                self.leaf_kind[id(m)] = "opaque"
            elif not has_children:
                has_params = any(p is not None for p in m._parameters.values())
                self.leaf_kind[id(m)] = NODE_LAYER if has_params else NODE_OP
                if is_known is not None and is_known(m):
                    self.known_leaves.add(id(m))
                    if runs_torch_forward(m):
                        self.plain_leaves.add(id(m))
            else:
                self.leaf_kind[id(m)] = None
        self.values: dict[int, Value] = {}
        # id(tensor) -> (value id, weak reference or None): activations are not kept alive
        # (holding every activation of a forward costs page faults worth a third of it), so
        # an id is trusted only while its weak reference still points at the same tensor
        self.tensor_ids: dict[int, tuple[int, Any]] = {}
        self.nodes: dict[str, Node] = {}
        self.used_ids: set[str] = set()
        self.module_calls: dict[str, list[str]] = {}
        self.scope_stack: list[str] = []
        self.frames: list[_Frame] = []  # active grouping frames
        self.leaf_depth = 0
        self.opaque_depth = 0
        self.next_value = 0
        self.call_counts: dict[str, int] = {}
        self.fn_depth = 0
        self.error_scope: str | None = None
        self.py_ctx: tuple | None = None  # the outermost Python torch call running now
        from .metrics import MAC_OPS, call_macs  # metrics reads graphs; it needs no tracing
        self.mac_ops, self.call_macs = MAC_OPS, call_macs
        self.refs: dict[int, Ref] = {}  # one Ref per value: they are immutable
        self.shape_reads: set[tuple[int, int]] = set()  # (value, dim) sizes the code read
        self.shape_checks: set[tuple] = set()  # (module, value, dim, num, den) found equal

    # ---- values -------------------------------------------------------------------------
    def new_value(self, t: torch.Tensor, kind: str, name: str | None = None,
                  producer: str | None = None) -> int:
        vid = self.next_value
        self.next_value += 1
        self.values[vid] = Value(vid, tuple(t.shape), _dtype_of(t), kind, name, producer)
        self.tensor_ids[id(t)] = (vid, None if kind in _PERSISTENT else weakref.ref(t))
        return vid

    def known(self, t: torch.Tensor) -> int | None:
        """The value id of a tensor seen before, if it is still that tensor."""
        e = self.tensor_ids.get(id(t))
        if e is not None and (e[1] is None or e[1]() is t):
            return e[0]
        return None

    def value_of(self, t: torch.Tensor) -> int:
        vid = self.known(t)
        if vid is not None:
            return vid
        if id(t) in self.param_names:
            return self.new_value(t, PARAM, self.param_names[id(t)])
        if id(t) in self.buffer_names:
            return self.new_value(t, BUFFER, self.buffer_names[id(t)])
        return self.new_value(t, CONSTANT)

    # ---- ids ----------------------------------------------------------------------------
    def unique_id(self, base: str) -> str:
        if base not in self.used_ids:
            self.used_ids.add(base)
            return base
        for k in itertools.count(1):
            cand = f"{base}_{k}"
            if cand not in self.used_ids:
                self.used_ids.add(cand)
                return cand
        raise AssertionError

    def note_check(self, provenance: tuple) -> None:
        """The code compared a traced size with an int and found them equal (``assert
        x.shape[1] == self.channels``): in the innermost module running now."""
        top = self.frames[-1] if self.frames else None
        where = top.module if top is not None and top.module else self.scope
        self.shape_checks.add((where,) + tuple(provenance))

    @property
    def scope(self) -> str:
        return self.scope_stack[-1] if self.scope_stack else ""

    # ---- module hooks -------------------------------------------------------------------
    def pre_hook(self, module, args):
        name = self.module_names.get(id(module))
        if name is None:
            return None
        kind = self.leaf_kind.get(id(module))
        if self.leaf_depth or self.opaque_depth:
            # inside a leaf: nested calls belong to it
            if kind is not None:
                self.leaf_depth += 1
            return None
        if kind is None:
            self.scope_stack.append(name)
            return None
        k = self.call_counts.get(name, 0)
        self.call_counts[name] = k + 1
        node_id = self.unique_id(name if k == 0 else f"{name}:{k}")
        frame = _Frame(NODE_LAYER if kind in (NODE_LAYER, "opaque") else NODE_OP, name,
                       type(module).__name__, self.scope, module=name,
                       opaque=(kind == "opaque"), call_index=k)
        frame.node_id = node_id
        self.in_known_leaf = id(module) in self.known_leaves
        if self.namer is not None and id(module) in self.plain_leaves and \
                not module._forward_pre_hooks and not module._forward_hooks:
            self.namer.step_aside()
        self.module_calls.setdefault(name, []).append(node_id)
        if frame.opaque:  # its inputs are read in post_hook, which also sees kwargs
            self.opaque_depth += 1
        self.leaf_depth += 1
        self.frames.append(frame)
        return None

    def post_hook(self, module, args, kwargs, output):
        name = self.module_names.get(id(module))
        if name is None:
            return None
        kind = self.leaf_kind.get(id(module))
        if kind is None:
            if not self.leaf_depth and self.scope_stack and self.scope_stack[-1] == name:
                self.scope_stack.pop()
            return None
        self.leaf_depth -= 1
        if self.leaf_depth:
            return None
        self.in_known_leaf = False
        if self.namer is not None:
            self.namer.step_back()
        frame = self.frames.pop()
        if frame.opaque:
            self.opaque_depth -= 1
            named = [(f"arg{i}", a) for i, a in enumerate(args)] + list((kwargs or {}).items())
            for arg_name, a in named:
                for t in iter_tensors(a):
                    v = self.value_of(t)
                    if v not in frame.seen:
                        frame.seen.add(v)
                        frame.inputs.append(v)
                        frame.arg_names.append(arg_name)
            for t in iter_tensors(output):
                frame.produced.append(self.new_value(t, ACTIVATION, producer=frame.node_id))
        elif not frame.calls:
            # nothing ran (Dropout in eval, Identity): no node, and not counted as a call
            calls = self.module_calls.get(frame.module, [])
            if calls and calls[-1] == frame.node_id:
                calls.pop()
                if not calls:
                    del self.module_calls[frame.module]
                self.call_counts[frame.module] -= 1
            self.used_ids.discard(frame.node_id)
            return None
        self.finish(frame)
        return None

    # ---- torch-level calls --------------------------------------------------------------
    def enter_fn(self, name: str) -> _Frame | None:
        if self.leaf_depth or self.fn_depth:
            return None
        if name in _METADATA_FUNCS:
            return None
        name = _DUNDER_NAMES.get(name, name)
        frame = _Frame(NODE_OP, name, name, self.scope)
        self.frames.append(frame)
        self.fn_depth += 1
        return frame

    def exit_fn(self, frame: _Frame) -> None:
        self.fn_depth -= 1
        popped = self.frames.pop()
        assert popped is frame
        if frame.calls:
            self.finish(frame)

    # ---- aten calls ---------------------------------------------------------------------
    def on_aten(self, func, args, kwargs, out) -> None:
        if self.opaque_depth:
            return
        frames = self.frames
        frame = frames[-1] if frames else None
        standalone = frame is None
        info = _so._OPS.get(id(func)) or _so.op(func)
        if standalone:
            frame = _Frame(NODE_OP, info.packet, info.packet, self.scope)
        if frame.node_id is None:
            base = f"{frame.scope}.{frame.name}" if frame.scope else frame.name
            frame.node_id = self.unique_id(base)
        # plain arguments and tensors seen before are the common case: handled inline
        rargs = []
        tensor_ids, refs, seen = self.tensor_ids, self.refs, frame.seen
        for a in args:
            t = type(a)
            if t in _PLAIN:
                rargs.append(a)
                continue
            if t is torch.Tensor or t is nn.Parameter:
                e = tensor_ids.get(id(a))
                if e is not None and (e[1] is None or e[1]() is a):
                    v = e[0]
                    if v not in seen:
                        seen.add(v)
                        frame.inputs.append(v)
                    ref = refs.get(v)
                    if ref is None:
                        ref = refs[v] = Ref(v)
                    rargs.append(ref)
                    continue
            elif t is list or t is tuple:
                # the dispatcher made this list for this call alone: kept as it is when
                # it holds only plain values (sizes, strides)
                for i in a:
                    if type(i) not in _PLAIN:
                        break
                else:
                    rargs.append(a)
                    continue
            elif t in _META_STR:
                rargs.append(_META_STR[t](a))
                continue
            rargs.append(self._ref(a, frame))
        rargs = tuple(rargs)
        if kwargs:
            rkwargs = {}
            for k, v in kwargs.items():
                t = type(v)
                if t in _PLAIN:
                    rkwargs[k] = v
                elif t in _META_STR:
                    rkwargs[k] = _META_STR[t](v)
                else:
                    rkwargs[k] = self._ref(v, frame)
        else:
            rkwargs = {}
        if type(out) is torch.Tensor or isinstance(out, torch.Tensor):
            # an in-place op returns its input: record a new version of that value
            vid = self.next_value
            self.next_value = vid + 1
            self.values[vid] = Value(vid, tuple(out.shape), _dtype_of(out), ACTIVATION, None,
                                     frame.node_id)
            tensor_ids[id(out)] = (vid, weakref.ref(out))
            frame.produced.append(vid)
            seen.add(vid)
            outs = (vid,)
        else:
            outs = []
            for t in _flat_tensors(out):
                vid = self.new_value(t, ACTIVATION, producer=frame.node_id)
                outs.append(vid)
                frame.produced.append(vid)
                frame.seen.add(vid)
            outs = tuple(outs)
        call = Call(info.name, rargs, rkwargs, outs, 0, self.py_ctx)
        if info.packet in self.mac_ops:  # from the recorded shapes: no FLOP counter runs
            call = Call(info.name, rargs, rkwargs, outs, self.call_macs(call, _Shapes(
                self.values)), self.py_ctx)
        frame.calls.append(call)
        if standalone:
            self.finish(frame)

    def _ref(self, x, frame: _Frame):
        """A recorded argument: tensors become ``Ref``s (and inputs of the frame)."""
        t = type(x)
        if t in _PLAIN:
            return x
        if t is torch.Tensor or t is nn.Parameter or isinstance(x, torch.Tensor):
            v = self.value_of(x)
            if v not in frame.seen:
                frame.seen.add(v)
                frame.inputs.append(v)
            ref = self.refs.get(v)
            if ref is None:
                ref = self.refs[v] = Ref(v)
            return ref
        if t is list or t is tuple:
            for i in x:
                if type(i) not in _PLAIN:
                    return t(self._ref(i, frame) for i in x)
            return x if t is tuple else list(x)
        if isinstance(x, (list, tuple)):
            return tuple(self._ref(i, frame) for i in x)
        if isinstance(x, _META_TYPES):
            return _meta_str(x)
        return x

    # ---- nodes --------------------------------------------------------------------------
    def finish(self, frame: _Frame) -> None:
        node = Node(
            id=frame.node_id, kind=frame.kind, type=frame.type, scope=frame.scope,
            module=frame.module, inputs=tuple(frame.inputs), outputs=tuple(frame.produced),
            calls=tuple(frame.calls), opaque=frame.opaque, call_index=frame.call_index,
            arg_names=tuple(frame.arg_names), py_ints=frame.fn_ints, int_sources=frame.fn_srcs)
        self.nodes[node.id] = node


class _Shapes:
    """value id -> shape, read from the recorder's values (for ``call_macs``)."""

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = values

    def __getitem__(self, vid):
        return self.values[vid].shape


_PERSISTENT = frozenset({PARAM, BUFFER, INPUT})
_META_TYPES = (torch.dtype, torch.device, torch.layout, torch.memory_format)


@functools.lru_cache(maxsize=None)
def _meta_str(x) -> str:
    return str(x)


# recorded as their names (``torch.float32``, ``cpu``), each name made once
_META_STR = {t: _meta_str for t in _META_TYPES}
_PLAIN = frozenset({int, float, bool, type(None), str})


def _flat_tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for i in obj:
            yield from _flat_tensors(i)
    elif isinstance(obj, dict):
        for i in obj.values():
            yield from _flat_tensors(i)


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, rec: _Recorder):
        super().__init__()
        self.rec = rec

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled while tracing: spare every op two wrapper frames

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        rec = self.rec
        if func.namespace == "prim":  # metadata queries (prim.device of a FakeTensor)
            return func(*args, **(kwargs or {}))
        with torch._C.DisableTorchFunction():  # our bookkeeping is not the model's code
            if rec.so is not None:
                out = rec.so.call(func, args, kwargs)
            else:
                out = func(*args, **(kwargs or {}))
            rec.on_aten(func, args, kwargs, out)
        return out


class _FunctionNamer(TorchFunctionMode):
    def __init__(self, rec: _Recorder):
        super().__init__()
        self.rec = rec
        self.aside = False

    def step_aside(self) -> None:
        """Leave the torch-function stack while a plain known layer runs: each functional
        call inside it (``F.batch_norm``, ``F.hardswish``) would otherwise pay for a mode
        switch and a frame, ~40% of a small layer's traced cost, to record a name nobody
        reads (its ints are not recorded, see ``in_known_leaf``). Only when this mode is
        the innermost one."""
        n = torch._C._len_torch_function_stack()
        if n and torch._C._get_function_stack_at(n - 1) is self:
            torch._C._pop_torch_function_stack()
            self.aside = True

    def step_back(self) -> None:
        if self.aside:
            torch._C._push_on_torch_function_stack(self)
            self.aside = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _SHAPE_FUNCS and args and isinstance(args[0], torch.Tensor):
            if self.rec.in_known_leaf:
                return func(*args, **(kwargs or {}))
            return self._traced_shape(func, name, args, kwargs)
        rec = self.rec
        if rec.so is not None and name in _so.ESCAPE_FUNCTIONS and (
                rec.so.tainted_storage or rec.so.is_tainted(args)):
            rec.so.stop(name)
        outer = rec.py_ctx is None  # calls nested inside another torch call are its internals
        if outer:
            ints = _python_ints(args) if args and not rec.in_known_leaf else ()
            if ints:
                rec.py_ctx = (_DUNDER_NAMES.get(name, name), tuple([int(i) for i in ints]),
                              tuple([provenance_of(i) for i in ints]))
            else:
                rec.py_ctx = (_DUNDER_NAMES.get(name, name), (), ())
        frame = rec.enter_fn(name or str(func)) if not (rec.leaf_depth or rec.fn_depth) else None
        try:
            if frame is not None:
                frame.fn_ints, frame.fn_srcs = rec.py_ctx[1], rec.py_ctx[2]
            return func(*args, **(kwargs or {}))
        finally:
            if frame is not None:
                rec.exit_fn(frame)
            if outer:
                rec.py_ctx = None

    def _traced_shape(self, func, name, args, kwargs):
        """``x.shape`` / ``x.size()`` / ``len(x)`` as ints that remember their source dim."""
        out = func(*args, **(kwargs or {}))
        if name == "__get__" and getattr(getattr(func, "__self__", None), "__name__", "") != "shape":
            return out
        vid = self.rec.known(args[0])
        if vid is None:
            return out
        reads = self.rec.shape_reads
        if isinstance(out, torch.Size):
            reads.update((vid, d) for d in range(len(out)))
            return torch.Size(TracedInt(s, (vid, d)) for d, s in enumerate(out))
        if name == "numel":
            reads.update((vid, d) for d in range(args[0].dim()))
            return out
        if isinstance(out, int) and not isinstance(out, bool):
            dim = 0 if name == "__len__" else (args[1] if len(args) > 1 else (kwargs or {}).get("dim"))
            if isinstance(dim, int):
                dim %= max(args[0].dim(), 1)
                reads.add((vid, dim))
                return TracedInt(out, (vid, dim))
        return out


def _python_ints(obj, depth=0) -> tuple:
    """The int arguments a Python call was given, flattened (view(B, -1, 64) -> (B, -1, 64))."""
    t = type(obj)
    if t is int or t is TracedInt:
        return (obj,)
    if t is tuple or t is list or t is torch.Size:
        found = None
        for o in obj:
            to = type(o)
            if to is int or to is TracedInt:
                if found is None:
                    found = []
                found.append(o)
            elif to in _NO_INTS or isinstance(o, torch.Tensor):
                continue
            elif depth < 6:
                more = _python_ints(o, depth + 1)
                if more:
                    if found is None:
                        found = []
                    found.extend(more)
        return tuple(found) if found else ()
    if t in _NO_INTS or isinstance(obj, torch.Tensor) or isinstance(obj, bool):
        return ()
    if isinstance(obj, int):
        return (obj,)
    if depth >= 6:
        return ()
    if isinstance(obj, (tuple, list)):
        return _python_ints(tuple(obj), depth)
    if isinstance(obj, slice):
        return _python_ints((obj.start, obj.stop, obj.step), depth + 1)
    if isinstance(obj, dict):
        return _python_ints(tuple(obj.values()), depth + 1)
    return ()


_NO_INTS = frozenset({bool, float, str, type(None), torch.Tensor, nn.Parameter, torch.dtype,
                      torch.device})
_SHAPE_FUNCS = frozenset({"__get__", "size", "__len__", "numel"})


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


@contextmanager
def gc_paused():
    """Tracing, planning and exec allocate thousands of small acyclic records that die by
    reference counting: the cyclic collector would only scan them (and the whole graph)
    midway, so it waits until the work is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def without_gc(fn):
    """Decorator: run a public entry point with the cyclic collector paused."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with gc_paused():
            return fn(*args, **kwargs)
    return wrapped


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
            kept = stack.enter_context(kept_state(model, modules))
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


class KeptState:
    """What ``kept_state`` found: ``python_changed`` says, after the forward, whether it wrote
    any module's Python state (None while it runs, and when that was not watched)."""

    python_changed: bool | None = None


@contextmanager
def kept_state(model: nn.Module, modules, python_state: bool = True, buffers: bool = True):
    """Whatever a forward changes is put back afterwards: buffers (BatchNorm statistics),
    the RNG state, and the modules' Python state (``module_state``: a cache with its key).
    ``python_state=False`` leaves the Python state alone: for a forward whose trace showed
    that the model's code writes none (the check after exec). ``buffers=False``: the caller
    keeps the buffers itself (``verify._BufferGuard``)."""
    saved_buffers = [(m, attr, b, b.detach().clone()) for _name, m in modules
                     for attr, b in m._buffers.items() if b is not None] if buffers else ()
    saved_state = save_python_state(modules) if python_state else None
    rng = torch.get_rng_state()
    kept = KeptState()
    try:
        yield kept
    finally:
        torch.set_rng_state(rng)
        _restore_buffers(model, saved_buffers)
        if saved_state is not None:
            kept.python_changed = restore_python_state(saved_state)


def _restore_buffers(model: nn.Module, saved) -> None:
    for owner, attr, obj, data in saved:
        current = owner._buffers.get(attr)
        if current is obj:
            if obj.shape == data.shape:
                obj.data.copy_(data)
        else:
            owner._buffers[attr] = obj
            obj.data = data


def _check_devices(model, args, kwargs, example_inputs) -> None:
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    if p is None:
        return
    for t in iter_tensors((args, kwargs)):
        if t.device != p.device:
            raise TracingError(
                f"example inputs are on {t.device} but the model's parameters are on {p.device}; "
                f"move them with `example_inputs.to({str(p.device)!r})` "
                f"(got {describe_inputs(example_inputs)}).")


def tracing_message(model, where: str, exc: BaseException, example_inputs) -> str:
    hint = ""
    try:
        m = model.get_submodule(where) if where and where != "the model's forward" else None
    except AttributeError:
        m = None
    if m is not None:
        from .layers import REGISTRY  # local import: layers imports nothing from here
        expect = REGISTRY.describe_expected_input(m)
        if expect:
            hint = f" {where} ({type(m).__name__}) expects {expect}."
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"running the model on the example inputs failed in {where}: {first}.{hint} "
            f"The example inputs were {describe_inputs(example_inputs)}; pass inputs the model "
            f"accepts (the same you would give model(...)).")
