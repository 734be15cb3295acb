"""Every supported layer: output-side and input-side pruning, checked against the masked twin."""

import pytest
import torch
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin, outputs


def plan_for(model, x, layer, idxs, fn="out"):
    DG = tp.DependencyGraph().build_dependency(model.eval(), x)
    return DG, DG.get_pruning_plan(layer, fn, idxs)


CONVS = [
    (nn.Conv1d, nn.BatchNorm1d, (2, 4, 16)),
    (nn.Conv2d, nn.BatchNorm2d, (2, 4, 12, 12)),
    (nn.Conv3d, nn.BatchNorm3d, (2, 4, 6, 6, 6)),
    (nn.ConvTranspose1d, nn.BatchNorm1d, (2, 4, 8)),
    (nn.ConvTranspose2d, nn.BatchNorm2d, (2, 4, 6, 6)),
    (nn.ConvTranspose3d, nn.BatchNorm3d, (2, 4, 4, 4, 4)),
]


@pytest.mark.parametrize("conv,bn,shape", CONVS, ids=[c[0].__name__ for c in CONVS])
@pytest.mark.parametrize("side", ["out", "in"])
def test_conv_family(conv, bn, shape, side):
    model = nn.Sequential(conv(4, 12, 3), bn(12), nn.ReLU(), conv(12, 6, 3, bias=False))
    model[1].running_mean.uniform_(-1, 1)
    x = torch.randn(*shape)
    if side == "out":
        DG, plan = plan_for(model, x, model[0], [1, 5, 7], tp.prune_conv)
    else:
        DG, plan = plan_for(model, x, model[3], [1, 5, 7], tp.prune_related_conv)
    assert {s.target for s in plan.layer_steps} == {"0", "1", "3"}
    assert_matches_twin(model, plan, x)
    assert model[0].out_channels == 9 and model[1].num_features == 9 and model[3].in_channels == 9


def test_linear_and_batchnorm1d():
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.GELU(), nn.Linear(20, 3))
    x = torch.randn(4, 10)
    _, plan = plan_for(model, x, model[0], [0, 19], tp.prune_linear)
    assert_matches_twin(model, plan, x)
    assert model[3].in_features == 18 and model[1].num_features == 18


def test_linear_on_tokens():
    model = nn.Sequential(nn.Linear(10, 20), nn.SiLU(), nn.Linear(20, 3))
    x = torch.randn(2, 7, 10)
    _, plan = plan_for(model, x, model[2], [4, 5, 6], tp.prune_related_linear)
    assert_matches_twin(model, plan, x)


def test_layernorm_over_channels_is_pruned_with_the_stream():
    model = nn.Sequential(nn.Linear(10, 16), nn.LayerNorm(16), nn.Linear(16, 3))
    x = torch.randn(2, 5, 10)
    _, plan = plan_for(model, x, model[0], [3, 4])
    assert {s.target for s in plan.layer_steps} == {"0", "1", "2"}
    removed = plan.exec()
    assert removed == 2 * 10 + 2 + 2 * 2 + 2 * 3
    assert model[1].normalized_shape == (14,)
    assert model(x).shape == (2, 5, 3)


def test_groupnorm_prunes_whole_groups_or_the_same_slots():
    def make():
        return nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(),
                             nn.Conv2d(16, 5, 1))
    x = torch.randn(2, 3, 8, 8)
    model = make()
    _, plan = plan_for(model, x, model[0], [4, 5, 6, 7])  # group 1, whole
    assert_matches_twin(model, plan, x)  # group statistics are per group: exact
    assert model[1].num_groups == 3 and model[1].num_channels == 12
    model = make()
    _, plan = plan_for(model, x, model[0], [1, 5, 9, 13])  # slot 1 of every group
    plan.exec()
    assert model[1].num_groups == 4 and model[1].num_channels == 12
    model = make()
    _, plan = plan_for(model, x, model[0], [6])  # one channel: widened to a valid set
    plan.exec()
    assert model[1].num_channels % model[1].num_groups == 0
    assert model(x).shape == (2, 5, 6, 6)


@pytest.mark.parametrize("affine", [True, False])
def test_instancenorm(affine):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=affine), nn.ReLU(),
                          nn.Conv2d(8, 4, 3))
    x = torch.randn(2, 3, 10, 10)
    _, plan = plan_for(model, x, model[0], [0, 2])
    assert_matches_twin(model, plan, x)
    assert model[1].num_features == 6


@pytest.mark.parametrize("num", [1, 8])
def test_prelu(num):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(num), nn.Conv2d(8, 4, 3))
    x = torch.randn(2, 3, 10, 10)
    _, plan = plan_for(model, x, model[0], [3])
    assert_matches_twin(model, plan, x)
    assert model[1].num_parameters == (7 if num == 8 else 1)


