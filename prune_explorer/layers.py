"""The one layer registry: what a layer type's channels are called, which of its tensors each
side of pruning touches, and its classic prune functions.

For ordinary layers (conv, linear, norms, embeddings, PReLU) the *coupling* is read from the
ATen ops they run, so a subclass with its own forward (timm's ``LayerNorm2d``, ``Conv2dSame``)
is handled without an entry. An entry adds: the names in printed plans, how many channels a
layer has, which parameter dims are its output side and input side, and how to re-derive its
size attributes. *Opaque* entries (``nn.MultiheadAttention``, user-registered custom layers)
are traced as black boxes: their entry declares how their inputs' and outputs' channels relate
and how to prune them.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from . import pruners as P
from .graph import Node, Ref

ParamDims = tuple[tuple[str, int], ...]


@dataclass
class LayerSpec:
    out_fn: Callable | None
    in_fn: Callable | None
    out_params: Callable[[nn.Module], ParamDims] = lambda m: ()
    in_params: Callable[[nn.Module], ParamDims] = lambda m: ()
    coupled: Callable[[nn.Module], bool] = lambda m: False
    in_channels: Callable[[nn.Module], int | None] = lambda m: None
    out_channels: Callable[[nn.Module], int | None] = lambda m: None
    expected_input: Callable[[nn.Module], str] | None = None
    # size attributes as a function of the new input shape, for layers that may have no
    # tensor to cut (an InstanceNorm without affine weights)
    size_attrs: Callable[[nn.Module, tuple], list] | None = None
    # opaque layers only
    relations: Callable[[Any, nn.Module, Node], None] | None = None
    prune: Callable[[nn.Module, dict, bool], int] | None = None
    macs: Callable[[nn.Module, Node, Any, dict], int] | None = None

    @property
    def opaque(self) -> bool:
        return self.relations is not None


class LayerRegistry:
    """Layer type -> spec, looked up along the MRO. ``child()`` gives a registry that sees
    this one's entries and can add its own (a DependencyGraph's customized layers)."""

    def __init__(self, parent: "LayerRegistry | None" = None):
        self._table: dict[type, LayerSpec] = {}
        self._by_name: dict[str, LayerSpec] = {}
        self.parent = parent
        self._memo: dict[type, tuple] = {}  # type -> (spec, owner class), cleared on register

    def child(self) -> "LayerRegistry":
        return LayerRegistry(self)

    def register(self, layer_type: type | str, spec: LayerSpec) -> None:
        self._memo.clear()
        if isinstance(layer_type, str):
            self._by_name[layer_type] = spec
        else:
            self._table[layer_type] = spec

    def _find(self, module: nn.Module) -> tuple[LayerSpec | None, type | None]:
        return self._find_type(type(module))

    def _find_type(self, t: type) -> tuple[LayerSpec | None, type | None]:
        hit = self._memo.get(t)
        if hit is None:
            hit = self._memo[t] = self._walk(t)
        return hit

    def _walk(self, t: type) -> tuple[LayerSpec | None, type | None]:
        for cls in t.__mro__:
            spec = self._table.get(cls) or self._by_name.get(cls.__name__)
            if spec is not None:
                return spec, cls
        # the shared registry remembers its answers across graphs
        return self.parent._find_type(t) if self.parent is not None else (None, None)

    def lookup(self, module: nn.Module) -> LayerSpec | None:
        return self._find(module)[0]

    def is_opaque(self, module: nn.Module) -> bool:
        spec, owner = self._find(module)
        if spec is None or not spec.opaque:
            return False
        # an opaque entry for a base class does not cover a subclass with its own forward
        return type(module).forward is owner.forward

    def describe_expected_input(self, module: nn.Module) -> str | None:
        spec = self.lookup(module)
        if spec is None or spec.expected_input is None:
            return None
        try:
            return spec.expected_input(module)
        except Exception:
            return None


# ---------------------------------------------------------------------------------------------
# built-in entries
# ---------------------------------------------------------------------------------------------
def _conv_spec() -> LayerSpec:
    def out_params(m):
        return (("weight", 1 if m.transposed else 0), ("bias", 0))

    def in_params(m):
        return (("weight", 0 if m.transposed else 1),)

    def expected(m):
        nd = len(m.kernel_size)
        spatial = ", ".join(["H", "W", "D"][:nd]) if nd > 1 else "L"
        return f"a float tensor of shape [N, {m.in_channels}, {spatial}]"

    return LayerSpec(
        out_fn=P.prune_conv, in_fn=P.prune_related_conv, out_params=out_params,
        in_params=in_params,
        coupled=lambda m: m.groups > 1 and m.groups == m.in_channels,
        in_channels=lambda m: m.in_channels, out_channels=lambda m: m.out_channels,
        expected_input=expected)


def _norm_spec(fn, channels: Callable[[nn.Module], int], expected=None,
               size_attrs=None) -> LayerSpec:
    dims = (("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0))
    return LayerSpec(out_fn=fn, in_fn=fn, out_params=lambda m: dims, in_params=lambda m: dims,
                     coupled=lambda m: True, in_channels=channels, out_channels=channels,
                     expected_input=expected, size_attrs=size_attrs)


def _instance_features(m, shape) -> list:
    """num_features = the input's channel dim (dim 1 batched, dim 0 unbatched)."""
    batched = len(shape) > m._get_no_batch_dim()
    return [("num_features", shape[1] if batched else shape[0])]


