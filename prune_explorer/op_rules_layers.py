"""Op rules, part three: the ops of layers (convolutions, matmuls, attention, embeddings,
norms). The table and ``RuleContext`` are in ``op_rules.py``, which loads this module.
"""

from __future__ import annotations

from . import index_mapping as im
from .graph import Ref
from .op_rules import RULES, RuleContext, _elementwise, rule


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