def test_embedding_dim():
    model = nn.Sequential(nn.Embedding(50, 12), nn.Linear(12, 4))
    x = torch.randint(0, 50, (2, 9))
    _, plan = plan_for(model, x, model[0], [0, 11], tp.prune_embedding)
    assert_matches_twin(model, plan, x)
    assert model[0].embedding_dim == 10


class MHABlock(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.inp = nn.Linear(10, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=batch_first)
        self.out = nn.Linear(32, 6)

    def forward(self, x):
        h = self.inp(x)
        h, _ = self.attn(h, h, h)
        return self.out(h)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_whole_heads(batch_first):
    model = MHABlock(batch_first).eval()
    x = torch.randn(2, 5, 10)
    _, plan = plan_for(model, x, model.attn, list(range(8, 16)))  # head 1
    assert_matches_twin(model, plan, x)
    assert model.attn.num_heads == 3 and model.attn.embed_dim == 24 and model.attn.head_dim == 8


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_embed_dims(batch_first):
    model = MHABlock(batch_first).eval()
    x = torch.randn(2, 5, 10)
    _, plan = plan_for(model, x, model.inp, [3])  # one embedding dim: the same slot per head
    plan.exec()
    assert model.attn.num_heads == 4 and model.attn.embed_dim == 28 and model.attn.head_dim == 7
    assert model(x).shape == (2, 5, 6)


def test_grouped_conv_any_groups():
    def make():
        return nn.Sequential(nn.Conv2d(4, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, groups=4), nn.BatchNorm2d(32), nn.ReLU(),
                             nn.Conv2d(32, 6, 1))
    x = torch.randn(2, 4, 9, 9)
    model = make()
    _, plan = plan_for(model, x, model[0], [4, 5, 6, 7])  # whole group 1
    assert_matches_twin(model, plan, x)
    assert model[3].groups == 3 and model[3].out_channels == 24 and model[3].in_channels == 12
    model = make()
    _, plan = plan_for(model, x, model[0], [1, 5, 9, 13])  # slot 1 of every group
    assert_matches_twin(model, plan, x)
    assert model[3].groups == 4 and model[3].in_channels == 12 and model[3].out_channels == 32
    model = make()
    _, plan = plan_for(model, x, model[3], [0])  # output slot 0: widened to every group
    assert_matches_twin(model, plan, x)
    assert model[3].groups == 4 and model[3].out_channels == 28


def test_depthwise_conv():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                          nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 9, 9)
    _, plan = plan_for(model, x, model[0], [3, 7])
    fns = {s.target: s.fn for s in plan.layer_steps}
    assert fns["2"] == "prune_group_conv"
    assert_matches_twin(model, plan, x)
    assert model[2].groups == 6 and model[2].in_channels == model[2].out_channels == 6


class ChannelScale(nn.Module):
    """A user layer: a per-channel affine map (inputs and outputs are the same channels)."""

    def __init__(self, c):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(c))
        self.shift = nn.Parameter(torch.randn(c))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def prune_channel_scale(layer, idxs, inplace=True, dry_run=False):
    keep = [i for i in range(len(layer.scale)) if i not in set(idxs)]
    if dry_run:
        return layer, 2 * len(idxs)
    layer.scale = nn.Parameter(layer.scale.data[keep])
    layer.shift = nn.Parameter(layer.shift.data[keep])
    return layer, 2 * len(idxs)