def _mha_relations(ctx, m: nn.MultiheadAttention, node: Node) -> None:
    """Query dim == embed_dim == output dim in torch's MHA: one coupled set, split in heads."""
    roles = dict(zip(node.arg_names, node.inputs))
    query = roles.get("arg0", roles.get("query"))
    key = roles.get("arg1", roles.get("key"))
    value = roles.get("arg2", roles.get("value"))
    if query is None or not node.outputs:
        return
    out = node.outputs[0]
    g = ctx.b.graph
    qs, os_ = g.values[query].shape, g.values[out].shape
    embed = ctx.virtual("embed", m.embed_dim)
    heads = ctx.virtual("heads", m.num_heads, attr="num_heads")
    hd = ctx.virtual("head_dim", m.head_dim)
    ctx.block([embed], [heads, hd], "heads of nn.MultiheadAttention")
    ctx.map_vertices(embed, ctx.v(Ref(query), len(qs) - 1), None, "query embedding")
    ctx.map_vertices(embed, ctx.v(Ref(out), len(os_) - 1), None, "attention output")
    for i in range(len(qs) - 1):
        ctx.same(Ref(query), i, Ref(out), i, "tokens and batch")
    if m._qkv_same_embed_dim:
        for t in (key, value):
            if t is not None and t != query:
                ctx.map_vertices(embed, ctx.v(Ref(t), len(g.values[t].shape) - 1), None,
                                 "key/value embedding (shared in_proj columns)")
    if key is not None and value is not None and key != value:
        ks, _vs = g.values[key].shape, g.values[value].shape
        for i in range(len(ks) - 1):
            ctx.same(Ref(key), i, Ref(value), i, "keys/values")


def _mha_prune(m: nn.MultiheadAttention, sets: dict, dry_run: bool) -> int:
    idxs = sorted(int(i) for i in sets.get("embed", ()))
    heads = len(sets.get("heads", ()))
    if not idxs:
        return 0
    _, n = P._prune_mha(m, idxs, heads, True, dry_run)
    return n


def _mha_macs(m: nn.MultiheadAttention, node: Node, graph, removed: dict) -> int:
    roles = dict(zip(node.arg_names, node.inputs))
    q = roles.get("arg0", roles.get("query"))
    k = roles.get("arg1", roles.get("key", q))
    if q is None:
        return 0
    qs, ks = graph.values[q].shape, graph.values[k].shape
    if len(qs) == 3:
        n_batch = qs[0] if m.batch_first else qs[1]
        L = qs[1] if m.batch_first else qs[0]
        S = ks[1] if m.batch_first else ks[0]
    else:
        n_batch, L, S = 1, qs[0], ks[0]
    E = m.embed_dim - len(removed.get("embed", ()))
    kd = m.kdim if not m._qkv_same_embed_dim else E
    vd = m.vdim if not m._qkv_same_embed_dim else E
    return n_batch * (L * E * E + S * E * kd + S * E * vd + 2 * L * S * E + L * E * E)


