"""Shape-only evaluation of the heavy ops, for runs that only need shapes.

Tracing records ops, arguments and shapes, never values; verifying an executed plan checks
that the model runs and what shapes come out. Neither needs the FLOPs of a convolution or a
matmul: here those ops (convolutions, matmuls, batch/layer norms, CPU attention) return a
tensor of the exact shape, strides and dtype the real kernel would, without computing it.
Every other op runs for real, on those placeholder values.

That is only sound while values cannot steer the run. An op that turns values into Python
(``item()``, ``bool(x)``, ``tolist()``, ``numpy()``) or whose output *shape* depends on values
(``nonzero``, boolean indexing, ``unique``) raises ``NeedsValues``; the caller then runs the
model for real. A flag is kept as well, because model code may swallow the exception.

Each shape rule is checked against the real kernel the first time a *signature* (op, ranks,
dtypes, contiguity, flags) is seen in a process: the real op runs once and the rule is kept
for that signature only if it reproduced shapes, strides and dtypes exactly.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class NeedsValues(BaseException):
    """Raised where a shape-only run would need real values. A BaseException, so that model
    code's ``except Exception`` does not swallow it (the caller checks a flag as well)."""


# ops whose output shapes, or whose Python results, depend on values
DATA_DEPENDENT = frozenset({
    "_local_scalar_dense", "is_nonzero", "equal", "item", "nonzero", "nonzero_numpy",
    "nonzero_static", "argwhere", "masked_select", "unique", "_unique", "_unique2",
    "unique_dim", "unique_consecutive", "unique_dim_consecutive", "bincount",
    "_assert_async", "_assert_scalar", "allclose", "isin", "histc", "_print",
})
# Python-level calls through which data leaves torch
ESCAPE_FUNCTIONS = frozenset({"numpy", "tolist", "__array__", "__dlpack__", "cpu_numpy",
                              "__reduce_ex__", "__repr__", "__format__", "__str__"})


def data_dependent(func, packet: str, args) -> bool:
    """Would this call read values (or make a shape from them)?"""
    if packet in DATA_DEPENDENT:
        return True
    if packet in ("index", "_index_put_impl_", "index_put", "index_put_") and len(args) > 1:
        for idx in args[1] or ():
            if isinstance(idx, torch.Tensor) and idx.dtype in (torch.bool, torch.uint8):
                return packet == "index"  # a boolean mask picks a data-dependent count
    if packet == "repeat_interleave" and args and isinstance(args[0], torch.Tensor) and \
            len(args) == 1:
        return True  # repeat_interleave(repeats): the output size is repeats.sum()
    return False


# ---------------------------------------------------------------------------------------------
# shape rules: args -> the outputs the real kernel returns (placeholder values), or None
# ---------------------------------------------------------------------------------------------
def _new(shape, like: torch.Tensor) -> torch.Tensor:
    # uninitialised: filling would cost page faults and a memset per op, and no value of a
    # placeholder is ever read (ops that would read one stop the run)
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _conv_out(size: int, k: int, s: int, p: int, d: int, transposed: bool, op: int) -> int:
    if transposed:
        return (size - 1) * s - 2 * p + d * (k - 1) + op + 1
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _convolution(args, kwargs):
    if kwargs or len(args) != 9:
        return None
    x, w, b, stride, padding, dilation, transposed, out_pad, groups = args
    if x.dim() != w.dim() or x.dim() < 3 or not (x.is_contiguous() and w.is_contiguous()):
        return None
    if any(isinstance(a, str) for a in (stride, padding, dilation)):
        return None
    nd = x.dim() - 2
    groups = int(groups)
    if transposed:
        if x.shape[1] != w.shape[0] or w.shape[0] % groups:
            return None
        cout = w.shape[1] * groups
    else:
        if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
            return None
        cout = w.shape[0]
    if b is not None and tuple(b.shape) != (cout,):
        return None
    spatial = []
    for i in range(nd):
        n = _conv_out(x.shape[2 + i], w.shape[2 + i], stride[i % len(stride)],
                      padding[i % len(padding)], dilation[i % len(dilation)], bool(transposed),
                      out_pad[i % len(out_pad)] if out_pad else 0)
        if n <= 0:
            return None
        spatial.append(n)
    return _new((x.shape[0], cout, *spatial), x)