def test_user_registered_custom_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), ChannelScale(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    x = torch.randn(2, 3, 10, 10)
    DG = tp.DependencyGraph()
    DG.register_customized_layer(ChannelScale, in_ch_pruning_fn=prune_channel_scale,
                                 out_ch_pruning_fn=prune_channel_scale,
                                 get_in_ch_fn=lambda l: None, get_out_ch_fn=lambda l: None)
    DG.build_dependency(model.eval(), x)
    plan = DG.get_pruning_plan(model[0], tp.prune_conv, [1, 2])
    assert any(s.target == "1" and s.fn == "prune_channel_scale" for s in plan.steps)
    expected_params = 2 * 27 + 2 + 2 * 2 + 2 * 4 * 9
    assert plan.params_removed == expected_params
    y_twin = None
    plan.exec()
    assert model[1].scale.shape == (6,) and model(x).shape == (2, 4, 6, 6)


class ClassicCustomizedLayer(nn.Module):
    """The classic README's example layer."""

    def __init__(self, in_dim):
        super().__init__()
        self.in_dim = in_dim
        self.scale = nn.Parameter(torch.ones(self.in_dim))
        self.bias = nn.Parameter(torch.zeros(self.in_dim))

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
        x = torch.div(x, norm)
        return x * self.scale + self.bias


def test_classic_customized_layer_example():
    class FullyConnectedNet(nn.Module):
        def __init__(self, input_size, num_classes, hidden_units):
            super().__init__()
            self.fc1 = nn.Linear(input_size, hidden_units)
            self.customized_layer = ClassicCustomizedLayer(hidden_units)
            self.fc2 = nn.Linear(hidden_units, num_classes)

        def forward(self, x):
            return self.fc2(self.customized_layer(self.fc1(x)))

    def customized_layer_pruning(layer, idxs, inplace=True, dry_run=False):
        keep = [i for i in range(layer.in_dim) if i not in idxs]
        n = 2 * len(idxs)
        if dry_run:
            return layer, n
        layer.in_dim -= len(idxs)
        layer.scale = nn.Parameter(layer.scale.data.clone()[keep])
        layer.bias = nn.Parameter(layer.bias.data.clone()[keep])
        return layer, n

    model = FullyConnectedNet(128, 10, 256)
    DG = tp.DependencyGraph()
    DG.register_customized_layer(ClassicCustomizedLayer, in_ch_pruning_fn=customized_layer_pruning,
                                 out_ch_pruning_fn=customized_layer_pruning,
                                 get_in_ch_fn=lambda l: l.in_dim, get_out_ch_fn=lambda l: l.in_dim)
    DG.build_dependency(model, example_inputs=torch.randn(1, 128))
    plan = DG.get_pruning_plan(model.fc1, tp.prune_linear, idxs=[0, 1, 6])
    plan.exec()
    assert model.customized_layer.in_dim == 253 and model.fc2.in_features == 253
    assert model(torch.randn(2, 128)).shape == (2, 10)


def test_classic_group_prune_of_a_transposed_conv_drops_the_group_inputs():
    # ConvTranspose2d(4, 8, groups=2): weight [in 4, out/groups 4, k, k]; group g reads inputs
    # 2g..2g+1 and writes outputs 4g..4g+3. Output 5 is in group 1: rows 2, 3 of the weight go
    conv = nn.ConvTranspose2d(4, 8, 3, groups=2)
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        y = conv(x)
    _, removed = tp.prune_group_conv(conv, [5])
    assert removed == 2 * 4 * 3 * 3 + 4
    assert torch.equal(conv.weight, w[:2]) and torch.equal(conv.bias, b[:4])
    assert (conv.groups, conv.in_channels, conv.out_channels) == (1, 2, 4)
    with torch.no_grad():
        assert torch.allclose(conv(x[:, :2]), y[:, :4], atol=1e-6)


def test_classic_layernorm_without_affine_shrinks_its_shape_only():
    ln = nn.LayerNorm(8, elementwise_affine=False)
    copy, removed = tp.prune_layernorm(ln, [1, 2], inplace=False)
    assert removed == 0 and copy is not ln
    assert copy.normalized_shape == (6,) and ln.normalized_shape == (8,)
    same, _ = tp.prune_layernorm(ln, [0])
    assert same is ln and ln.normalized_shape == (7,)
    # a dry run changes nothing and counts no parameters (there are none)
    assert tp.prune_layernorm(ln, [0, 1], dry_run=True) == (ln, 0) and ln.normalized_shape == (7,)


def test_classic_mha_head_pruning_is_in_place_by_default():
    mha = nn.MultiheadAttention(8, 2)  # 2 heads of 4
    w = mha.in_proj_weight.detach().clone()
    same, removed = tp.prune_multihead_attention_heads(mha, [1])
    assert same is mha and (mha.num_heads, mha.embed_dim, mha.head_dim) == (1, 4, 4)
    # rows 4..7 of q, k and v go (12 of 24 rows), and columns 4..7 of what is left
    keep = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
    assert torch.equal(mha.in_proj_weight, w[keep][:, :4])
    # in_proj 24x8 -> 12x4, its bias 12, out_proj 8x8 -> 4x4 and its bias 4
    assert removed == (192 - 48) + 12 + (64 - 16) + 4


def test_classic_prune_parameter_defaults_to_rows_in_place():
    p = nn.Parameter(torch.arange(12.0).view(4, 3))
    same, removed = tp.prune_parameter(p, [1, 3])
    assert same is p and removed == 6
    assert p.tolist() == [[0.0, 1.0, 2.0], [6.0, 7.0, 8.0]]
    # along another dim, and a dry run that only counts
    _, removed = tp.prune_parameter(p, [0], dim=1, dry_run=True)
    assert removed == 2 and p.shape == (2, 3)
