"""Every op family channels flow through, checked against the masked twin."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin


def run(model, x, root, idxs, side="out"):
    DG = tp.DependencyGraph().build_dependency(model.eval(), x)
    plan = DG.get_pruning_plan(root, side, idxs)
    assert_matches_twin(model, plan, x)
    return plan


class Concat(nn.Module):
    def __init__(self, dim=1):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        if dim == 1:
            self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(12 if dim == 1 else 8, 5, 1)
        self.dim = dim

    def forward(self, x):
        if self.dim == 1:
            return self.head(torch.cat([self.a(x), self.b(x)], 1))
        # cat over batch or space: channels are not offset
        return self.head(torch.cat([self.a(x), self.a(x.flip(-1))], self.dim))


def test_concat_offsets():
    model = Concat()
    plan = run(model, torch.randn(2, 3, 6, 6), model.b, [0, 3])
    head = next(s for s in plan.steps if s.target == "head")
    assert head.idxs == [8, 11]  # offset by the 8 channels of `a`
    assert any("concatenated at channel offset 8" in s.why for s in plan.steps if s.target == "head")


@pytest.mark.parametrize("dim", [0, 2, 3])
def test_concat_along_other_dims_does_not_offset(dim):
    model = Concat(dim)
    plan = run(model, torch.randn(2, 3, 6, 6), model.a, [1, 6])
    assert next(s for s in plan.steps if s.target == "head").idxs == [1, 6]


class Splits(nn.Module):
    """Split sizes held in attributes, as real models do: exec updates them."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 12, 1)
        self.p, self.q = nn.Conv2d(4, 5, 1), nn.Conv2d(8, 5, 1)
        self.split_sizes = [4, 8]
        self.first = 4

    def forward(self, x):
        h = self.stem(x)
        if self.how == "split":
            a, b = torch.split(h, self.split_sizes, dim=1)
        elif self.how == "slice":
            a, b = h[:, :self.first], h[:, self.first:]
        elif self.how == "unbind":
            parts = h.view(h.shape[0], 3, -1, *h.shape[2:]).unbind(1)
            a, b = parts[0], torch.cat(parts[1:], 1)
        else:
            a, b = h.narrow(1, 0, self.first), h[:, self.first:]
        return self.p(a) + self.q(b)


@pytest.mark.parametrize("how", ["split", "slice", "narrow"])
def test_split_ranges(how):
    model = Splits(how)
    plan = run(model, torch.randn(2, 3, 5, 5), model.stem, [1, 6, 11])
    steps = {s.target: s.idxs for s in plan.layer_steps}
    assert steps["p"] == [1] and steps["q"] == [2, 7]
    assert model.split_sizes == [3, 6] if how == "split" else model.first == 3


def test_unbind_of_channel_groups():
    model = Splits("unbind")
    plan = run(model, torch.randn(2, 3, 5, 5), model.stem, [1])
    # the view to (3, 4) then unbind: slot 1 goes in each of the three pieces
    assert next(s for s in plan.layer_steps if s.target == "stem").idxs == [1, 5, 9]


class HardCodedSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1)
        self.p, self.q = nn.Conv2d(4, 5, 1), nn.Conv2d(8, 5, 1)

    def forward(self, x):
        a, b = torch.split(self.stem(x), [4, 8], dim=1)
        return self.p(a) + self.q(b)


def test_sizes_fixed_in_code_are_refused_and_the_model_restored():
    from oracle import snapshot, state_equal
    model = HardCodedSplit().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4))
    before = snapshot(model)
    plan = DG.get_pruning_plan(model.stem, "out", [1])
    with pytest.raises(tp.PlanExecutionError, match="split_sizes"):
        plan.exec()
    assert state_equal(before, snapshot(model)) and model.stem.out_channels == 12


class ChunkUnbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.tail = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        parts = torch.stack([a, b], 0).unbind(0)
        return self.tail(parts[0] * parts[1])


def test_chunk_keeps_pieces_equal():
    model = ChunkUnbind()
    plan = run(model, torch.randn(2, 3, 5, 5), model.stem, [1])
    # chunk(2): both pieces must lose the same slot so they stay equal
    assert next(s for s in plan.layer_steps if s.target == "stem").idxs == [1, 5]
    assert model.tail.in_channels == 3


