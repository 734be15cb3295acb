"""Random architectures and random plans for property-based fuzzing of the engine.

Everything is drawn through a tiny ``Draw`` interface, so the same generator runs under
hypothesis (``HypothesisDraw``: shrinking, a stable CI run) and under a plain seeded RNG
(``RandomDraw``: the long run in ``benchmarks/fuzz.py``, where each failure is reproducible
from its seed).

``run_example(draw)`` builds one random model, runs a few random plans on it (classic plans
with random roots, sides and indices; ``select_channels`` with a random strategy, amount and
round_to; ``prune_model``) and checks after each:

- a plan refused at plan time (a clear ``PruningError``) leaves the model bit-identical;
- an executed plan removes exactly the parameters and MACs it predicted (parameters counted
  by ``tp.utils.count_params``, MACs measured by ``torch.utils.flop_counter``);
- the pruned model computes what its masked twin computes (where no channel-mixing norm or
  attention scale is touched; otherwise it runs and keeps its output shapes);
- the graph is still fresh, the model re-traces from scratch, and a further plan works;
- finally, the recorded history (through JSON) replays on a copy of the original model and
  gives bit-identical tensors and outputs (what ``tp.load`` relies on).
"""

from __future__ import annotations

import copy
import json
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
import rule_coverage
from oracle import masked_twin, outputs, snapshot, state_equal


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
class Draw:
    def int(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def choice(self, seq):
        seq = list(seq)
        return seq[self.int(0, len(seq) - 1)]

    def float(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.int(0, 1000) / 1000

    def subset(self, n: int, k: int) -> list[int]:
        """k distinct integers from range(n), sorted."""
        pool = list(range(n))
        out = []
        for _ in range(k):
            out.append(pool.pop(self.int(0, len(pool) - 1)))
        return sorted(out)

    def note(self, text: str) -> None:
        pass


class RandomDraw(Draw):
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.notes: list[str] = []

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)

    def note(self, text):
        self.notes.append(text)


class HypothesisDraw(Draw):
    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def subset(self, n, k):
        return sorted(self.data.draw(self.st.lists(self.st.integers(0, n - 1), min_size=k,
                                                   max_size=k, unique=True)))

    def note(self, text):
        from hypothesis import note
        note(text)


# ---------------------------------------------------------------------------------------------
# building blocks (every size a forward needs is read from an attribute or a tensor, as real
# models do, so that exec can update it)
# ---------------------------------------------------------------------------------------------
ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "none": nn.Identity}


class ConvUnit(nn.Module):
    def __init__(self, cin, cout, k=3, groups=1, bias=True, bn=True, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = ACTS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, body, proj=None, act="relu"):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.proj = proj if proj is not None else nn.Identity()
        self.act = ACTS[act]()

    def forward(self, x):
        return self.act(self.body(x) + self.proj(x))


class Concat(nn.Module):
    def __init__(self, branches, identity):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.identity = identity

    def forward(self, x):
        parts = [x] if self.identity else []
        return torch.cat(parts + [b(x) for b in self.branches], 1)


class Split(nn.Module):
    """split by sizes held in a list, chunk into equal parts, or two slices at self.first."""

    def __init__(self, how, sizes, branches, merge):
        super().__init__()
        self.how, self.merge = how, merge
        # only the attribute this forward reads: an unused attribute holding the same value
        # makes the attribute update ambiguous (see the report; exec then fails, restored)
        if how == "split":
            self.split_sizes = list(sizes)
        elif how == "chunk":
            self.chunks = len(sizes)
        else:
            self.first = sizes[0]
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        if self.how == "split":
            parts = torch.split(x, self.split_sizes, dim=1)
        elif self.how == "chunk":
            parts = x.chunk(self.chunks, dim=1)
        else:
            parts = (x[:, :self.first], x[:, self.first:])
        outs = [b(p) for b, p in zip(self.branches, parts)]
        if self.merge == "add":
            y = outs[0]
            for o in outs[1:]:
                y = y + o
            return y
        return torch.cat(outs, 1)


