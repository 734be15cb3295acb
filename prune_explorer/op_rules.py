"""The table of ATen ops we understand: for each, how its dims relate to its inputs' dims.

A rule reads one recorded ``Call`` (exact arguments, shapes of every tensor) and declares
relations through a ``RuleContext``: ``map`` (an owner map between two dims), ``block`` (a
reshape between lists of dims) or ``absorb`` (the op consumes the dim, e.g. a reduction).
An op with no rule declares nothing: channels that reach it stop there, and a plan that
needs to carry channels through it is refused with the op's name.

Elementwise ops need no entry: PyTorch tags them ``torch.Tag.pointwise``.
"""

from __future__ import annotations

from math import prod
from typing import Callable

import numpy as np
import torch

from . import index_mapping as im
from .graph import Ref

Rule = Callable[["RuleContext"], None]
RULES: dict[str, Rule] = {}


def rule(*names: str):
    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn
    return deco


class RuleContext:
    """What a rule sees: the call, shapes, and the relation builders of the dim graph."""

    def __init__(self, builder, node, call, call_key):
        self.b = builder
        self.node = node
        self.call = call
        self.key = call_key
        self._values = builder.graph.values

    # --- arguments -------------------------------------------------------------------------
    def arg(self, i: int, name: str | None = None, default=None):
        if i < len(self.call.args):
            return self.call.args[i]
        if name is not None and name in self.call.kwargs:
            return self.call.kwargs[name]
        return default

    def shape(self, ref) -> tuple[int, ...]:
        return self._values[ref.value].shape

    def out(self, i: int = 0) -> Ref | None:
        outs = self.call.outputs
        return Ref(outs[i]) if i < len(outs) and outs[i] is not None else None

    def tensor_inputs(self) -> list[Ref]:
        refs = []
        for a in list(self.call.args) + list(self.call.kwargs.values()):
            if isinstance(a, Ref):
                refs.append(a)
            elif isinstance(a, (list, tuple)):
                refs.extend(x for x in a if isinstance(x, Ref))
        return refs

    # --- relations -------------------------------------------------------------------------
    def v(self, ref: Ref, dim: int) -> int | None:
        shape = self._values[ref.value].shape
        if not shape:
            return None
        dim %= len(shape)
        if shape[dim] <= 1:
            return None
        k = (ref.value, dim)
        vid = self.b.vertex_of.get(k)
        return vid if vid is not None else self.b.vertex_at(k, shape[dim])

    def same(self, a: Ref, da: int, b: Ref, db: int, why: str = "") -> None:
        va = self.v(a, da)
        if va is None:  # a batch dim of 1: nothing to relate
            return
        vb = self.v(b, db)
        if vb is not None and self.b.size[va] == self.b.size[vb]:
            self.b.add_map(va, vb, None, self, why)

    def map(self, a: Ref, da: int, b: Ref, db: int, owner: im.OwnerMap, why: str = "") -> None:
        va, vb = self.v(a, da), self.v(b, db)
        if va is not None and vb is not None:
            self.b.add_map(va, vb, owner, self, why)

    def map_vertices(self, va, vb, owner: im.OwnerMap | None, why: str = "") -> None:
        if va is not None and vb is not None:
            self.b.add_map(va, vb, owner, self, why)

    def block(self, left: list[int | None], right: list[int | None], why: str = "") -> None:
        left = [x for x in left if x is not None]
        right = [x for x in right if x is not None]
        if not left or not right:
            return
        if len(left) == 1 and len(right) == 1:
            self.b.add_map(left[0], right[0], None, self, why)
        else:
            self.b.add_block(left, right, self, why)

    def absorb(self, ref: Ref, dim: int, why: str = "") -> None:
        va = self.v(ref, dim)
        if va is not None:
            self.b.add_absorb(va, self, why)

    def sized_by_a_tensor(self, ref: Ref, dim: int) -> None:
        """An output dim the op makes as wide as another tensor says (a broadcast copy): it
        can be made narrower, whatever indices are pruned."""
        v = self.v(ref, dim)
        if v is not None:
            self.b._touch(v, self)

    def virtual(self, name: str, size: int, attr: str | None = None, fixed: bool = False):
        if size <= 1:
            return None
        return self.b.virtual((self.node.id, self.key[1], name), size, self.node, attr, fixed)

    # --- helpers -----------------------------------------------------------------------------
    def broadcast(self, inputs: list[Ref], out: Ref, why: str = "") -> None:
        oshape = self.shape(out)
        for r in inputs:
            for i, j in im.broadcast_pairs(self.shape(r), oshape):
                self.same(r, i, out, j, why)

    def reshape(self, src: Ref, dst: Ref, why: str = "reshape") -> None:
        s_in, s_out = self.shape(src), self.shape(dst)
        try:
            groups = im.reshape_groups(s_in, s_out)
        except ValueError:
            return
        for gi, go in groups:
            self.block([self.v(src, d) for d in gi], [self.v(dst, d) for d in go], why)