def _mm(args, kwargs):
    if kwargs or len(args) != 2:
        return None
    a, b = args
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        return None
    return _new((a.shape[0], b.shape[1]), a)


def _bmm(args, kwargs):
    if kwargs or len(args) != 2:
        return None
    a, b = args
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        return None
    return _new((a.shape[0], a.shape[1], b.shape[2]), a)


def _plus_bias(product):
    """addmm / baddbmm: ``beta * bias + alpha * product(a, b)``, shaped as the product."""
    def rule(args, kwargs):
        if len(args) != 3 or any(k not in ("beta", "alpha") for k in kwargs):
            return None
        bias, a, b = args
        out = product((a, b), {})
        if out is None or not _broadcasts(bias.shape, out.shape):
            return None
        return out
    return rule


_addmm, _baddbmm = _plus_bias(_mm), _plus_bias(_bmm)


def _broadcasts(small, big) -> bool:
    if len(small) > len(big):
        return False
    return all(s in (1, g) for s, g in zip(reversed(small), reversed(big)))


def _norm_params_ok(x, params) -> bool:
    return all(p is None or tuple(p.shape) == (x.shape[1],) for p in params)


def _batch_norm(training_pos: int | None):
    def rule(args, kwargs):
        if kwargs or len(args) < 5:
            return None
        x = args[0]
        if x.dim() < 2 or not x.is_contiguous() or not _norm_params_ok(x, args[1:5]):
            return None
        training = bool(args[training_pos]) if training_pos is not None else False
        stat = (x.shape[1],) if training else (0,)
        # the output has the input's shape and strides: an alias of it costs nothing
        return (aten.alias.default(x), _new(stat, x), _new(stat, x))
    return rule


def _layer_norm(args, kwargs):
    if kwargs or len(args) != 5:
        return None
    x, shape, w, b = args[:4]
    k = len(shape)
    if k == 0 or x.dim() < k or tuple(x.shape[x.dim() - k:]) != tuple(shape):
        return None
    if any(p is not None and tuple(p.shape) != tuple(shape) for p in (w, b)):
        return None
    out = aten.alias.default(x) if x.is_contiguous() else _new(x.shape, x)
    stat = tuple(x.shape[:x.dim() - k]) + (1,) * k
    return (out, _new(stat, x), _new(stat, x))


def _sdpa_cpu(args, kwargs):
    if len(args) < 3 or any(k not in ("dropout_p", "is_causal", "attn_mask", "scale")
                            for k in kwargs):
        return None
    q, k, v = args[:3]
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k.shape[:2] != v.shape[:2] or \
            q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3] or k.shape[2] != v.shape[2] \
            or v.shape[3] != q.shape[3]:  # the CPU flash kernel wants one head size
        return None
    b, h, lq, _e = q.shape
    out = _new((b, h, lq, v.shape[3]), q)
    lse = torch.empty((b, lq, h), dtype=torch.float32, device=q.device).permute(0, 2, 1)
    return (out, lse)