class SE(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class ChannelsLastMLP(nn.Module):
    """ConvNeXt-style: permute to channels-last, [LayerNorm,] Linear, GELU, Linear, [scale]."""

    def __init__(self, c, hidden, norm, scale):
        super().__init__()
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5) if scale else None

    def forward(self, x):
        h = self.fc2(F.gelu(self.fc1(self.norm(x.permute(0, 2, 3, 1)))))
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.permute(0, 3, 1, 2)


class Shuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous()
        return x.view(b, c, h, w)


class ToTokens(nn.Module):
    def __init__(self, c, tokens, cls):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, c)) if cls else None
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + (1 if cls else 0), c) * 0.1)

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        return x + self.pos_embed


class ImageHead(nn.Module):
    def __init__(self, how, c, k, pool):
        super().__init__()
        self.how, self.pool = how, pool
        if how == "conv":
            self.fc = nn.Conv2d(c, k, 1)
        elif how == "gap":
            self.fc = nn.Linear(c, k)
        else:
            self.fc = nn.Linear(c * pool * pool, k)

    def forward(self, x):
        if self.how == "conv":
            return self.fc(x)
        if self.how == "gap":
            return self.fc(x.mean((2, 3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, self.pool), 1))


class LinearAct(nn.Module):
    def __init__(self, din, dout, act):
        super().__init__()
        self.fc = nn.Linear(din, dout)
        self.act = ACTS[act]()

    def forward(self, x):
        return self.act(self.fc(x))


class MLPBlock(nn.Module):
    def __init__(self, d, hidden, norm):
        super().__init__()
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class MHABlock(nn.Module):
    def __init__(self, d, heads, norm):
        super().__init__()
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        h = self.norm(x)
        return x + self.attn(h, h, h, need_weights=False)[0]


class Attention(nn.Module):
    """Hand-written attention: q/k/v (separate or fused) reshaped to heads, matmul/softmax or
    scaled_dot_product_attention, heads merged back with -1 or an attribute."""

    def __init__(self, d, heads, head_dim, fused, merge, kernel, norm):
        super().__init__()
        self.num_heads, self.head_dim = heads, head_dim
        self.all_head_size = heads * head_dim
        self.fused, self.merge, self.kernel = fused, merge, kernel
        self.scale = head_dim ** -0.5  # fixed at init: pruning head dims keeps the scale
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        if fused:
            self.qkv = nn.Linear(d, 3 * self.all_head_size)
        else:
            self.q = nn.Linear(d, self.all_head_size)
            self.k = nn.Linear(d, self.all_head_size)
            self.v = nn.Linear(d, self.all_head_size)
        self.proj = nn.Linear(self.all_head_size, d)

    def forward(self, x):
        B, T, _ = x.shape
        h = self.norm(x)
        if self.fused:
            qkv = self.qkv(h).reshape(B, T, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
                       for t in (self.q(h), self.k(h), self.v(h)))
        if self.kernel == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            o = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1) @ v
        o = o.transpose(1, 2)
        o = o.reshape(B, T, -1) if self.merge == "-1" else o.reshape(B, T, self.all_head_size)
        return x + self.proj(o)


class TokenSplit(nn.Module):
    def __init__(self, sizes, outs):
        super().__init__()
        self.split_sizes = list(sizes)
        self.fcs = nn.ModuleList(nn.Linear(s, o) for s, o in zip(sizes, outs))

    def forward(self, x):
        return torch.cat([fc(p) for fc, p in zip(self.fcs, x.split(self.split_sizes, -1))], -1)


class TokenHead(nn.Module):
    def __init__(self, how, d, k):
        super().__init__()
        self.how = how
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        if self.how == "mean":
            x = x.mean(1)
        elif self.how == "cls":
            x = x[:, 0]
        return self.fc(x)