# ------------------------------------------------------------------------------------------
# elementwise and identity-like ops
# ------------------------------------------------------------------------------------------
_IDENTITY_LIKE = (
    "hardswish", "hardswish_", "_to_copy", "to", "lift_fresh", "lift_fresh_copy", "detach",
    "alias", "contiguous", "clone", "fill_", "zero_", "tril", "triu", "tril_", "triu_",
    "_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax", "native_dropout",
    "dropout", "feature_dropout", "alpha_dropout", "bernoulli_", "bernoulli", "normal_",
    "uniform_", "log_sigmoid_forward", "floor_divide", "cumsum", "cumprod", "relu6",
    "hardsigmoid_", "silu_", "zeros_like", "ones_like", "empty_like", "full_like",
    "rand_like", "randn_like", "randint_like", "_assert_async", "conj", "resolve_conj",
    "resolve_neg", "positive", "masked_fill_", "exponential_", "logcumsumexp", "_conj",
    "empty_strided_like", "_unsafe_masked_index", "fill", "clamp_", "clamp_min_", "sign",
)


def _elementwise(ctx: RuleContext) -> None:
    ins = ctx.tensor_inputs()
    for i in range(len(ctx.call.outputs)):
        out = ctx.out(i)
        if out is not None and len(ctx.shape(out)) >= max((len(ctx.shape(r)) for r in ins),
                                                          default=0):
            ctx.broadcast(ins, out, "elementwise")


for _name in _IDENTITY_LIKE:
    RULES[_name] = _elementwise
RULES["copy_"] = _elementwise


@rule("new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided", "new_tensor")
def _new_factory(ctx: RuleContext) -> None:
    """``x.new_zeros(size)`` reads only x's dtype and device: x's dims are not consumed."""
    src = ctx.arg(0)
    if isinstance(src, Ref):
        for i in range(len(ctx.shape(src))):
            ctx.absorb(src, i, "template for a new tensor")


@rule("_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "_assert_async",
      "_assert_tensor_metadata", "_print", "is_same_size")
def _read_values(ctx: RuleContext) -> None:
    """Ops that turn tensor values into Python values (control flow, asserts): whatever the
    channels are, they only read them."""
    for ref in ctx.tensor_inputs():
        for i in range(len(ctx.shape(ref))):
            ctx.absorb(ref, i, "read as a Python value")


@rule("as_strided", "as_strided_", "as_strided_copy")
def _as_strided(ctx: RuleContext) -> None:
    """Restriding without a shape change (memory-format fix-ups) keeps every dim."""
    src, dst = ctx.arg(0), ctx.out(0)
    if isinstance(src, Ref) and dst is not None and ctx.shape(src) == ctx.shape(dst):
        for i in range(len(ctx.shape(src))):
            ctx.same(src, i, dst, i, "restride")
RULES["where"] = _elementwise
RULES["masked_fill"] = _elementwise


def rule_for(op: str) -> Rule | None:
    """The rule of ``aten.<packet>.<overload>``, or of any op PyTorch tags pointwise."""
    parts = op.split(".")
    packet = parts[1] if len(parts) > 1 else parts[0]
    found = RULES.get(packet)
    if found is not None:
        return found
    return _elementwise if _is_pointwise(op) else None


_POINTWISE_CACHE: dict[str, bool] = {}


def _is_pointwise(op: str) -> bool:
    hit = _POINTWISE_CACHE.get(op)
    if hit is None:
        hit = False
        parts = op.split(".")
        if len(parts) >= 2 and parts[0] == "aten":
            packet = getattr(torch.ops.aten, parts[1], None)
            overload = getattr(packet, parts[2] if len(parts) > 2 else "default", None)
            if overload is not None:
                hit = torch.Tag.pointwise in overload.tags
        _POINTWISE_CACHE[op] = hit
    return hit


# ------------------------------------------------------------------------------------------
# shape ops
# ------------------------------------------------------------------------------------------
@rule("view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias", "squeeze",
      "unsqueeze", "squeeze_copy", "unsqueeze_copy", "flatten", "unflatten", "view_as",
      "reshape_as", "_unsafe_view_copy", "squeeze_", "unsqueeze_")
