"""Mechanisms real-world models need (detectors, optical flow, diffusion UNets), each on a tiny
hand-built model checked against its masked twin."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin, masked_twin, outputs

torchvision = pytest.importorskip("torchvision")


def plan_for(model, x, root, idxs, **kw):
    DG = tp.DependencyGraph().build_dependency(model.eval(), x, **kw)
    return DG, DG.get_pruning_plan(root, "out", idxs)


class L2Norm(nn.Module):
    """SSD's L2Norm: a per-channel scale times x normalised over the channels, whose norm is
    broadcast back with ``expand_as``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(8) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = F.relu(self.conv(x))
        return self.head(self.scale.view(1, -1, 1, 1) * F.normalize(h, dim=1))


def test_a_norm_broadcast_back_with_expand_as_follows_the_channels():
    model = L2Norm()
    x = torch.randn(2, 3, 6, 6)
    DG, plan = plan_for(model, x, model.conv, [1, 5])
    assert plan.actions.cuts and ("scale", 0, [1, 5]) in plan.actions.cuts
    assert_matches_twin(model, plan, x)
    assert model.scale.shape == (6,)


class LiteralExpand(nn.Module):
    """The same broadcast to a size written in the code stays fixed: it would not follow."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = self.conv(x)
        return self.head(h * h.mean(1, keepdim=True).expand(-1, 8, -1, -1))


def test_a_broadcast_to_a_literal_size_stays_fixed():
    model = LiteralExpand().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4))
    with pytest.raises(tp.PruningError, match="expand"):
        DG.get_pruning_plan(model.conv, "out", [0])


class RoIHead(nn.Module):
    """Two pyramid levels pooled per box with roi_align and written level by level into one
    tensor sized from the first level's channels (torchvision's MultiScaleRoIAlign)."""

    def __init__(self):
        super().__init__()
        self.p3 = nn.Conv2d(3, 8, 3, padding=1)
        self.p4 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 5)
        self.boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [0, 2.0, 1.0, 7.0, 6.0],
                                   [0, 1.0, 1.0, 3.0, 5.0]])

    def forward(self, x):
        levels = [self.p3(x), self.p4(x)]
        where = [torch.tensor([0, 2]), torch.tensor([1])]
        c = levels[0].shape[1]
        result = torch.zeros((3, c, 2, 2), dtype=x.dtype)
        for feats, scale, idx in zip(levels, (1.0, 0.5), where):
            pooled = torchvision.ops.roi_align(feats, self.boxes[idx], (2, 2), scale, 2)
            result[idx] = pooled
        return self.fc(result.flatten(1))


def test_roi_align_and_the_multi_level_write_carry_channels():
    model = RoIHead()
    x = torch.randn(1, 3, 8, 8)
    DG, plan = plan_for(model, x, model.p3, [0, 3, 7])
    steps = {s.target: s.idxs for s in plan.layer_steps}
    assert steps["p4"] == [0, 3, 7]  # the levels share the written tensor's channels
    assert steps["fc"] == [0, 1, 2, 3, 12, 13, 14, 15, 28, 29, 30, 31]  # 4 bins per channel
    assert_matches_twin(model, plan, x)


class SplitByDifference(nn.Module):
    """RAFT's context split: [self.hidden, C - self.hidden], two equal halves. Pruning only the
    context part must leave ``hidden`` alone (though it holds the same number as the context
    width); pruning the hidden part updates it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 1)
        self.hidden = 5
        self.a = nn.Conv2d(5, 3, 1)
        self.b = nn.Conv2d(5, 3, 1)

    def forward(self, x):
        h = self.conv(x)
        hid, ctx = torch.split(h, [self.hidden, h.shape[1] - self.hidden], dim=1)
        return self.a(torch.tanh(hid)) + self.b(F.relu(ctx))