def _native_mha(args, kwargs):
    """nn.MultiheadAttention's fused inference kernel (eval, no grad, no function mode)."""
    if kwargs or len(args) < 9 or (len(args) > 9 and args[9] is not None):
        return None
    q, k, v, embed, heads, qkv_w, _qkv_b, proj_w = args[:8]
    need = bool(args[10]) if len(args) > 10 else True
    average = bool(args[11]) if len(args) > 11 else True
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or q.shape[2] != embed or \
            tuple(qkv_w.shape) != (3 * embed, embed) or proj_w.shape[1] != embed or \
            embed % int(heads) or k.shape[:2] != v.shape[:2] or q.shape[0] != k.shape[0]:
        return None
    b, lq, s = q.shape[0], q.shape[1], k.shape[1]
    out = _new((b, lq, proj_w.shape[0]), q)
    if not need:
        return (out, None)
    return (out, _new((b, lq, s) if average else (b, int(heads), lq, s), q))


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool(with_indices: bool, has_dilation: bool):
    def rule(args, kwargs):
        if kwargs:
            return None
        x, kernel = args[0], list(args[1])
        stride = list(args[2]) if len(args) > 2 and len(args[2]) else kernel
        padding = list(args[3]) if len(args) > 3 else [0]
        if has_dilation:
            dilation = list(args[4]) if len(args) > 4 else [1]
            ceil = bool(args[5]) if len(args) > 5 else False
        else:
            dilation, ceil = [1], bool(args[4]) if len(args) > 4 else False
        nd = len(kernel)
        if x.dim() not in (nd + 1, nd + 2) or not x.is_contiguous():
            return None
        spatial = []
        for i in range(nd):
            n = _pool_out(x.shape[x.dim() - nd + i], kernel[i], stride[i % len(stride)],
                          padding[i % len(padding)], dilation[i % len(dilation)], ceil)
            if n <= 0 or padding[i % len(padding)] * 2 > kernel[i]:
                return None
            spatial.append(n)
        shape = tuple(x.shape[:x.dim() - nd]) + tuple(spatial)
        out = _new(shape, x)
        if not with_indices:
            return out
        return (out, torch.empty(shape, dtype=torch.int64, device=x.device))
    return rule


def _adaptive_avg_pool(args, kwargs):
    if kwargs or len(args) != 2:
        return None
    x, size = args[0], list(args[1])
    if x.dim() not in (len(size) + 1, len(size) + 2) or not x.is_contiguous():
        return None
    return _new(tuple(x.shape[:x.dim() - len(size)]) + tuple(size), x)


def _broadcast(shapes: list[tuple]) -> tuple:
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for i, d in enumerate(s, n - len(s)):
            if d != 1:
                if out[i] not in (1, d):
                    raise ValueError("shapes do not broadcast")
                out[i] = d
    return tuple(out)