def _embedding_spec() -> LayerSpec:
    return LayerSpec(
        out_fn=P.prune_embedding, in_fn=P.prune_related_embedding,
        out_params=lambda m: (("weight", 1),), in_params=lambda m: (("weight", 0),),
        in_channels=lambda m: m.num_embeddings, out_channels=lambda m: m.embedding_dim,
        expected_input=lambda m: f"integer token ids (values below {m.num_embeddings})")


def default_registry() -> LayerRegistry:
    reg = LayerRegistry()
    reg.register(nn.modules.conv._ConvNd, _conv_spec())
    reg.register(nn.Linear, LayerSpec(
        out_fn=P.prune_linear, in_fn=P.prune_related_linear,
        out_params=lambda m: (("weight", 0), ("bias", 0)), in_params=lambda m: (("weight", 1),),
        in_channels=lambda m: m.in_features, out_channels=lambda m: m.out_features,
        expected_input=lambda m: f"a float tensor whose last dim is {m.in_features}"))
    reg.register(nn.modules.batchnorm._BatchNorm, _norm_spec(
        P.prune_batchnorm, lambda m: m.num_features,
        lambda m: f"a float tensor of shape [N, {m.num_features}, ...]",
        lambda m, shape: [("num_features", shape[1] if len(shape) > 1 else shape[0])]))
    reg.register(nn.modules.instancenorm._InstanceNorm, _norm_spec(
        P.prune_instancenorm, lambda m: m.num_features,
        lambda m: f"a float tensor of shape [N, {m.num_features}, ...]",
        _instance_features))
    reg.register(nn.LayerNorm, _norm_spec(
        P.prune_layernorm, lambda m: m.normalized_shape[0],
        lambda m: f"a float tensor whose last dims are {list(m.normalized_shape)}",
        lambda m, shape: [("normalized_shape", tuple(shape[len(shape) - len(
            m.normalized_shape):]))]))
    reg.register(nn.GroupNorm, _norm_spec(
        P.prune_groupnorm, lambda m: m.num_channels,
        lambda m: f"a float tensor of shape [N, {m.num_channels}, ...]",
        lambda m, shape: [("num_channels", shape[1] if len(shape) > 1 else shape[0])]))
    if hasattr(nn, "RMSNorm"):
        reg.register(nn.RMSNorm, _norm_spec(
            P.prune_layernorm, lambda m: m.normalized_shape[0],
            lambda m: f"a float tensor whose last dims are {list(m.normalized_shape)}"))
    reg.register(nn.PReLU, LayerSpec(
        out_fn=P.prune_prelu, in_fn=P.prune_prelu,
        out_params=lambda m: (("weight", 0),), in_params=lambda m: (("weight", 0),),
        coupled=lambda m: True, in_channels=lambda m: m.num_parameters,
        out_channels=lambda m: m.num_parameters))
    reg.register(nn.Embedding, _embedding_spec())
    reg.register(nn.MultiheadAttention, LayerSpec(
        out_fn=P.prune_multihead_attention, in_fn=P.prune_related_multihead_attention,
        coupled=lambda m: True, in_channels=lambda m: m.embed_dim,
        out_channels=lambda m: m.embed_dim, relations=_mha_relations, prune=_mha_prune,
        macs=_mha_macs,
        expected_input=lambda m: (f"query/key/value float tensors whose last dim is "
                                  f"{m.embed_dim}")))
    reg.register("Conv1D", LayerSpec(  # Hugging Face GPT-2's transposed Linear
        out_fn=None, in_fn=None,
        out_params=lambda m: (("weight", 1), ("bias", 0)), in_params=lambda m: (("weight", 0),),
        in_channels=lambda m: m.weight.shape[0], out_channels=lambda m: m.weight.shape[1]))
    return reg


REGISTRY = default_registry()