@pytest.mark.parametrize("idxs, hidden", [([5, 8], 5), ([1, 6], 4)])
def test_a_split_size_computed_from_the_width_adapts_by_itself(idxs, hidden):
    model = SplitByDifference()
    x = torch.randn(1, 3, 4, 4)
    DG, plan = plan_for(model, x, model.conv, idxs)
    assert_matches_twin(model, plan, x)
    assert model.hidden == hidden


class CheckedWidth(nn.Module):
    """diffusers' Downsample2D: ``assert x.shape[1] == self.channels`` before its conv."""

    def __init__(self):
        super().__init__()
        self.channels = 8
        self.conv = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        assert x.shape[1] == self.channels
        return self.conv(x)


class WithCheckedBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.down = CheckedWidth()
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.down(F.relu(self.stem(x)))))


def test_an_attribute_the_code_checks_a_width_against_follows_the_width():
    model = WithCheckedBlock()
    x = torch.randn(1, 3, 6, 6)
    DG, plan = plan_for(model, x, model.stem, [0, 2, 4])
    assert ("down", "channels", 8, 5) in plan.actions.ints
    assert_matches_twin(model, plan, x)
    assert model.down.channels == 5


class GroupNormBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.GroupNorm(2, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.head(F.silu(self.norm(self.conv(x))))


def test_group_norm_loses_whole_groups_exactly():
    """Removing a whole group leaves the other group's statistics as they were, so the pruned
    model equals its masked twin exactly; removing the same slot of every group (fewer
    channels to widen to, the cheapest) would change both groups' statistics."""
    model = GroupNormBlock().eval()
    x = torch.randn(2, 3, 5, 5)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.head], dry_run=True)
    (group,) = report.groups
    assert sorted(group.idxs) in (list(range(8)), list(range(8, 16)))
    assert_matches_twin(model, report.plan, x)
    assert model.norm.num_groups == 1 and model.norm.num_channels == 8


class InstanceNormed(nn.Module):
    """RAFT's feature encoder: both images in one batch, instance-normalised, then split back.
    InstanceNorm runs as batch_norm on view(1, B * C, H, W): the channels are merged with the
    batch, which removing *every* channel would also empty (no real selection does)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = F.relu(self.norm(self.conv(torch.cat([x, x.flip(-1)], 0))))
        a, b = h.chunk(2, 0)
        n, c, hh, ww = a.shape
        corr = (a.view(n, c, hh * ww) * b.view(n, c, hh * ww)).view(n, c, hh, ww)
        return self.head(corr)


def test_instance_norm_on_a_merged_batch_is_prunable():
    model = InstanceNormed().eval()
    x = torch.randn(1, 3, 5, 5)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.head], dry_run=True)
    assert [g.root for g in report.groups] == ["conv"] and not report.skipped[1:]
    assert_matches_twin(model, report.plan, x)
    assert model.conv.out_channels == 4


class TwoOutputs(nn.Module):
    """A detector head in eval mode: its predictions, and the features only its loss reads."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.neck = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        feats = F.relu(self.neck(F.relu(self.backbone(x))))
        return self.head(feats), {"feats": [feats]}


def test_an_output_returned_for_the_loss_pins_its_group_unless_released():
    model = TwoOutputs().eval()
    x = torch.randn(1, 3, 6, 6)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.head], dry_run=True)
    pinned = dict(report.skipped)["neck"]
    assert "output[1]['feats'][0]" in pinned and "fixed_outputs" in pinned
    groups = {g.root: g for g in tp.DependencyGraph().build_dependency(model, x).groups(
        [model.head])}
    assert groups["neck"].pinned_by == "output[1]['feats'][0]"

    keep = lambda out: out[0]  # noqa: E731
    twin_src = TwoOutputs().eval()
    twin_src.load_state_dict(model.state_dict())
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.head],
                            fixed_outputs=keep, dry_run=True)
    assert {g.root for g in report.groups} == {"backbone", "neck"}
    twin = masked_twin(model, report.plan)
    report.plan.exec()
    torch.testing.assert_close(outputs(model, x)[0], outputs(twin, x)[0])
    assert outputs(model, x)[1].shape[1] == 4  # the released output shrank with its group