def _pointwise(func, args, kwargs):
    """Elementwise ops on placeholder data: the broadcast shape, nothing computed. In place:
    the written tensor itself; otherwise an alias of an input of exactly the output's
    layout, or zeros."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    tensors += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    if not tensors or any(t.dtype != tensors[0].dtype or t.device != tensors[0].device or
                          not t.is_contiguous() for t in tensors):
        return None
    shape = _broadcast([tuple(t.shape) for t in tensors])
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if _mutates(func):
        if first is None or tuple(first.shape) != tuple(shape):
            return None
        return first
    for t in tensors:
        if tuple(t.shape) == tuple(shape):
            return aten.alias.default(t)
    return _new(shape, tensors[0])


def _reduce(args, kwargs):
    """``mean`` / ``sum`` / ``amax`` / ``amin`` over listed dims: the kept dims' sizes (ones
    where ``keepdim``). A ``dtype`` keyword changes the result type: left to the kernel."""
    if kwargs or not args or len(args) > 3:
        return None
    x = args[0]
    n = x.dim()
    dims = args[1] if len(args) > 1 else None
    if dims is None or n == 0 or not x.is_contiguous():
        return None
    dims = {d % n for d in ([dims] if isinstance(dims, int) else dims)}
    if not dims:
        return None
    keep = bool(args[2]) if len(args) > 2 else False
    shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keep or i not in dims]
    return _new(shape, x)


# a reduction of real data (an attention mask's sum) is cheap and may be read: computed
_reduce.placeholders_only = True


RULES: dict[object, Callable] = {
    aten.convolution.default: _convolution,
    aten.mm.default: _mm,
    aten.addmm.default: _addmm,
    aten.bmm.default: _bmm,
    aten.baddbmm.default: _baddbmm,
    aten.native_batch_norm.default: _batch_norm(5),
    aten._native_batch_norm_legit_no_training.default: _batch_norm(None),
    aten.native_layer_norm.default: _layer_norm,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _sdpa_cpu,
    aten.max_pool2d_with_indices.default: _pool(True, True),
    aten.max_pool3d_with_indices.default: _pool(True, True),
    aten.avg_pool2d.default: _pool(False, False),
    aten.avg_pool3d.default: _pool(False, False),
    aten._adaptive_avg_pool2d.default: _adaptive_avg_pool,
    aten._adaptive_avg_pool3d.default: _adaptive_avg_pool,
    aten._native_multi_head_attention.default: _native_mha,
    aten.mean.dim: _reduce,
    aten.sum.dim_IntList: _reduce,
    aten.amax.default: _reduce,
    aten.amin.default: _reduce,
}
# elementwise ops PyTorch leaves untagged (``hardswish``), and in-place forms of tagged ones
# (``gelu_``): the rule is the same, and each signature is still checked against the kernel
_UNTAGGED_POINTWISE = frozenset({"hardswish", "hardswish_"})
_RANDOM = ("bernoulli", "normal", "uniform", "random", "exponential", "cauchy", "geometric")


class Op:
    """What this module needs to know about one ATen overload, computed once. Looked up by
    ``id``: an OpOverload hashes in Python, and these lookups run for every op."""

    __slots__ = ("func", "name", "packet", "mutates", "rule", "data_dependent", "by_args",
                 "pointwise", "placeholders_only")

    def __init__(self, func):
        self.func = func  # keeps the overload (and so its id) alive
        self.name = str(func)
        self.packet = func.overloadpacket.__name__
        try:
            self.mutates = bool(func._schema.is_mutable)
        except Exception:
            self.mutates = True
        self.rule = RULES.get(func)
        if self.rule is None and _is_pointwise(func, self.packet) and \
                not any(r in self.name for r in _RANDOM):
            self.rule = _pointwise_rule(func)
            self.rule.pointwise = self.rule.placeholders_only = True
        self.pointwise = getattr(self.rule, "pointwise", False)
        # cheap rules used only on placeholder data: on real data the op runs, as its result
        # may be read (heavy ops always give placeholders)
        self.placeholders_only = getattr(self.rule, "placeholders_only", False)
        self.data_dependent = self.packet in DATA_DEPENDENT
        self.by_args = self.packet in ("index", "repeat_interleave")  # depends on the args


def _is_pointwise(func, packet: str) -> bool:
    if "out" in func._overloadname:
        return False  # ``add.out``: the result is the ``out=`` tensor, not an input
    tags = getattr(func, "tags", ())
    if torch.Tag.pointwise in tags or packet in _UNTAGGED_POINTWISE:
        return True
    if torch.Tag.inplace in tags and packet.endswith("_"):
        out_of_place = getattr(aten, packet[:-1], None)
        overload = getattr(out_of_place, func._overloadname, None) if out_of_place else None
        return overload is not None and torch.Tag.pointwise in overload.tags
    return False


def _pointwise_rule(func):
    def rule(args, kwargs):
        return _pointwise(func, args, kwargs)
    return rule


_OPS: dict[int, Op] = {}


def op(func) -> Op:
    o = _OPS.get(id(func))
    if o is None:
        o = _OPS[id(func)] = Op(func)
    return o


def _mutates(func) -> bool:
    return op(func).mutates


# signature -> the rule reproduced the real kernel there (True) or not (False)
_CHECKED: dict[tuple, bool] = {}


def _signature(o: Op, args) -> tuple:
    sig = [id(o.func)]
    for a in args:
        if type(a) is torch.Tensor or isinstance(a, torch.Tensor):
            # the device itself: reading its .type costs 8x as much
            sig.append((a.dim(), a.dtype, a.device, a.is_contiguous()))
        elif a is None or a is True or a is False:
            sig.append(a)
        else:
            sig.append(type(a))
    return tuple(sig)


def _same_layout(a, b) -> bool:
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return len(a) == len(b) and all(
        (x is None and y is None) or
        (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape and
         x.stride() == y.stride() and x.dtype == y.dtype and x.device == y.device)
        for x, y in zip(a, b))


def evaluate(func, args, kwargs, tainted: bool = False, o: Op | None = None,
             before_write: Callable | None = None):
    """``(outputs, placeholder)`` of ``func(*args, **kwargs)``: placeholders of the exact
    layout for the heavy ops this module knows, and for elementwise ops and reductions on
    placeholder data (``tainted``), each rule checked once per signature; else the real
    result. ``o``: the op's record, when the caller has it. ``before_write`` is called before a mutating op
    runs for real (a rule never writes)."""
    o = o or _OPS.get(id(func)) or op(func)
    rule = o.rule
    if rule is None or (not tainted and o.placeholders_only):
        if before_write is not None and o.mutates:
            before_write()
        return func(*args, **(kwargs or {})), False
    sig = _signature(o, args)
    ok = _CHECKED.get(sig)
    if ok is not False:
        try:
            out = rule(args, kwargs or {})
        except Exception:
            out = None
        if out is not None:
            if ok:
                return out, True
            if before_write is not None and o.mutates:
                before_write()
            real = func(*args, **(kwargs or {}))
            _CHECKED[sig] = _same_layout(out, real)
            return real, False
    if before_write is not None and o.mutates:
        before_write()
    return func(*args, **(kwargs or {})), False


def _flat(items):
    for x in items:
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            yield from _flat(x)
        elif isinstance(x, dict):
            yield from _flat(x.values())


_SCALARS = frozenset({int, float, bool, type(None), str})


class Run:
    """One shape-only run: which tensors hold placeholders (or data computed from them), and
    whether the run had to stop because values were needed."""

    def __init__(self):
        self._tainted: dict[int, weakref.ref] = {}
        self.needs_values: str | None = None  # the op that needed real values
        self.tainted_storage = False  # placeholder data was written into an existing tensor
        self.before_write: Callable | None = None  # called before an op really writes

    def is_tainted(self, items) -> bool:
        tainted = self._tainted
        if not tainted:
            return False
        for x in items:
            t = type(x)
            if t in _SCALARS:
                continue
            if t is torch.Tensor or isinstance(x, torch.Tensor):
                r = tainted.get(id(x))
                if r is not None and r() is x:
                    return True
            elif isinstance(x, (list, tuple, dict)) and x:
                if self.is_tainted(x.values() if isinstance(x, dict) else x):
                    return True
        return False

    def mark(self, out) -> None:
        """``out`` holds placeholders."""
        if isinstance(out, torch.Tensor):
            self._tainted[id(out)] = weakref.ref(out)
        else:
            for t in _flat((out,)):
                self._tainted[id(t)] = weakref.ref(t)

    def stop(self, what: str):
        self.needs_values = what
        raise NeedsValues(what)

    def call(self, func, args, kwargs):
        """Run one ATen call: heavy ops give placeholders; reading placeholder values stops
        the run (``NeedsValues``)."""
        o = _OPS.get(id(func)) or op(func)
        tainted = self.is_tainted(args) or bool(kwargs and self.is_tainted(kwargs.values()))
        if o.data_dependent or (o.by_args and data_dependent(func, o.packet, args)):
            if tainted or self.tainted_storage:
                self.stop(o.packet)
            if o.mutates and self.before_write is not None:
                self.before_write()
            out, placeholder = func(*args, **(kwargs or {})), False
        else:
            out, placeholder = evaluate(func, args, kwargs, tainted, o, self.before_write)
        if tainted:
            if o.mutates:
                self.tainted_storage = True  # aliases of the written tensor hold placeholders
            self.mark(out)
        elif placeholder:
            self.mark(out)
        return out


def packet_of(func) -> str:
    return op(func).packet


class ShapeOnlyMode(TorchDispatchMode):
    """Run a model with its heavy ops shape-only (no recording): the cheap check after exec."""

    def __init__(self):
        super().__init__()
        self.run = Run()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # no torch.compile inside a check: spare every op two wrapper frames

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunction():
            return self.run.call(func, args, kwargs)
