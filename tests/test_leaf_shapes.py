"""The shape rules of torch's own layers (``leaf_shapes``) against the layers themselves: the
rule gives the real output shape, and gives None wherever the real forward raises. The check
after exec skips a changed layer on the rule's word, so a rule more lenient than the layer
would let a broken model pass."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import prune_explorer as tp
from prune_explorer import execution, verify
from prune_explorer.leaf_shapes import rule_for


def _real(m: nn.Module, shape) -> tuple | None:
    try:
        with torch.no_grad():
            return tuple(m(torch.randn(shape)).shape)
    except Exception:
        return None


def _agree(m: nn.Module, shape) -> None:
    rule = rule_for(m)
    assert rule is not None
    real = _real(m, shape)
    got = rule(m, tuple(shape))
    if got is not None:  # None: "not sure", the layer then runs for real
        assert got == real, (m, shape)
    else:
        assert real is None or _allowed_unsure(m), (m, shape, real)


def _allowed_unsure(m) -> bool:
    return (isinstance(m, nn.modules.conv._ConvNd) and (
        m.padding_mode != "zeros" or isinstance(m.padding, str))) or getattr(m, "training", False)


CONVS = [
    (nn.Conv1d, (2, 4, 11)), (nn.Conv2d, (2, 4, 9, 10)), (nn.Conv3d, (1, 4, 5, 6, 7)),
]


@pytest.mark.parametrize("cls,shape", CONVS)
@pytest.mark.parametrize("groups,stride,padding,dilation,kernel", [
    (1, 1, 0, 1, 3), (2, 2, 1, 1, 3), (4, 1, 2, 2, 3), (1, 3, 0, 1, 1), (2, 1, 0, 1, 5),
    (1, 1, 0, 3, 3),
])
def test_conv_rule_is_the_layer(cls, shape, groups, stride, padding, dilation, kernel):
    m = cls(4, 8, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    _agree(m, shape)
    _agree(m, (shape[0], 3) + shape[2:])  # channels that do not match the weight
    with torch.no_grad():  # a prune that forgot groups, the bias, or the weight's rows
        broken = [("weight", nn.Parameter(m.weight[:7].clone())),  # rows not in groups
                  ("bias", nn.Parameter(m.bias[:5].clone()))]
    for attr, value in broken:
        b = cls(4, 8, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
        setattr(b, attr, value)
        _agree(b, shape)
        if attr == "weight":  # rows and bias cut alike, but not in whole groups
            b.bias = nn.Parameter(torch.zeros(7))
            _agree(b, shape)
    g = cls(4, 8, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    g.groups = groups * 2 if groups < 4 else 3
    _agree(g, shape)


def test_conv_rule_declines_what_it_does_not_model():
    for m in (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
              nn.Conv2d(4, 4, 3, padding="same")):
        assert rule_for(m)(m, (1, 4, 8, 8)) is None
        assert _real(m, (1, 4, 8, 8)) == (1, 4, 8, 8)
    m = nn.Conv2d(4, 4, 3)
    assert rule_for(m)(m, (4, 8, 8)) is None  # unbatched input: the layer decides
    assert rule_for(m)(m, (1, 4, 2, 2)) is None and _real(m, (1, 4, 2, 2)) is None  # too small


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6), (6,), (2, 3, 4, 6), (2, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_rule_is_the_layer(shape, bias):
    m = nn.Linear(6, 7, bias=bias)
    _agree(m, shape)
    if bias:
        m.bias = nn.Parameter(torch.zeros(4))
        _agree(m, shape)


@pytest.mark.parametrize("cls,shapes", [
    (nn.BatchNorm1d, [(2, 6), (2, 6, 5), (2, 5), (2, 6, 5, 4), (1, 6), (1, 6, 1)]),
    (nn.BatchNorm2d, [(2, 6, 4, 4), (2, 5, 4, 4), (2, 6, 4), (1, 6, 1, 1)]),
    (nn.BatchNorm3d, [(1, 6, 2, 3, 4), (1, 6, 2, 3)]),
])
@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False)])
def test_batch_norm_rule_is_the_layer(cls, shapes, affine, track):
    for shape in shapes:
        m = cls(6, affine=affine, track_running_stats=track).eval()
        _agree(m, shape)
        if track:  # a prune that cut the weight but not the statistics
            m.running_mean = torch.zeros(5)
            _agree(m, shape)
    m = cls(6).train()
    assert rule_for(m)(m, shapes[0]) is None  # batch statistics: the layer runs


def test_norm_rules_are_the_layers():
    for shape in [(2, 5, 6), (2, 6), (6,), (2, 6, 5)]:
        _agree(nn.LayerNorm(6), shape)
        _agree(nn.LayerNorm([5, 6]), shape)
        _agree(nn.LayerNorm(6, elementwise_affine=False), shape)
    ln = nn.LayerNorm(6)
    ln.weight = nn.Parameter(torch.ones(5))
    _agree(ln, (2, 6))
    for groups, shape in itertools.product([1, 2, 3], [(2, 6, 4), (2, 6), (2, 5, 3)]):
        _agree(nn.GroupNorm(groups, 6), shape)
    _agree(nn.GroupNorm(2, 6, affine=False), (2, 5, 3))  # channels not in whole groups
    gn = nn.GroupNorm(2, 6)
    gn.bias = nn.Parameter(torch.zeros(4))
    _agree(gn, (2, 6, 3))


def test_elementwise_layers_keep_the_shape_and_subclasses_get_no_rule():
    for m in (nn.ReLU(inplace=True), nn.Hardswish(), nn.GELU(), nn.Dropout(0.3), nn.Identity()):
        _agree(m, (2, 3, 4))

    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x)[:, :2]

    assert rule_for(MyConv(3, 4, 1)) is None
    m = nn.Conv2d(3, 4, 1)
    m.forward = lambda x: x
    assert rule_for(m) is None


class DepthwiseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return self.conv2(self.act(self.dw(self.bn(self.conv1(x)))))


def test_changed_layers_skip_the_check_only_when_their_rule_agrees(monkeypatch):
    model = DepthwiseNet().eval()
    x = torch.randn(1, 3, 12, 12)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[1])
    seen = {}
    real = verify.leaf_shortcuts

    def spy(*a, **k):
        seen.update(real(*a, **k))
        return seen
    monkeypatch.setattr(verify, "leaf_shortcuts", spy)
    plan.exec()
    # every changed layer showed by its rule that it fits the prediction
    assert {model.conv1, model.bn, model.dw, model.act, model.conv2} <= set(seen)
    assert seen[model.dw] == [((1, 3, 10, 10), (1, 3, 8, 8), torch.float32)]


def test_a_changed_layer_left_inconsistent_still_fails_the_check(monkeypatch):
    """A surgery that forgets the depthwise conv's groups: the rule disagrees, the layer runs
    for real, the check fails and the model comes back as it was."""
    model = DepthwiseNet().eval()
    x = torch.randn(1, 3, 12, 12)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = execution.apply_actions

    def forgetful(model_, *a, **k):
        real(model_, *a, **k)
        model_.dw.groups = 4
    monkeypatch.setattr(execution, "apply_actions", forgetful)
    with pytest.raises(tp.errors.PlanExecutionError, match="dw"):
        DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[1]).exec()
    assert model.dw.groups == 4 and all(torch.equal(before[k], v)
                                        for k, v in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_layers_whose_weight_lives_elsewhere_get_no_shape():
    """Old-style weight_norm keeps the weight as a plain attribute recomputed by a hook."""
    conv = torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3))
    lin = torch.nn.utils.weight_norm(nn.Linear(3, 4))
    assert rule_for(conv)(conv, (1, 3, 8, 8)) is None
    assert rule_for(lin)(lin, (2, 3)) is None