def test_fixed_outputs_must_name_tensors_the_model_returned():
    model = TwoOutputs().eval()
    with pytest.raises(TypeError, match="not one of the model's outputs"):
        tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 6, 6),
                                              fixed_outputs=lambda out: out[0] * 2)
    with pytest.raises(TypeError, match="fixed_outputs must be"):
        tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 6, 6),
                                              fixed_outputs="first")


class EqualSplit(nn.Module):
    """YOLO's C2PSA: ``a, b = cv1(x).split((self.c, self.c), 1)``: one attribute sizes both
    pieces, so they must stay equal; b goes through more layers than a."""

    def __init__(self):
        super().__init__()
        self.c = 4
        self.cv1 = nn.Conv2d(3, 8, 1)
        self.m = nn.Conv2d(4, 4, 3, padding=1)
        self.cv2 = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, F.relu(self.m(b))), 1))


def test_pieces_sized_by_one_attribute_lose_the_same_slots():
    model = EqualSplit()
    x = torch.randn(1, 3, 5, 5)
    DG, plan = plan_for(model, x, model.cv1, [1])
    assert plan.idxs == [1] and {s.target: s.idxs for s in plan.layer_steps}["cv1"] == [1, 5]
    assert_matches_twin(model, plan, x)
    assert model.c == 3


class UnequalSplit(nn.Module):
    """A layer whose channels are split into a hidden state (6) and a context (4) used apart,
    the context's weights the smallest: half of the 10 by L1 would take every context channel."""

    def __init__(self):
        super().__init__()
        self.hidden = 6
        self.conv = nn.Conv2d(3, 10, 1)
        self.a, self.b = nn.Conv2d(6, 2, 1), nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.conv.weight[6:] *= 0.01
            self.conv.weight[6:] += torch.tensor([0.0, 1e-4, 2e-4, 3e-4]).view(4, 1, 1, 1)
            self.conv.weight[2] *= 0.1

    def forward(self, x):
        y = self.conv(x)
        h, ctx = torch.split(y, [self.hidden, y.shape[1] - self.hidden], dim=1)
        return self.a(torch.tanh(h)) + self.b(F.relu(ctx))


def test_a_split_piece_keeps_its_share_instead_of_halving_the_whole_selection():
    model = UnequalSplit().eval()
    x = torch.randn(1, 3, 4, 4)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.a, model.b],
                            dry_run=True)
    (group,) = report.groups
    # the 5 lowest are the 4 context channels and channel 2; the context keeps its best half
    # (halving the selection instead would leave only 2 channels pruned)
    assert len(group.idxs) == 3 and 2 in group.idxs and len(set(group.idxs) & {6, 7, 8, 9}) == 2
    assert_matches_twin(model, report.plan, x)


class SamePaddingConv(nn.Conv2d):
    """smp's / EfficientNet's Conv2dStaticSamePadding: a conv that pads with a child module
    first, so it is no leaf; its channels are a group all the same."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.static_padding = nn.ZeroPad2d(1)

    def forward(self, x):
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, 0)


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.reduce = SamePaddingConv(8, 4, 1)
        self.expand = SamePaddingConv(4, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = F.relu(self.conv(x))
        s = torch.sigmoid(self.expand(F.silu(self.reduce(h.mean((2, 3), keepdim=True)))))
        return self.head(h * s[..., 1:-1, 1:-1].mean((2, 3), keepdim=True))


def test_a_layer_with_a_child_module_of_its_own_roots_a_group():
    model = SqueezeExcite().eval()
    x = torch.randn(1, 3, 5, 5)
    report = tp.prune_model(model, x, amount=0.5, ignored_layers=[model.head], dry_run=True)
    assert {g.root: g.pruned for g in report.groups} == {"conv": 4, "reduce": 2}
    assert_matches_twin(model, report.plan, x)
    assert model.reduce.out_channels == 2 and model.expand.in_channels == 2
