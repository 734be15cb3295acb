"""The table of ATen ops we understand: for each, how its dims relate to its inputs' dims.

A rule reads one recorded ``Call`` (exact arguments, shapes of every tensor) and declares
relations through a ``RuleContext``: ``map`` (an owner map between two dims), ``block`` (a
reshape between lists of dims) or ``absorb`` (the op consumes the dim, e.g. a reduction).
An op with no rule declares nothing: channels that reach it stop there, and a plan that
needs to carry channels through it is refused with the op's name.

Elementwise ops need no entry: PyTorch tags them ``torch.Tag.pointwise``. The rules come in
three files: here the table, ``RuleContext``, elementwise ops and reductions;
``op_rules_shapes.py`` the ops that move, split, join or index dims; ``op_rules_layers.py``
the ops of layers (convolutions, matmuls, attention, norms).
"""

from __future__ import annotations

from typing import Callable

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

    __slots__ = ("b", "node", "call", "key", "_values", "_inputs", "_outputs")

    def __init__(self, builder, node, call, call_key, inputs=frozenset(), outputs=frozenset()):
        self.b = builder
        self.node = node
        self.call = call
        self.key = call_key
        self._values = builder.graph.values
        self._inputs = inputs  # value ids the call reads, and those it makes
        self._outputs = outputs

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
        """An identity between two dims of the same size (``v`` inlined: the most common
        relation of all). Both vertices are made, as ``v`` would, even when the sizes
        differ."""
        values, dg = self._values, self.b
        vertex_of = dg.vertex_of
        sa = values[a.value].shape
        if not sa:
            return
        da %= len(sa)
        n = sa[da]
        if n <= 1:  # a batch dim of 1: nothing to relate
            return
        ka = (a.value, da)
        va = vertex_of.get(ka)
        if va is None:
            va = dg.vertex_at(ka, n)
        sb = values[b.value].shape
        if not sb:
            return
        db %= len(sb)
        m = sb[db]
        if m <= 1:
            return
        kb = (b.value, db)
        vb = vertex_of.get(kb)
        if vb is None:
            vb = dg.vertex_at(kb, m)
        if m == n:
            dg.add_map(va, vb, None, self, why)

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


# the other families register themselves in RULES when loaded (they import ``rule`` from here)
from . import op_rules_layers, op_rules_shapes  # noqa: E402, F401