def _reshape(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    if isinstance(src, Ref) and dst is not None:
        ctx.reshape(src, dst, "reshape")


@rule("permute", "permute_copy")
def _permute(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    dims = ctx.arg(1, "dims")
    n = len(ctx.shape(src))
    for j, d in enumerate(dims):
        ctx.same(src, d % n, dst, j, "permute")


@rule("transpose", "transpose_copy", "swapaxes", "swapdims", "transpose_")
def _transpose(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    n = len(ctx.shape(src))
    d0, d1 = ctx.arg(1, "dim0") % n, ctx.arg(2, "dim1") % n
    for i in range(n):
        j = d1 if i == d0 else d0 if i == d1 else i
        ctx.same(src, i, dst, j, "transpose")


@rule("t", "t_copy", "numpy_T")
def _t(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    n = len(ctx.shape(src))
    for i in range(n):
        ctx.same(src, i, dst, n - 1 - i, "transpose")


@rule("expand", "expand_copy", "broadcast_to", "expand_as")
def _expand(ctx: RuleContext) -> None:
    """Dims of size > 1 carry their index through. A dim broadcast from size 1 holds copies:
    when its size comes from a tensor (``norm.expand_as(x)`` in ``F.normalize``, SSD's
    L2Norm) it follows that tensor's width, so the op can make it narrower; a size written
    as a Python int stays fixed (the code would have to change)."""
    src, dst = ctx.arg(0), ctx.out(0)
    ctx.broadcast([src], dst, "expand")
    ins, outs = ctx.shape(src), ctx.shape(dst)
    literal = set() if ctx.call.py_fn == "expand_as" else {
        i for i, s in zip(ctx.call.py_ints, ctx.call.int_sources or (None,) * len(
            ctx.call.py_ints)) if s is None}
    offset = len(outs) - len(ins)
    for j, n in enumerate(outs):
        if n > 1 and (j < offset or ins[j - offset] == 1) and n not in literal:
            ctx.sized_by_a_tensor(dst, j)


@rule("select", "select_copy")
def _select(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    n = len(ctx.shape(src))
    dim = ctx.arg(1, "dim") % n
    j = 0
    for i in range(n):
        if i == dim:
            continue  # a position picked by index: not something channels can flow through
        ctx.same(src, i, dst, j, "select")
        j += 1


@rule("slice", "slice_copy")
def _slice(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    shape = ctx.shape(src)
    n = len(shape)
    dim = ctx.arg(1, "dim", 0) % n
    start, end, step = ctx.arg(2, "start"), ctx.arg(3, "end"), ctx.arg(4, "step", 1) or 1
    for i in range(n):
        if i == dim:
            ctx.map(src, i, dst, i, im.slice_map(shape[i], start, end, step), "slice")
        else:
            ctx.same(src, i, dst, i, "slice")


def _split_outputs(ctx: RuleContext, dim: int, sizes: list[int], equal: bool) -> None:
    src = ctx.arg(0)
    shape = ctx.shape(src)
    n = len(shape)
    dim %= n
    outs = [ctx.out(i) for i in range(len(ctx.call.outputs))]
    for k, o in enumerate(outs):
        for i in range(n):
            if i != dim:
                ctx.same(src, i, o, i, "split")
    for o, m in zip(outs, im.split_maps(shape[dim], sizes)):
        if ctx.shape(o)[dim] == 1 and shape[dim] > 1:
            # a one-channel piece still needs its vertex: removing its channel empties the
            # piece (refused as "all entries"), rather than being silently dropped
            ctx.map_vertices(ctx.v(src, dim), ctx.b.vertex(o.value, dim), m, "split")
        else:
            ctx.map(src, dim, o, dim, m, "split")
    if equal and len(sizes) > 1:
        # chunk(n) / split(size): pieces are re-cut from the new width, so they must lose
        # the same slots: slot i of every piece is one unit (the shorter last piece lacks
        # the trailing slots, which chunk's rounding then still reproduces exactly)
        slot = ctx.virtual("slots", sizes[0])
        for o, size in zip(outs, sizes):
            owner = None if size == sizes[0] else im.OwnerMap(
                sizes[0], size, np.arange(size, dtype=im.INDEX))
            ctx.map_vertices(slot, ctx.v(o, dim), owner, "chunk")


@rule("split", "split_copy", "unsafe_split")
def _split(ctx: RuleContext) -> None:
    src = ctx.arg(0)
    dim = ctx.arg(2, "dim", 0)
    n = len(ctx.shape(src))
    sizes = [ctx.shape(ctx.out(i))[dim % n] for i in range(len(ctx.call.outputs))]
    _split_outputs(ctx, dim, sizes, equal=True)


@rule("split_with_sizes", "split_with_sizes_copy", "unsafe_split_with_sizes")
def _split_sizes(ctx: RuleContext) -> None:
    sizes = list(ctx.arg(1, "split_sizes"))
    _split_outputs(ctx, ctx.arg(2, "dim", 0), sizes, equal=False)


@rule("unbind", "unbind_copy")
def _unbind(ctx: RuleContext) -> None:
    src = ctx.arg(0)
    n = len(ctx.shape(src))
    dim = ctx.arg(1, "dim", 0) % n
    for k in range(len(ctx.call.outputs)):
        o = ctx.out(k)
        j = 0
        for i in range(n):
            if i == dim:
                continue
            ctx.same(src, i, o, j, "unbind")
            j += 1


@rule("cat", "concat", "concatenate")
def _cat(ctx: RuleContext) -> None:
    tensors = [t for t in ctx.arg(0, "tensors") if isinstance(t, Ref)]
    tensors = [t for t in tensors if len(ctx.shape(t)) > 1 or prod(ctx.shape(t)) > 0]
    dst = ctx.out(0)
    oshape = ctx.shape(dst)
    n = len(oshape)
    dim = ctx.arg(1, "dim", 0) % n
    live = [t for t in tensors if len(ctx.shape(t)) == n]
    sizes = [ctx.shape(t)[dim] for t in live]
    for t, m in zip(live, im.concat_maps(sizes)):
        for i in range(n):
            if i == dim:
                ctx.map(t, i, dst, i, m, f"concatenated at offset {int(np.argmax(m.owner >= 0))}")
            else:
                ctx.same(t, i, dst, i, "concatenated")


@rule("stack")
def _stack(ctx: RuleContext) -> None:
    tensors = [t for t in ctx.arg(0, "tensors") if isinstance(t, Ref)]
    dst = ctx.out(0)
    n = len(ctx.shape(dst))
    dim = ctx.arg(1, "dim", 0) % n
    for t in tensors:
        for i in range(n - 1):
            ctx.same(t, i, dst, i if i < dim else i + 1, "stacked")


@rule("flip")
def _flip(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    shape = ctx.shape(src)
    dims = {d % len(shape) for d in ctx.arg(1, "dims")}
    for i, s in enumerate(shape):
        if i in dims:
            ctx.map(src, i, dst, i, im.OwnerMap(s, s, np.arange(s)[::-1].copy()), "flip")
        else:
            ctx.same(src, i, dst, i, "flip")


@rule("roll")
def _roll(ctx: RuleContext) -> None:
    """Dims that are not rolled pass through. A rolled dim (Swin's cyclic shift of H and W)
    declares nothing: rolling the pruned tensor by the same shift wraps at the new size (even
    a full turn of the old size is not one of the new), which is no removal of indices from
    the old result, so channels may not flow through it."""
    src, dst = ctx.arg(0), ctx.out(0)
    shape = ctx.shape(src)
    shifts, dims = ctx.arg(1, "shifts"), ctx.arg(2, "dims", [])
    rolled = {}
    if dims:
        for s, d in zip(shifts, dims):
            rolled[d % len(shape)] = s
    for i, size in enumerate(shape):
        if dims and i not in rolled:
            ctx.same(src, i, dst, i, "roll")


@rule("constant_pad_nd")
def _pad(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    shape = ctx.shape(src)
    pad = list(ctx.arg(1, "pad"))
    n = len(shape)
    padded = {}
    for k in range(len(pad) // 2):
        padded[n - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    for i, s in enumerate(shape):
        before, after = padded.get(i, (0, 0))
        if before == 0 and after == 0:
            ctx.same(src, i, dst, i, "pad")
            continue
        out_size = s + before + after
        owner = np.full(out_size, -1, dtype=im.INDEX)
        lo, hi = max(before, 0), min(out_size, before + s)
        owner[lo:hi] = np.arange(lo - before, hi - before)
        ctx.map(src, i, dst, i, im.OwnerMap(s, out_size, owner), "pad")


def _leading(k: int) -> Rule:
    """Ops acting on the last ``k`` (spatial) dims: every leading dim passes through."""
    def apply(ctx: RuleContext) -> None:
        src = ctx.arg(0)
        n = len(ctx.shape(src))
        for o in range(len(ctx.call.outputs)):
            dst = ctx.out(o)
            if dst is None or len(ctx.shape(dst)) != n:
                continue
            for i in range(n - k):
                ctx.same(src, i, dst, i, "spatial op")
    return apply


for _k, _names in {1: ("max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
                       "max_pool1d_with_indices", "upsample_linear1d", "upsample_nearest1d",
                       "_upsample_nearest_exact1d", "reflection_pad1d", "replication_pad1d",
                       "circular_pad1d", "_adaptive_avg_pool1d"),
                   2: ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
                       "_adaptive_avg_pool2d", "adaptive_max_pool2d", "upsample_nearest2d",
                       "upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bilinear2d_aa",
                       "_upsample_nearest_exact2d", "_upsample_bicubic2d_aa", "reflection_pad2d",
                       "replication_pad2d", "circular_pad2d", "grid_sampler_2d",
                       "mkldnn_max_pool2d", "fractional_max_pool2d", "lp_pool2d",
                       "_adaptive_avg_pool2d_backward", "max_pool2d_with_indices_backward"),
                   3: ("max_pool3d", "max_pool3d_with_indices", "avg_pool3d", "adaptive_avg_pool3d",
                       "_adaptive_avg_pool3d", "adaptive_max_pool3d", "upsample_nearest3d",
                       "upsample_trilinear3d", "_upsample_nearest_exact3d", "reflection_pad3d",
                       "replication_pad3d", "circular_pad3d", "grid_sampler_3d")}.items():
    for _n in _names:
        RULES[_n] = _leading(_k)


@rule("pixel_shuffle")
def _pixel_shuffle(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    n = len(ctx.shape(src))
    r = ctx.arg(1, "upscale_factor")
    for i in range(n - 3):
        ctx.same(src, i, dst, i, "pixel shuffle")
    cout = ctx.shape(dst)[n - 3]
    ctx.map(dst, n - 3, src, n - 3, im.pixel_shuffle_map(cout, r * r), "pixel shuffle")


@rule("pixel_unshuffle")
def _pixel_unshuffle(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    n = len(ctx.shape(src))
    r = ctx.arg(1, "downscale_factor")
    for i in range(n - 3):
        ctx.same(src, i, dst, i, "pixel unshuffle")
    cin = ctx.shape(src)[n - 3]
    ctx.map(src, n - 3, dst, n - 3, im.pixel_shuffle_map(cin, r * r), "pixel unshuffle")


@rule("repeat")
def _repeat(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    shape = ctx.shape(src)
    reps = list(ctx.arg(1, "repeats"))
    offset = len(reps) - len(shape)
    for i, s in enumerate(shape):
        r = reps[i + offset]
        if r == 1:
            ctx.same(src, i, dst, i + offset, "repeat")
        elif s > 1:
            ctx.map(src, i, dst, i + offset, im.repeat_map(s, r), "repeat")


@rule("repeat_interleave")
def _repeat_interleave(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    reps, dim = ctx.arg(1, "repeats"), ctx.arg(2, "dim")
    if not isinstance(reps, int) or dim is None or not isinstance(src, Ref):
        return
    shape = ctx.shape(src)
    dim %= len(shape)
    for i, s in enumerate(shape):
        if i == dim:
            ctx.map(src, i, dst, i, im.repeat_interleave_map(s, reps), "repeat_interleave")
        else:
            ctx.same(src, i, dst, i, "repeat_interleave")


@rule("index_select")
def _index_select(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    n = len(ctx.shape(src))
    dim = ctx.arg(1, "dim") % n
    for i in range(n):
        if i != dim:
            ctx.same(src, i, dst, i, "index_select")


@rule("index", "_unsafe_index")
def _index(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    indices = list(ctx.arg(1, "indices"))
    n = len(ctx.shape(src))
    idx_dims = [i for i, x in enumerate(indices) if x is not None]
    if not idx_dims:
        return
    consecutive = idx_dims == list(range(idx_dims[0], idx_dims[-1] + 1))
    bshape_len = max(len(ctx.shape(indices[i])) for i in idx_dims)
    rest = [i for i in range(n) if i not in idx_dims]
    if consecutive:
        out_pos = {}
        j = 0
        for i in range(n):
            if i in idx_dims:
                if i == idx_dims[0]:
                    j += bshape_len
                continue
            out_pos[i] = j
            j += 1
    else:
        out_pos = {i: bshape_len + k for k, i in enumerate(rest)}
    for i in rest:
        ctx.same(src, i, dst, out_pos[i], "index")


def _all_but_dim(ctx: RuleContext, base: Ref, others: tuple, why: str) -> None:
    """``dim`` (arg 1) is indexed; every other dim passes from ``base`` to the result, and is
    shared with the other tensor arguments of the same rank (index, source)."""
    dst = ctx.out(0)
    n = len(ctx.shape(base))
    dim = ctx.arg(1, "dim") % n
    others = [r for r in others if isinstance(r, Ref) and len(ctx.shape(r)) == n]
    for i in range(n):
        if i != dim:
            ctx.same(base, i, dst, i, why)
            for r in others:
                ctx.same(r, i, dst, i, f"{why} operand")


@rule("index_put", "index_put_", "_index_put_impl", "_index_put_impl_", "_unsafe_index_put")
def _index_put(ctx: RuleContext) -> None:
    """``out[idx] = values``: every dim of ``self`` passes to the result; ``values`` fills the
    indexed rows, so its trailing dims are the dims after the last indexed one (the channels
    of torchvision's MultiScaleRoIAlign, written level by level into one tensor)."""
    base, values, out = ctx.arg(0), ctx.arg(2, "values"), ctx.out(0)
    shape = ctx.shape(base)
    n = len(shape)
    for i in range(n):
        ctx.same(base, i, out, i, "index_put")
    indices = list(ctx.arg(1, "indices"))
    idx_dims = [i for i, x in enumerate(indices) if x is not None]
    if not isinstance(values, Ref) or not idx_dims:
        return
    vs = ctx.shape(values)
    for k, i in enumerate(range(n - 1, idx_dims[-1], -1)):
        j = len(vs) - 1 - k
        if j >= 0 and vs[j] == shape[i]:
            ctx.same(values, j, out, i, "index_put values")


@rule("roi_align", "roi_pool")
def _roi_align(ctx: RuleContext) -> None:
    """torchvision's ``roi_align(input [N, C, H, W], rois [K, 5])`` -> [K, C, h, w]: each box
    pools every channel on its own (Faster / Mask R-CNN's FPN levels)."""
    ctx.same(ctx.arg(0), 1, ctx.out(0), 1, "pooled channels")
    for o in range(1, len(ctx.call.outputs)):  # roi_pool's argmax
        if ctx.out(o) is not None:
            ctx.same(ctx.arg(0), 1, ctx.out(o), 1, "pooled channels")


@rule("gather")
def _gather(ctx: RuleContext) -> None:
    """out[i][j][k] = src[index[i][j][k]][j][k] (dim 0): the index shares every other dim
    (MAE's token shuffle keeps the hidden size prunable)."""
    _all_but_dim(ctx, ctx.arg(0), (ctx.arg(2, "index"),), "gather")


@rule("scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce",
      "scatter_reduce_")
def _scatter(ctx: RuleContext) -> None:
    _all_but_dim(ctx, ctx.arg(0), (ctx.arg(2, "index"), ctx.arg(3, "src")), "scatter")


@rule("index_add", "index_add_", "index_copy", "index_copy_", "index_reduce", "index_reduce_")
def _index_add(ctx: RuleContext) -> None:
    """self.index_add_(dim, index, source): rows of ``source`` land in rows of ``self``;
    every other dim (a MoE layer's hidden size) is shared by self, source and the result."""
    _all_but_dim(ctx, ctx.arg(0), (ctx.arg(3, "source"),), "index_add")


@rule("_grouped_mm")
def _grouped_mm(ctx: RuleContext) -> None:
    """One matmul per group (a MoE layer's experts): a [T, K] x b [E, K, N] -> [T, N] with
    row offsets, or a [E, M, K] x b [E, K, N] -> [E, M, N]."""
    a, b, out = ctx.arg(0), ctx.arg(1), ctx.out(0)
    ra, rb, ro = len(ctx.shape(a)), len(ctx.shape(b)), len(ctx.shape(out))
    ctx.same(a, -1, b, -2, "contracted in a grouped matmul")
    ctx.same(b, -1, out, -1, "grouped matmul columns")
    if ra == 2 and rb == 3 and ro == 2:
        ctx.same(a, 0, out, 0, "grouped matmul rows")
    elif ra == 3 and rb == 3 and ro == 3:
        ctx.same(a, 0, b, 0, "grouped matmul groups")
        ctx.same(a, 0, out, 0, "grouped matmul groups")
        ctx.same(a, 1, out, 1, "grouped matmul rows")
    bias = ctx.arg(3, "bias")
    if isinstance(bias, Ref) and len(ctx.shape(bias)) >= 1:
        ctx.same(bias, -1, out, -1, "grouped matmul bias")


@rule("_weight_norm_interface", "_weight_norm")
def _weight_norm(ctx: RuleContext) -> None:
    """w = g * v / ||v|| (norm over every dim but ``dim``): w keeps v's dims; g and the norms
    live along ``dim``. Cutting v along another dim changes the norm, exactly as zeroing
    those slices would (wav2vec2's positional conv)."""
    v, g, w = ctx.arg(0), ctx.arg(1), ctx.out(0)
    n = len(ctx.shape(v))
    dim = ctx.arg(2, "dim", 0) % n
    for i in range(n):
        ctx.same(v, i, w, i, "weight norm direction")
    if isinstance(g, Ref):
        ctx.same(g, dim, w, dim, "weight norm magnitude")
    norms = ctx.out(1)
    if norms is not None:
        ctx.same(norms, dim, w, dim, "weight norm")


@rule("view_as_complex")
def _view_as_complex(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    for i in range(len(ctx.shape(dst))):
        ctx.same(src, i, dst, i, "view_as_complex")


@rule("view_as_real")
def _view_as_real(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    for i in range(len(ctx.shape(src))):
        ctx.same(src, i, dst, i, "view_as_real")


@rule("glu")
def _glu(ctx: RuleContext) -> None:
    src, dst = ctx.arg(0), ctx.out(0)
    shape = ctx.shape(src)
    dim = ctx.arg(1, "dim", -1) % len(shape)
    for i in range(len(shape)):
        if i != dim:
            ctx.same(src, i, dst, i, "glu")
    halves = ctx.virtual("halves", 2, fixed=True)
    slot = ctx.virtual("slots", shape[dim] // 2)
    ctx.block([ctx.v(src, dim)], [halves, slot], "glu halves")
    ctx.map_vertices(slot, ctx.v(dst, dim), None, "glu")


# ------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------
def _reduce(dims_arg: int, keepdim_arg: int, all_dims_if_none: bool = True) -> Rule:
    def apply(ctx: RuleContext) -> None:
        src = ctx.arg(0)
        if not isinstance(src, Ref):
            return
        n = len(ctx.shape(src))
        dims = ctx.arg(dims_arg)
        if dims is None or dims == []:
            dims = list(range(n)) if all_dims_if_none else []
        if isinstance(dims, int):
            dims = [dims]
        keep = bool(ctx.arg(keepdim_arg, None, False))
        for o in range(len(ctx.call.outputs)):
            dst = ctx.out(o)
            if dst is None:
                continue
            for i, j in im.kept_dims(n, dims, keep):
                ctx.same(src, i, dst, j, "reduction")
        for d in dims:
            ctx.absorb(src, d % n if n else 0, "reduced over")
    return apply


for _n in ("sum", "mean", "amax", "amin", "nansum", "nanmean", "logsumexp", "any", "all",
           "count_nonzero"):
    RULES[_n] = _reduce(1, 2)
for _n in ("max", "min", "argmax", "argmin", "prod", "median", "nanmedian", "mode", "kthvalue",
           "cummax", "cummin"):
    RULES[_n] = _reduce(1, 2, all_dims_if_none=True)
for _n in ("var", "std", "var_mean", "std_mean"):
    RULES[_n] = _reduce(1, 3)
RULES["linalg_vector_norm"] = _reduce(2, 3)
RULES["norm"] = _reduce(2, 3)


@rule("topk", "sort", "argsort")
def _sorting(ctx: RuleContext) -> None:
    src = ctx.arg(0)
    n = len(ctx.shape(src))
    packet = ctx.call.packet
    dim = (ctx.arg(2, "dim", -1) if packet == "topk" else ctx.arg(1, "dim", -1))
    if not isinstance(dim, int):
        dim = -1
    dim %= n
    for o in range(len(ctx.call.outputs)):
        dst = ctx.out(o)
        for i in range(n):
            if i != dim:
                ctx.same(src, i, dst, i, "sort")


# ------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------
@rule("convolution", "_convolution", "mkldnn_convolution", "conv2d", "conv1d", "conv3d")
def _convolution(ctx: RuleContext) -> None:
    x, w, b = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    out = ctx.out(0)
    transposed = bool(ctx.arg(6, "transposed", False)) if ctx.call.packet in (
        "convolution", "_convolution") else False
    groups = ctx.arg(8, "groups", 1) if ctx.call.packet in ("convolution", "_convolution") else \
        ctx.arg(6, "groups", 1)
    groups = int(groups or 1)
    xs, ws = ctx.shape(x), ctx.shape(w)
    batched = len(xs) == len(ws)
    cd = 1 if batched else 0
    if batched:
        ctx.same(x, 0, out, 0, "batch")
    if not transposed:
        in_dim, out_dim = 1, 0  # weight (C_out, C_in / groups, k...)
    else:
        in_dim, out_dim = 0, 1  # weight (C_in, C_out / groups, k...)
    if isinstance(b, Ref):
        ctx.same(b, 0, out, cd, "bias")
    if groups == 1:
        ctx.same(x, cd, w, in_dim, "input channels")
        ctx.same(w, out_dim, out, cd, "output channels")
        return
    # grouped conv: channels are (group, slot); a group is pruned whole, a slot in every group
    g = ctx.virtual("groups", groups, attr="groups")
    cin, cout = xs[cd], ctx.shape(out)[cd]
    k_out = ctx.virtual("out slots", cout // groups)
    ctx.block([ctx.v(out, cd)], [g, k_out], "grouped conv output")
    if not transposed:
        ctx.same(w, 0, out, cd, "output channels")
        ctx.block([ctx.v(x, cd)], [g, ctx.v(w, 1)], "grouped conv input")
    else:
        ctx.same(x, cd, w, 0, "input channels")
        k_in = ctx.virtual("in slots", cin // groups)
        ctx.block([ctx.v(x, cd)], [g, k_in], "grouped conv input")
        ctx.map_vertices(k_out, ctx.v(w, 1), None, "grouped conv weight")


@rule("mm")
def _mm(ctx: RuleContext) -> None:
    a, b, out = ctx.arg(0), ctx.arg(1), ctx.out(0)
    ctx.same(a, 0, out, 0, "matmul rows")
    ctx.same(b, 1, out, 1, "matmul columns")
    ctx.same(a, 1, b, 0, "contracted in a matmul")


@rule("addmm")
def _addmm(ctx: RuleContext) -> None:
    bias, a, b, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out(0)
    ctx.same(a, 0, out, 0, "matmul rows")
    ctx.same(b, 1, out, 1, "matmul columns")
    ctx.same(a, 1, b, 0, "contracted in a matmul")
    ctx.broadcast([bias], out, "bias")


@rule("bmm")
def _bmm(ctx: RuleContext) -> None:
    a, b, out = ctx.arg(0), ctx.arg(1), ctx.out(0)
    ctx.same(a, 0, out, 0, "batched matmul batch")
    ctx.same(b, 0, out, 0, "batched matmul batch")
    ctx.same(a, 1, out, 1, "matmul rows")
    ctx.same(b, 2, out, 2, "matmul columns")
    ctx.same(a, 2, b, 1, "contracted in a matmul")


@rule("baddbmm")
def _baddbmm(ctx: RuleContext) -> None:
    bias, a, b, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out(0)
    ctx.same(a, 0, out, 0, "batched matmul batch")
    ctx.same(b, 0, out, 0, "batched matmul batch")
    ctx.same(a, 1, out, 1, "matmul rows")
    ctx.same(b, 2, out, 2, "matmul columns")
    ctx.same(a, 2, b, 1, "contracted in a matmul")
    ctx.broadcast([bias], out, "bias")


@rule("mv")
def _mv(ctx: RuleContext) -> None:
    a, b, out = ctx.arg(0), ctx.arg(1), ctx.out(0)
    ctx.same(a, 0, out, 0, "matmul rows")
    ctx.same(a, 1, b, 0, "contracted in a matmul")


@rule("dot", "vdot")
def _dot(ctx: RuleContext) -> None:
    ctx.same(ctx.arg(0), 0, ctx.arg(1), 0, "contracted in a dot product")


@rule("addmv")
def _addmv(ctx: RuleContext) -> None:
    bias, a, b, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out(0)
    ctx.same(a, 0, out, 0, "matmul rows")
    ctx.same(a, 1, b, 0, "contracted in a matmul")
    ctx.broadcast([bias], out, "bias")


@rule("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
      "_scaled_dot_product_efficient_attention", "_scaled_dot_product_attention_math",
      "_scaled_dot_product_cudnn_attention", "scaled_dot_product_attention",
      "_scaled_dot_product_attention_math_for_mps", "_scaled_dot_product_fused_attention_overrideable")
def _sdpa(ctx: RuleContext) -> None:
    q, k, v = ctx.arg(0), ctx.arg(1), ctx.arg(2)
    out = ctx.out(0)
    qs, ks, vs = ctx.shape(q), ctx.shape(k), ctx.shape(v)
    n = len(qs)
    os_ = ctx.shape(out)
    # leading (batch, heads) dims, right-aligned over the last two
    for t in (q, k, v):
        ts = ctx.shape(t)
        for i in range(len(ts) - 2):
            j = i + (len(os_) - len(ts))
            if 0 <= j < len(os_) - 2:
                if ts[i] == os_[j]:
                    ctx.same(t, i, out, j, "attention batch/heads")
                elif ts[i] > 1 and os_[j] % ts[i] == 0:  # grouped-query attention
                    ctx.map(t, i, out, j, im.repeat_interleave_map(ts[i], os_[j] // ts[i]),
                            "grouped-query attention")
    ctx.same(q, n - 2, out, len(os_) - 2, "attention queries")
    ctx.same(v, len(vs) - 1, out, len(os_) - 1, "attention values")
    ctx.same(q, n - 1, k, len(ks) - 1, "query/key dot product")
    ctx.same(k, len(ks) - 2, v, len(vs) - 2, "keys/values")
    mask = ctx.call.kwargs.get("attn_mask", None)
    if mask is None and ctx.call.packet == "_scaled_dot_product_attention_math":
        mask = ctx.arg(3)
    if isinstance(mask, Ref):
        ms = ctx.shape(mask)
        for i in range(len(ms)):
            j = i + (len(os_) - len(ms))
            if j == len(os_) - 1:
                if ms[i] == ks[-2]:
                    ctx.same(mask, i, k, len(ks) - 2, "attention mask")
            elif 0 <= j and ms[i] == os_[j]:
                ctx.same(mask, i, out, j, "attention mask")
    for o in range(1, len(ctx.call.outputs)):
        extra = ctx.out(o)
        if extra is None:
            continue
        es = ctx.shape(extra)
        for i in range(min(len(es), len(os_) - 1)):
            if es[i] == os_[i]:
                ctx.same(extra, i, out, i, "attention statistics")


@rule("embedding")
def _embedding(ctx: RuleContext) -> None:
    w, idx, out = ctx.arg(0), ctx.arg(1), ctx.out(0)
    ishape = ctx.shape(idx)
    for i in range(len(ishape)):
        ctx.same(idx, i, out, i, "token positions")
    ctx.same(w, 1, out, len(ishape), "embedding dim")


@rule("native_layer_norm", "layer_norm", "_fused_rms_norm", "rms_norm")
def _layer_norm(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out(0)
    xs = ctx.shape(x)
    normalized = list(ctx.arg(1, "normalized_shape"))
    k = len(normalized)
    for i in range(len(xs)):
        ctx.same(x, i, out, i, "normalized")
    pos = 2
    for p in (ctx.arg(pos), ctx.arg(pos + 1, "bias") if ctx.call.packet in (
            "native_layer_norm", "layer_norm") else None):
        if isinstance(p, Ref):
            for j in range(k):
                ctx.same(p, j, out, len(xs) - k + j, "norm weight")
    for o in range(1, len(ctx.call.outputs)):
        stat = ctx.out(o)
        if stat is not None:
            for i in range(len(xs) - k):
                ctx.same(x, i, stat, i, "norm statistics")


@rule("native_group_norm")
def _group_norm(ctx: RuleContext) -> None:
    x, w, b, out = ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.out(0)
    xs = ctx.shape(x)
    groups = int(ctx.arg(6, "group"))
    for i in range(len(xs)):
        ctx.same(x, i, out, i, "group norm")
    for p in (w, b):
        if isinstance(p, Ref):
            ctx.same(p, 0, out, 1, "norm weight")
    g = ctx.virtual("groups", groups, attr="num_groups")
    slot = ctx.virtual("channels per group", xs[1] // groups)
    ctx.block([ctx.v(x, 1)], [g, slot], "group norm groups")
    for o in (1, 2):
        stat = ctx.out(o)
        if stat is not None:
            ctx.same(x, 0, stat, 0, "norm statistics")
            ctx.map_vertices(g, ctx.v(stat, 1), None, "group statistics")


@rule("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
      "_native_batch_norm_legit_functional", "batch_norm", "cudnn_batch_norm",
      "miopen_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update",
      "_batch_norm_with_update_functional")
def _batch_norm(ctx: RuleContext) -> None:
    x, out = ctx.arg(0), ctx.out(0)
    xs = ctx.shape(x)
    for i in range(len(xs)):
        ctx.same(x, i, out, i, "batch norm")
    for p in ctx.call.args[1:5]:
        if isinstance(p, Ref) and len(ctx.shape(p)) == 1:
            ctx.same(p, 0, out, 1, "norm parameters")
    for o in range(1, len(ctx.call.outputs)):
        stat = ctx.out(o)
        if stat is not None and len(ctx.shape(stat)) == 1 and ctx.shape(stat)[0] == xs[1]:
            ctx.same(stat, 0, out, 1, "norm statistics")


RULES["_prelu_kernel"] = _elementwise  # its weight arrives already viewed as (1, C, 1, 1)


@rule("prelu")
def _prelu(ctx: RuleContext) -> None:
    x, w, out = ctx.arg(0), ctx.arg(1), ctx.out(0)
    xs = ctx.shape(x)
    for i in range(len(xs)):
        ctx.same(x, i, out, i, "prelu")
    if isinstance(w, Ref) and len(xs) > 1:
        ctx.same(w, 0, out, 1, "prelu weight")
