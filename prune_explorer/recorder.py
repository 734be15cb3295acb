"""The recorder of a trace: what one forward's ATen calls, Python-level calls and module
calls become (values, calls, nodes), and the two interception modes that feed it.

A ``TorchDispatchMode`` (``_DispatchRecorder``) hands every ATen op to ``_Recorder.on_aten``
with its exact arguments; a ``TorchFunctionMode`` (``_FunctionNamer``) names them after the
Python call the user wrote and remembers the Python ints it was given (and where a size was
read from a shape); module hooks (``_Recorder.pre_hook`` / ``post_hook``) group the calls into
layer nodes. ``tracing.trace`` drives one forward through them.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from . import shape_only as _so
from .traced_ints import TracedInt, provenance_of
from .graph import (ACTIVATION, BUFFER, CONSTANT, INPUT, NODE_LAYER, NODE_OP, PARAM, Call, Node,
                    Ref, Value, new_call, new_node, new_value)
from .forward_io import iter_tensors
from .leaf_shapes import ELEMENTWISE_LAYERS
from .module_state import runs_torch_forward

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
        # known layers, and torch's elementwise activations, that run torch's own forward
        # (no subclass forward, no hooks of their own): nothing inside them needs a
        # Python-level name, so the function mode steps aside while they run
        # (``_FunctionNamer.step_aside``)
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
                elif type(m) in ELEMENTWISE_LAYERS and runs_torch_forward(m):
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
        self.values[vid] = new_value(vid, tuple(t.shape), _dtype_of(t), kind, name, producer)
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
            self.values[vid] = new_value(vid, tuple(out.shape), _dtype_of(out), ACTIVATION, None,
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
        call = new_call(info.name, rargs, rkwargs, outs, 0, self.py_ctx)
        if info.packet in self.mac_ops:  # from the recorded shapes: no FLOP counter runs
            call = new_call(info.name, rargs, rkwargs, outs, self.call_macs(call, _Shapes(
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
        node = new_node(frame.node_id, frame.kind, frame.type, frame.scope, frame.module,
                        tuple(frame.inputs), tuple(frame.produced), tuple(frame.calls),
                        frame.opaque, frame.call_index, tuple(frame.arg_names), frame.fn_ints,
                        frame.fn_srcs)
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