class FuzzNet(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


# ---------------------------------------------------------------------------------------------
# random architectures
# ---------------------------------------------------------------------------------------------
def _width(d: Draw, lo=2, hi=12) -> int:
    return d.int(lo, hi)


def _composition(d: Draw, total: int, parts: int) -> list[int]:
    cuts = d.subset(total - 1, parts - 1)
    edges = [0] + [c + 1 for c in cuts] + [total]
    return [b - a for a, b in zip(edges, edges[1:])]


def _divisors(n: int) -> list[int]:
    return [k for k in range(2, n + 1) if n % k == 0]


def _conv_unit(d: Draw, cin: int, cout: int, groups: int = 1, k=None) -> ConvUnit:
    return ConvUnit(cin, cout, k or d.choice([1, 3]), groups=groups, bias=d.bool(),
                    bn=d.int(0, 2) > 0, act=d.choice(list(ACTS)))


def image_block(d: Draw, c: int, hw: int) -> tuple[nn.Module, int, int]:
    kinds = ["conv", "conv", "dw", "group", "res", "res", "cat", "split", "se", "cl_mlp",
             "shuffle", "gn"] + (["pool"] if hw >= 4 else [])
    kind = d.choice(kinds)
    if kind == "conv":
        co = _width(d)
        return _conv_unit(d, c, co), co, hw
    if kind == "dw":
        m = d.int(1, 2)
        return _conv_unit(d, c, c * m, groups=c, k=3), c * m, hw
    if kind == "group":
        divs = _divisors(c)
        if not divs:
            co = _width(d)
            return _conv_unit(d, c, co), co, hw
        g = d.choice(divs)
        co = g * d.int(1, 3)
        return _conv_unit(d, c, co, groups=g), co, hw
    if kind == "res":
        proj = d.bool()
        co = _width(d) if proj else c
        body, w = [], c
        for i in range(d.int(1, 2)):
            nxt = co if i == 1 or d.bool() else _width(d)
            body.append(_conv_unit(d, w, nxt))
            w = nxt
        if w != co:
            body.append(_conv_unit(d, w, co, k=1))
        shortcut = ConvUnit(c, co, 1, bias=False, bn=d.bool(), act="none") if proj else None
        return Residual(body, shortcut, d.choice(["relu", "none"])), co, hw
    if kind == "cat":
        identity = d.bool()
        outs = [_width(d, 1, 8) for _ in range(d.int(1 if identity else 2, 3))]
        branches = [_conv_unit(d, c, o) for o in outs]
        return Concat(branches, identity), sum(outs) + (c if identity else 0), hw
    if kind == "split":
        if c < 2:
            return _conv_unit(d, c, 4), 4, hw
        how = d.choice(["split", "chunk", "slice"])
        if how == "chunk":
            divs = [k for k in _divisors(c) if k <= 4]
            parts = d.choice(divs) if divs else 1
            if parts == 1:
                how = "split"
                parts = 2
            sizes = [c // parts] * parts if how == "chunk" else _composition(d, c, 2)
        elif how == "slice":
            sizes = _composition(d, c, 2)
        else:
            sizes = _composition(d, c, d.int(2, min(3, c)))
        merge = d.choice(["cat", "add"])
        if merge == "add":
            o = _width(d)
            outs = [o] * len(sizes)
        else:
            outs = [_width(d, 1, 8) for _ in sizes]
        branches = [_conv_unit(d, s, o) for s, o in zip(sizes, outs)]
        return Split(how, sizes, branches, merge), (outs[0] if merge == "add" else sum(outs)), hw
    if kind == "se":
        return SE(c, _width(d, 1, 6)), c, hw
    if kind == "cl_mlp":
        return ChannelsLastMLP(c, _width(d, 2, 16), d.bool(), d.bool()), c, hw
    if kind == "shuffle":
        divs = [g for g in _divisors(c) if g < c]
        if not divs:
            return nn.ReLU(), c, hw
        return Shuffle(d.choice(divs)), c, hw
    if kind == "gn":
        divs = _divisors(c) or [1]
        g = d.choice(divs + [1])
        return nn.Sequential(nn.GroupNorm(g, c), nn.ReLU()), c, hw
    return nn.MaxPool2d(2), c, hw // 2


def token_block(d: Draw, dim: int) -> tuple[nn.Module, int]:
    kind = d.choice(["linear", "mlp", "mlp", "mha", "attn", "attn", "ln", "split"])
    if kind == "linear":
        o = _width(d, 2, 16)
        return LinearAct(dim, o, d.choice(list(ACTS))), o
    if kind == "mlp":
        return MLPBlock(dim, _width(d, 2, 16), d.bool()), dim
    if kind == "mha":
        heads = d.choice([1] + [h for h in _divisors(dim) if h <= 4])
        return MHABlock(dim, heads, d.bool()), dim
    if kind == "attn":
        return Attention(dim, d.int(1, 3), d.int(1, 4), d.bool(), d.choice(["-1", "attr"]),
                         d.choice(["matmul", "sdpa"]), d.bool()), dim
    if kind == "ln":
        return nn.LayerNorm(dim), dim
    if dim < 2:
        return LinearAct(dim, 4, "relu"), 4
    sizes = _composition(d, dim, 2)
    outs = [_width(d, 1, 6) for _ in sizes]
    return TokenSplit(sizes, outs), sum(outs)


def random_model(d: Draw) -> tuple[nn.Module, torch.Tensor]:
    """A random FuzzNet and an example input for it."""
    seed = d.int(0, 2**16)
    torch.manual_seed(seed)
    start = d.choice(["image", "image", "image", "tokens", "ids"])
    blocks: list[nn.Module] = []
    batch = 2
    if start == "image":
        c, hw = d.choice([1, 3, 4]), d.choice([4, 6, 8])
        x = torch.randn(batch, c, hw, hw)
        for _ in range(d.int(1, 4)):
            b, c, hw = image_block(d, c, hw)
            blocks.append(b)
        ending = d.choice(["conv", "gap", "flatten", "tokens"])
        if ending == "tokens":
            cls = d.bool()
            blocks.append(ToTokens(c, hw * hw, cls))
            dim = c
            for _ in range(d.int(0, 2)):
                b, dim = token_block(d, dim)
                blocks.append(b)
            blocks.append(TokenHead(d.choice(["mean", "cls", "all"] if cls else ["mean", "all"]),
                                    dim, d.int(2, 5)))
        else:
            blocks.append(ImageHead(ending, c, d.int(2, 5), d.int(1, 2)))
    else:
        tokens = d.int(2, 5)
        if start == "ids":
            dim = _width(d, 2, 12)
            blocks.append(nn.Embedding(20, dim))
            x = torch.randint(0, 20, (batch, tokens))
        else:
            dim = _width(d, 2, 12)
            x = torch.randn(batch, tokens, dim)
        for _ in range(d.int(1, 4)):
            b, dim = token_block(d, dim)
            blocks.append(b)
        blocks.append(TokenHead(d.choice(["mean", "all"]), dim, d.int(2, 5)))
    model = FuzzNet(blocks).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model, x


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
PRUNABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm,
            nn.MultiheadAttention, nn.Embedding)
MIXING_NORMS = (nn.LayerNorm, nn.GroupNorm)
REFUSALS = (tp.InvalidIndicesError, tp.PruneAllChannelsError, tp.UnsupportedOperationError,
            tp.InvalidAmountError)


def measured_macs(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def module_state(model: nn.Module) -> tuple[dict, dict]:
    """Tensors and every plain attribute a forward may read (sizes, split lists, heads)."""
    attrs = {}
    for name, m in model.named_modules():
        for k, v in vars(m).items():
            if not k.startswith("_") and isinstance(v, (int, float, tuple, list, str)):
                attrs[(name, k)] = copy.deepcopy(v)
    return snapshot(model), attrs


def assert_unchanged(model, before, what):
    tensors, attrs = module_state(model)
    assert state_equal(before[0], tensors), f"{what} changed the model's tensors"
    assert attrs == before[1], f"{what} changed the model's attributes: " + str(
        {k: (before[1].get(k), v) for k, v in attrs.items() if before[1].get(k) != v})


def _head_dims(model):
    return {n: m.head_dim for n, m in model.named_modules()
            if isinstance(m, (nn.MultiheadAttention, Attention))}


def twin_applies(model_before: nn.Module, actions, head_dims_before, model_after) -> bool:
    """The masked twin is exact unless the plan cut a channel-mixing norm, or changed the head
    dim of an attention whose scale is derived from it (nn.MultiheadAttention)."""
    touched = {c[0].rpartition(".")[0] for c in actions.cuts} | set(actions.sync) | {
        m for m, _ in actions.opaque}
    for name in touched:
        try:
            m = model_before.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(m, MIXING_NORMS):
            return False
    after = _head_dims(model_after)
    for name, hd in head_dims_before.items():
        m = model_after.get_submodule(name)
        if after[name] != hd and isinstance(m, nn.MultiheadAttention):
            return False
    return True


def check_executed(model, original, x, actions, params_removed, macs_removed, params0, macs0,
                   out_shapes, head_dims, what):
    """Properties of an executed plan (``original`` is a copy of the model before it)."""
    params1, macs1 = tp.utils.count_params(model), measured_macs(model, x)
    assert params0 - params1 == params_removed, (
        f"{what}: predicted {params_removed} parameters removed, measured {params0 - params1}")
    # nn.MultiheadAttention's MACs are an analytic formula in the engine, while what
    # FlopCounterMode measures depends on the kernel PyTorch picks (the eval fast path and
    # the CPU attention kernel are not counted at all): only plans that leave it alone are
    # held to the measured count (see the report: an engine issue, not fixed here)
    if not any(isinstance(original.get_submodule(m), nn.MultiheadAttention)
               for m, _ in actions.opaque):
        assert macs0 - macs1 == macs_removed, (
            f"{what}: predicted {macs_removed} MACs removed, measured {macs0 - macs1}")
    got = outputs(model, x)
    assert [tuple(t.shape) for t in got] == out_shapes, f"{what}: output shapes changed"
    if twin_applies(original, actions, head_dims, model):
        expected = outputs(masked_twin(original, _FakePlan(actions)).eval(), x)
        for g, e in zip(got, expected):
            scale = max(1.0, float(e.abs().max()))
            torch.testing.assert_close(g / scale, e / scale, atol=2e-5, rtol=1e-4,
                                       msg=lambda m: f"{what}: differs from the masked twin: {m}")
    else:
        assert all(torch.isfinite(t).all() for t in got), f"{what}: non-finite outputs"


class _FakePlan:
    def __init__(self, actions):
        self.actions = actions


def _candidates(model):
    return [n for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def _random_idxs(d: Draw, n: int) -> list:
    mode = d.choice(["random", "random", "random", "block", "stride", "all", "bad"])
    if mode == "random":
        return d.subset(n, d.int(1, max(1, n - 1)))
    if mode == "block":
        k = d.int(1, max(1, n - 1))
        s = d.int(0, n - k)
        return list(range(s, s + k))
    if mode == "stride":
        step = d.int(2, 4)
        return list(range(d.int(0, step - 1), n, step)) or [0]
    if mode == "all":
        return list(range(n))
    return d.choice([[n], [-1], [0, 0], [0.5], []])


def one_plan(d: Draw, model, DG, x, stats) -> None:
    """Draw one plan (classic, select_channels or prune_model), exec it, check properties."""
    names = _candidates(model)
    how = d.choice(["classic", "classic", "classic", "select", "prune_model"])
    before = module_state(model)
    original = copy.deepcopy(model)
    head_dims = _head_dims(model)
    out_shapes = [tuple(t.shape) for t in outputs(model, x)]
    params0, macs0 = tp.utils.count_params(model), measured_macs(model, x)
    what = how
    try:
        if how == "prune_model":
            amount = d.choice([0.1, 0.25, 0.5, 0.75, d.float(0.05, 0.95)])
            strategy = d.choice(["l1", "l2", "random", "bn_scale", "lamp"])
            round_to = d.choice([None, None, 2, 4])
            glob = d.bool()
            last = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
            ignored = [model.get_submodule(last[-1])] if last and d.bool() else []
            use_dg = d.bool()
            what = (f"prune_model(amount={amount}, strategy={strategy!r}, round_to={round_to}, "
                    f"global_pruning={glob}, ignored={[last[-1]] if ignored else []}, "
                    f"DG={'shared' if use_dg else 'new'})")
            d.note(what)
            report = tp.prune_model(model, x, amount=amount, strategy=strategy,
                                    ignored_layers=ignored, round_to=round_to,
                                    global_pruning=glob, DG=DG if use_dg else None)
            if report.plan is None:
                assert_unchanged(model, before, what + " (nothing pruned)")
                stats["empty"] += 1
                return
            plan = report.plan
            assert report.params_before - report.params_after == plan.params_removed, what
            assert report.macs_before - report.macs_after == plan.macs_removed, what
            if not use_dg:
                DG.build_dependency(model, x, verbose=False)
        else:
            name = d.choice(names)
            side = d.choice(["out", "out", "in"])
            if how == "select":
                strategy = d.choice(["l1", "l2", "random", "bn_scale", "lamp"])
                amount = d.choice([0.2, 0.5, d.float(0.05, 0.95), 1, 2])
                round_to = d.choice([None, None, 2, 4])
                what = (f"select_channels({name!r}, side={side!r}, strategy={strategy!r}, "
                        f"amount={amount}, round_to={round_to})")
                d.note(what)
                sel = tp.select_channels(DG, name, strategy, amount, round_to, side=side)
                if not sel.idxs:
                    assert_unchanged(model, before, what + " (empty selection)")
                    stats["empty"] += 1
                    return
                plan = sel.plan(strict=True, allow_output_change=False)
            else:
                size = DG.dg.size[DG.root_vertex(name, side)]
                idxs = _random_idxs(d, size)
                policy = d.choice(["cheapest", "heads", "dims"])
                what = f"get_pruning_plan({name!r}, {side!r}, {idxs}, policy={policy!r})"
                d.note(what)
                # an explicit request may change the output (test_classic.py checks that);
                # here every plan keeps it, so the masked twin applies
                plan = DG.get_pruning_plan(name, side, idxs, policy=policy,
                                           allow_output_change=False)
            assert_unchanged(model, before, what + " (planning)")
            assert sum(s.params for s in plan.steps) == plan.params_removed, what
            assert sum(s.macs for s in plan.steps) == plan.macs_removed, what
            plan.exec()
    except tp.UnknownModuleError as exc:  # only the unused out_proj of nn.MultiheadAttention
        assert ".out_proj" in str(exc) and "is part of" in str(exc), f"{what}: {exc}"
        assert_unchanged(model, before, f"{what} (refused: {type(exc).__name__})")
        stats["refused"] += 1
        return
    except REFUSALS as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip(), f"{what}: unclear refusal {msg!r}"
        assert_unchanged(model, before, f"{what} (refused: {type(exc).__name__})")
        stats["refused"] += 1
        return
    except tp.PlanExecutionError:
        assert_unchanged(model, before, f"{what} (failed exec)")
        raise
    stats["executed"] += 1
    rule_coverage.record(plan)
    check_executed(model, original, x, plan.actions, plan.params_removed, plan.macs_removed,
                   params0, macs0, out_shapes, head_dims, what)
    DG.check_fresh()


def run_example(d: Draw, plans: int | None = None) -> dict:
    stats = {"executed": 0, "refused": 0, "empty": 0}
    model, x = random_model(d)
    d.note(repr(model))
    original = copy.deepcopy(model)
    DG = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    for _ in range(plans if plans is not None else d.int(2, 3)):
        one_plan(d, model, DG, x, stats)
    # the pruned model traces from scratch, and its history replays on the original
    tp.DependencyGraph().build_dependency(model, x, verbose=False)
    history = json.loads(json.dumps(tp.history_of(model)))
    if history:
        from prune_explorer.serialization import replay_history
        fresh = copy.deepcopy(original)
        replay_history(fresh, history)
        fresh.load_state_dict(model.state_dict())
        assert module_state(fresh)[1] == module_state(model)[1], "replayed attributes differ"
        for a, b in zip(outputs(fresh, x), outputs(model, x)):
            assert torch.equal(a, b), "the replayed model computes something else"
    return stats