class Arith(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / (b.abs() + 1)}[self.op]
        return self.head(y)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_ops_couple_both_operands(op):
    model = Arith(op)
    plan = run(model, torch.randn(2, 3, 5, 5), model.a, [0, 4])
    assert {s.target for s in plan.layer_steps} == {"a", "b", "head"}


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        h = F.hardswish(self.conv(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return self.head(h * s)


def test_squeeze_excitation_broadcast_couples_the_scale():
    model = SqueezeExcite()
    plan = run(model, torch.randn(2, 3, 6, 6), model.conv, [2, 9])
    assert {s.target for s in plan.layer_steps} == {"conv", "fc1", "fc2", "head"}


class FlattenNet(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.fc = nn.Linear(64 * 49, 10)

    def forward(self, x):
        h = self.pool(self.conv(x))
        if self.how == "flatten":
            h = torch.flatten(h, 1)
        elif self.how == "view":
            h = h.view(h.size(0), -1)
        else:
            h = h.reshape(h.shape[0], 64 * 49)
        return self.fc(h)


@pytest.mark.parametrize("how", ["flatten", "view", "reshape"])
def test_flatten_to_linear_expands_channels(how):
    model = FlattenNet(how)
    DG = tp.DependencyGraph().build_dependency(model.eval(), torch.randn(2, 3, 14, 14))
    plan = DG.get_pruning_plan(model.conv, "out", [3])
    fc = next(s for s in plan.layer_steps if s.target == "fc")
    assert fc.idxs == list(range(147, 196))
    if how != "reshape":
        assert "channel 3 → features 147–195" in fc.why
        assert_matches_twin(model, plan, torch.randn(2, 3, 14, 14))


class ConvNeXtish(nn.Module):
    """permute to channels-last, LayerNorm over the last dim, Linear, layer scale, back."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw1, self.pw2 = nn.Linear(8, 32), nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.rand(8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(F.gelu(self.pw1(h))) * self.gamma
        return self.head(x + h.permute(0, 3, 1, 2))


def test_permute_linear_and_layer_scale():
    model = ConvNeXtish()
    x = torch.randn(2, 8, 5, 5)
    DG = tp.DependencyGraph().build_dependency(model.eval(), x)
    with pytest.raises(tp.UnsupportedOperationError, match="model input"):
        DG.get_pruning_plan(model.pw2, "out", [1])  # the residual stream is the input here
    plan = run(model, x, model.pw1, [0, 5, 31])  # the MLP hidden dim
    assert {s.target for s in plan.layer_steps} == {"pw1", "pw2"}


class LayerScaleStream(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw1, self.pw2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.rand(8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(F.gelu(self.pw1(h))) * self.gamma
        return self.head(x + h.permute(0, 3, 1, 2))


def test_unwrapped_layer_scale_is_pruned_with_its_group():
    model = LayerScaleStream()
    plan = run(model, torch.randn(2, 3, 5, 5), model.stem, [2, 7])
    targets = {s.target for s in plan.layer_steps}
    assert {"stem", "dw", "pw1", "pw2", "gamma", "head"} <= targets
    assert model.gamma.shape == (6,)


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], 1)
        n, c, hh, ww = h.shape
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).contiguous().view(n, c, hh, ww)
        return self.head(h)


def test_channel_shuffle():
    model = Shuffle()
    plan = run(model, torch.randn(2, 3, 4, 4), model.a, [1])
    steps = {s.target: s.idxs for s in plan.layer_steps}
    # slot 1 of both groups goes (shuffle keeps the two groups the same size)
    assert steps["a"] == [1] and steps["b"] == [1] and steps["head"] == [2, 3]


class Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, padding=1)
        self.head = nn.Linear(10, 4)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        h = self.conv(x)
        h = torch.clamp(F.leaky_relu(F.gelu(h) * torch.sigmoid(h)), -3, 3)
        h = F.max_pool2d(self.drop(F.silu(h)), 2)
        h = F.interpolate(h, scale_factor=2.0) + F.avg_pool2d(h, 1).repeat_interleave(2, -1)\
            .repeat_interleave(2, -2)
        h = F.pad(h, (1, 1, 1, 1)).mean(dim=(2, 3))
        return self.head(torch.tanh(h))


def test_pooling_and_elementwise_pass_channels():
    model = Elementwise()
    plan = run(model, torch.randn(2, 3, 8, 8), model.conv, [0, 3, 9])
    assert {s.target for s in plan.layer_steps} == {"conv", "head"}
    assert len([s for s in plan.steps if s.kind == "pass"]) >= 8


class SharedModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        h = self.stem(x)
        return self.head(self.shared(torch.relu(self.shared(h))))


def test_shared_module_called_twice():
    model = SharedModule()
    plan = run(model, torch.randn(2, 3, 5, 5), model.stem, [1])
    # stem's channel 1 feeds `shared`, whose input and output are then the same channels
    targets = {s.target: s.kind for s in plan.layer_steps}
    assert set(targets) == {"stem", "shared", "head"}
    assert model.shared.weight.shape == (5, 5, 3, 3)


class TokenShuffle(nn.Module):
    """MAE-style masking: keep tokens chosen by an index expanded over the hidden size, with
    the expansion sized from ``x.shape`` at run time."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)                                   # [B, N, C]
        b, n, c = h.shape
        keep = torch.arange(n - 1, -1, -2).expand(b, -1)    # [B, N/2]
        h = torch.gather(h, 1, keep.unsqueeze(-1).repeat(1, 1, c))
        pad = h.new_zeros(b, 1, c)                          # sized from the pruned width
        return self.head(torch.cat([pad, h], 1))


def test_gather_with_an_index_sized_from_the_hidden_width():
    model = TokenShuffle()
    plan = run(model, torch.randn(2, 8, 6), model.embed, [1, 4, 7])
    assert {s.target for s in plan.layer_steps} == {"embed", "head"}
    assert model.head.in_features == 13


class ExpertMix(nn.Module):
    """A mixture of experts: tokens routed by index, each expert's result added back with
    index_add_ (the hidden size passes through both)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 12)
        self.experts = nn.ModuleList(nn.Linear(12, 12) for _ in range(2))
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        h = self.inp(x)                                      # [T, C]
        acc = torch.zeros_like(h)
        for e, idx in zip(self.experts, (torch.tensor([0, 2, 3]), torch.tensor([1, 3]))):
            acc.index_add_(0, idx, e(h[idx]))
        return self.out(acc + h)


def test_index_add_couples_the_routed_hidden_size():
    model = ExpertMix()
    plan = run(model, torch.randn(4, 5), model.inp, [0, 5, 11])
    assert {s.target for s in plan.layer_steps} >= {"inp", "experts.0", "experts.1", "out"}


class WeightNormPosConv(nn.Module):
    """wav2vec2's positional conv: a weight-normed grouped conv (norm over dim 2) whose
    output is added back to its input."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 16)
        conv = nn.Conv1d(16, 16, 5, padding=2, groups=4)
        self.pos = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        h = self.proj(x)                                     # [B, T, C]
        p = self.pos(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h + F.gelu(p))


def test_weight_normed_grouped_conv_in_a_residual():
    model = WeightNormPosConv()
    plan = run(model, torch.randn(2, 7, 3), model.proj, [1, 6])
    # a residual through a grouped conv: pruned evenly, the same slot in every group
    assert model.pos.out_channels == model.pos.in_channels == model.proj.out_features
    assert model.proj.out_features % 4 == 0 and model.proj.out_features < 16
    assert plan.params_removed > 0


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="no torch._grouped_mm")
def test_grouped_matmul_of_fused_experts():
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(4, 8)
            self.w = nn.Parameter(torch.randn(2, 8, 8) * 0.1)  # [experts, C, N]
            self.out = nn.Linear(8, 3)

        def forward(self, x):                                # x: [T, 4], rows split 3 / 5
            h = self.inp(x)
            y = torch._grouped_mm(h, self.w, offs=torch.tensor([3, 8], dtype=torch.int32))
            return self.out(y)

    model = Fused()
    try:
        model(torch.randn(8, 4))
    except RuntimeError as e:  # CPU kernels arrived late: nothing to test without one
        pytest.skip(f"torch._grouped_mm does not run here: {e}")
    # its kernel wants rows of a multiple of 16 bytes: prune 4 of 8 float32 channels
    run(model, torch.randn(8, 4), model.inp, [0, 2, 5, 7])
    assert model.w.shape == (2, 4, 8)


class SplitPaths(nn.Module):
    """timm's SelectiveKernel: the input is split across paths by a size the code computes
    from two attributes (``self.in_channels // self.num_paths``)."""

    def __init__(self, c=8, paths=2):
        super().__init__()
        self.in_channels, self.out_channels, self.num_paths = c, c, paths
        self.paths = nn.ModuleList(nn.Conv2d(c // paths, c, 3, padding=1) for _ in range(paths))

    def forward(self, x):
        xs = torch.split(x, self.in_channels // self.num_paths, 1)
        return sum(p(xi) for p, xi in zip(self.paths, xs))


def test_split_size_derived_from_two_attributes_is_updated():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), SplitPaths(), nn.Conv2d(8, 2, 1))
    plan = run(model, torch.randn(1, 3, 5, 5), model[0], [0, 5])  # one from each half
    kept = model[0].out_channels
    assert kept < 8 and kept % 2 == 0  # the split keeps equal pieces
    assert ("1", "in_channels", 8, kept) in [tuple(u) for u in plan.actions.ints]
    assert model[1].in_channels == kept and model[1].out_channels == 8  # output side kept