# ---------------------------------------------------------------------------------------------
# customized layers (classic API and a direct one)
# ---------------------------------------------------------------------------------------------
def customized_spec(in_ch_pruning_fn: Callable, out_ch_pruning_fn: Callable,
                    get_in_ch_fn: Callable, get_out_ch_fn: Callable) -> LayerSpec:
    """A black-box layer: its input channels are pruned with ``in_ch_pruning_fn``, its output
    channels with ``out_ch_pruning_fn``. Inputs and outputs are the *same* channels (like a
    BatchNorm) when ``get_in_ch_fn`` or ``get_out_ch_fn`` returns None, or when one function
    prunes both sides of a layer with as many inputs as outputs (the classic convention)."""

    def coupled(m: nn.Module) -> bool:
        cin, cout = get_in_ch_fn(m), get_out_ch_fn(m)
        return cin is None or cout is None or (
            in_ch_pruning_fn is out_ch_pruning_fn and cin == cout)

    def relations(ctx, m: nn.Module, node: Node) -> None:
        g = ctx.b.graph
        tensor_inputs = [v for v in node.inputs if g.values[v].kind in ("activation", "input")]
        if not tensor_inputs or not node.outputs:
            return
        x, y = tensor_inputs[0], node.outputs[0]
        xs, ys = g.values[x].shape, g.values[y].shape
        cin, cout = get_in_ch_fn(m), get_out_ch_fn(m)
        if coupled(m):
            c = cout if cout is not None else cin
            dx = _channel_dim(xs, c)
            dy = _channel_dim(ys, c if c is not None else xs[dx] if dx is not None else None)
            if dx is None or dy is None:
                return
            ch = ctx.virtual("channels", xs[dx])
            ctx.map_vertices(ch, ctx.v(Ref(x), dx), None, "customized layer input")
            ctx.map_vertices(ch, ctx.v(Ref(y), dy), None, "customized layer output")
        else:
            dx, dy = _channel_dim(xs, cin), _channel_dim(ys, cout)
            if dx is not None:
                ctx.map_vertices(ctx.virtual("in channels", cin), ctx.v(Ref(x), dx), None,
                                 "customized layer input")
            if dy is not None:
                ctx.map_vertices(ctx.virtual("out channels", cout), ctx.v(Ref(y), dy), None,
                                 "customized layer output")
        if len(xs) == len(ys):
            for i in range(len(xs)):
                if xs[i] == ys[i] and i not in (dx, dy):
                    ctx.same(Ref(x), i, Ref(y), i, "passes through")

    def prune(m: nn.Module, sets: dict, dry_run: bool) -> int:
        total = 0
        for name, fn in (("channels", out_ch_pruning_fn), ("out channels", out_ch_pruning_fn),
                         ("in channels", in_ch_pruning_fn)):
            idxs = sorted(int(i) for i in sets.get(name, ()))
            if idxs:
                total += _call_classic(fn, m, idxs, dry_run)
        return total

    return LayerSpec(out_fn=out_ch_pruning_fn, in_fn=in_ch_pruning_fn, coupled=coupled,
                     in_channels=get_in_ch_fn, out_channels=get_out_ch_fn,
                     relations=relations, prune=prune)


def _channel_dim(shape, c) -> int | None:
    if not shape:
        return None
    if c is None:
        return 1 if len(shape) > 1 else 0
    for d in [1, len(shape) - 1] + list(range(len(shape))):
        if 0 <= d < len(shape) and shape[d] == c:
            return d
    return None


def _call_classic(fn: Callable, m: nn.Module, idxs: list[int], dry_run: bool) -> int:
    """Run a user's prune function; count the parameters it removes."""
    params = inspect.signature(fn).parameters
    if dry_run:
        if "dry_run" in params:
            out = fn(m, idxs, dry_run=True)
            return int(out[1]) if isinstance(out, tuple) and len(out) > 1 else 0
        clone = copy.deepcopy(m)
        before = sum(p.numel() for p in clone.parameters())
        fn(clone, idxs)
        return before - sum(p.numel() for p in clone.parameters())
    before = sum(p.numel() for p in m.parameters())
    result = fn(m, idxs)
    if isinstance(result, tuple) and result and isinstance(result[0], nn.Module) and \
            result[0] is not m:
        raise TypeError(f"{getattr(fn, '__name__', fn)} returned a new module; customized "
                        f"prune functions must prune the layer in place")
    return before - sum(p.numel() for p in m.parameters())


def register_layer(layer_type: type, in_ch_pruning_fn: Callable, out_ch_pruning_fn: Callable,
                   get_in_ch_fn: Callable, get_out_ch_fn: Callable,
                   registry: LayerRegistry | None = None) -> None:
    """Register a custom layer type for every DependencyGraph (or for ``registry``)."""
    (registry or REGISTRY).register(layer_type, customized_spec(
        in_ch_pruning_fn, out_ch_pruning_fn, get_in_ch_fn, get_out_ch_fn))
