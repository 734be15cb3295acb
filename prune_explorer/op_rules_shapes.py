"""Op rules, part two: ops that move, split, join, index or reshape a tensor's dims (views,
cat and split, slicing and indexing, padding, pixel shuffles). The table and ``RuleContext``
are in ``op_rules.py``, which loads this module.
"""

from __future__ import annotations

from math import prod

import numpy as np

from . import index_mapping as im
from .graph import Ref
from .op_rules import RULES, Rule, RuleContext, rule


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
