"""Which channels each strategy removes, pinned exactly on small models with hand-chosen
weights. The masked-twin oracle proves a plan is consistent; these tests prove it is the
*right* plan. Every expected index list is worked out in the comments from the definitions in
``prune_explorer/groups.py`` (a unit's score is the SUM over every parameter tensor of its
group of that tensor's score for the unit's slices), not by running the code; each model is
built so that leaving out any one tensor, or a sign, or a consumer, picks differently."""

import numpy as np
import pytest
import torch
from torch import nn

import prune_explorer as tp


def _set(t, values):
    with torch.no_grad():
        t.copy_(torch.tensor(values, dtype=t.dtype).reshape(t.shape))


class Chain(nn.Module):
    """conv1 (2->4, bias) -> bn -> relu -> conv2 (4->3). The group of conv1's outputs holds
    conv1.weight rows, conv1.bias, bn.weight, bn.bias and conv2.weight columns."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 1, bias=False)
        _set(self.conv1.weight, [[-1, 2], [-1, -2], [-3, -2], [-2, -1]])
        _set(self.conv1.bias, [3, -1, 2, -1])
        _set(self.bn.weight, [-1, -1, 2, -1])
        _set(self.bn.bias, [-1, -3, 2, -1])
        _set(self.conv2.weight, [[3, 2, -2, -3], [-3, -1, 1, 3], [-3, -3, -2, 3]])
        # buffers are not scored: a running mean this large on channel 1 would save it
        _set(self.bn.running_mean, [0, 4, 0, 0])

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


def chain():
    model = Chain().eval()
    return model, tp.DependencyGraph().build_dependency(model, torch.randn(1, 2, 3, 3))


def select(DG, layer, strategy, amount, **kw):
    return tp.select_channels(DG, layer, strategy=strategy, amount=amount, **kw).idxs


# ---------------------------------------------------------------------------------------------
# l1, l2, lamp, taylor, random on one group of five tensors
# ---------------------------------------------------------------------------------------------
def test_l1_sums_every_tensor_of_the_group():
    # per channel: |conv1 row| + |bias| + |gamma| + |beta| + |conv2 column|
    #   c0: (1+2) + 3 + 1 + 1 + (3+3+3) = 17      c1: (1+2) + 1 + 1 + 3 + (2+1+3) = 14
    #   c2: (3+2) + 2 + 2 + 2 + (2+1+2) = 16      c3: (2+1) + 1 + 1 + 1 + (3+3+3) = 15
    # 50 % = 2 channels: the lowest, c1 (14) and c3 (15). Leaving out any one tensor changes
    # the pick (e.g. without the conv2 columns: 8, 8, 11, 6 -> [0, 3]).
    model, DG = chain()
    assert select(DG, "conv1", "l1", 0.5) == [1, 3]
    sel = tp.select_channels(DG, "conv1", strategy="l1", amount=0.5)
    assert sel.scores.tolist() == [17, 14, 16, 15]
    assert select(DG, "bn", "l1", 0.5) == [1, 3]  # the same group, rooted at the BN


def test_l2_is_the_norm_of_everything_a_channel_removes():
    # squares: c0: 1+4 + 9 + 1 + 1 + 9+9+9 = 43   c1: 1+4 + 1 + 1 + 9 + 4+1+9 = 30
    #          c2: 9+4 + 4 + 4 + 4 + 4+1+4 = 34    c3: 4+1 + 1 + 1 + 1 + 9+9+9 = 35
    # lowest two: c1, c2 (L1 would keep c2 and drop c3)
    model, DG = chain()
    assert select(DG, "conv1", "l2", 0.5) == [1, 2]
    sel = tp.select_channels(DG, "conv1", strategy="l2", amount=0.5)
    assert np.allclose(sel.scores, np.sqrt([43, 30, 34, 35]))


def test_lamp_normalises_the_group_scores():
    # LAMP of the squared norms 43, 30, 34, 35: each over the sum of those not smaller
    #   c1: 30 / (30+34+35+43) = 30/142   c2: 34/112   c3: 35/78   c0: 43/43 = 1
    # it keeps L2's order within a group: c1, c2 go
    model, DG = chain()
    sel = tp.select_channels(DG, "conv1", strategy="lamp", amount=0.5)
    assert sel.idxs == [1, 2]
    assert np.allclose(sel.scores, [1.0, 30 / 142, 34 / 112, 35 / 78])


def test_taylor_is_the_first_order_loss_change_of_the_whole_unit():
    # with every gradient set to 1, a channel's score is |sum of its weights over the group|:
    #   c0: (-1+2) + 3 + (-1) + (-1) + (3-3-3) = -1 -> 1
    #   c1: (-1-2) + (-1) + (-1) + (-3) + (2-1-3) = -10 -> 10
    #   c2: (-3-2) + 2 + 2 + 2 + (-2+1-2) = -2 -> 2
    #   c3: (-2-1) + (-1) + (-1) + (-1) + (-3+3+3) = -3 -> 3
    # lowest two: c0, c2. (|.| per tensor, summed, would give 9, 10, 14, 9 -> [0, 3]; the sum
    # of |w * g| element by element is L1 -> [1, 3].)
    model, DG = chain()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    sel = tp.select_channels(DG, "conv1", strategy="taylor", amount=0.5)
    assert sel.idxs == [0, 2] and sel.scores.tolist() == [1, 10, 2, 3]
    # signs matter: a gradient of -1 on conv2 flips its columns' contributions
    #   c0: 1+3-1-1+3 = 5   c1: -3-1-1-3+2 = -6 -> 6   c2: -5+2+2+2+3 = 4   c3: -3-1-1-1-3 -> 9
    # and -1 on conv1 too: c0: -1+3-1-1+3 = 3   c1: 3-1-1-3+2 = 0   c2: 5+2+2+2+3 = 14
    #   c3: 3-1-1-1-3 = -3 -> 3; lowest c1 (0), then c0 before c3 (tied at 3) by index
    model.conv2.weight.grad = -torch.ones_like(model.conv2.weight)
    assert tp.select_channels(DG, "conv1", strategy="taylor", amount=0.5).scores.tolist() == \
        [5, 6, 4, 9]
    model.conv1.weight.grad = -torch.ones_like(model.conv1.weight)
    sel = tp.select_channels(DG, "conv1", strategy="taylor", amount=0.5)
    assert sel.scores.tolist() == [3, 0, 14, 3] and sel.idxs == [0, 1]


def test_taylor_without_gradients_falls_back_to_l1():
    model, DG = chain()
    assert select(DG, "conv1", "taylor", 0.5) == [1, 3]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_is_the_seeded_draw(seed):
    # the definition: one uniform draw per unit from numpy's default_rng(seed); lowest go
    draws = np.random.default_rng(seed).random(4)
    expect = sorted(np.argsort(draws, kind="stable")[:2].tolist())
    model, DG = chain()
    assert select(DG, "conv1", "random", 0.5, seed=seed) == expect
    report = tp.prune_model(model, torch.randn(1, 2, 3, 3), amount=0.5, strategy="random",
                            seed=seed, DG=DG, dry_run=True)
    assert {g.root: g.idxs for g in report.groups} == {"conv1": expect}


# ---------------------------------------------------------------------------------------------
# bn_scale: |gamma|, never the signed value
# ---------------------------------------------------------------------------------------------
def test_bn_scale_ranks_by_absolute_gamma():
    # gamma = [-3, 0.5, 2, -0.1, 1] -> |gamma| = [3, 0.5, 2, 0.1, 1]; 40 % of 5 = 2 channels:
    # c3 (0.1) and c1 (0.5). Signed gammas would drop c0 (-3) and c3 (-0.1).
    model = nn.Sequential(nn.Conv2d(2, 5, 1), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 2, 1))
    _set(model[1].weight, [-3, 0.5, 2, -0.1, 1])
    model.eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 2, 3, 3))
    sel = tp.select_channels(DG, "0", strategy="bn_scale", amount=0.4)
    assert sel.idxs == [1, 3] and sel.scores.tolist() == pytest.approx([3, 0.5, 2, 0.1, 1])
    report = tp.prune_model(model, torch.randn(1, 2, 3, 3), amount=0.4, strategy="bn_scale",
                            DG=DG, dry_run=True)
    assert {g.root: g.idxs for g in report.groups} == {"0": [1, 3]}


# ---------------------------------------------------------------------------------------------
# a coupled residual group whose layers disagree; a bare parameter; consumer columns
# ---------------------------------------------------------------------------------------------
class Residual(nn.Module):
    """z = (a(x) + b(x)) * scale, read by head: one group of a rows, b rows, scale, head
    columns."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 1, bias=False)
        self.b = nn.Conv2d(2, 4, 1, bias=False)
        self.scale = nn.Parameter(torch.zeros(4))
        self.head = nn.Conv2d(4, 3, 1, bias=False)
        _set(self.a.weight, [[1, 2], [2, 1], [3, 1], [-1, -1]])
        _set(self.b.weight, [[2, -2], [-2, 3], [-1, -3], [-2, -3]])
        _set(self.scale, [-2, -1, 1, 1])
        _set(self.head.weight, [[3, 1, 2, -2], [1, -2, 2, -1], [1, 1, 3, -1]])

    def forward(self, x):
        return self.head((self.a(x) + self.b(x)) * self.scale.view(1, -1, 1, 1))


def test_a_residual_group_is_judged_by_all_its_layers():
    # L1 per channel:        a rows   b rows   |scale|   head columns   total
    #   c0                    3        4        2          5             14
    #   c1                    3        5        1          4             13
    #   c2                    4        4        1          7             16
    #   c3                    2        5        1          4             12
    # a alone would drop [0, 3] (3, 3, 4, 2: c3, then c0 before c1 by index), b alone [0, 2];
    # the group drops c3 (12) and c1 (13). Without the bare parameter: 12, 12, 15, 11 ->
    # [0, 3]; with the signed scale: 10, 11, 16, 12 -> [0, 1]; without head: 9, 9, 9, 8.
    model = Residual().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 2, 3, 3))
    assert select(DG, "a", "l1", 0.5) == [1, 3] == select(DG, "b", "l1", 0.5)
    groups = [g for g in DG.groups() if g.root in ("a", "b")]
    assert len(groups) == 1 and groups[0].kind == "residual"
    assert set(groups[0].layers) >= {"a", "b", "scale", "head"}
    report = tp.prune_model(model, torch.randn(1, 2, 3, 3), amount=0.5, strategy="l1", DG=DG,
                            dry_run=True)
    assert {g.root: g.idxs for g in report.groups} == {"a": [1, 3]}


def test_consumer_input_side_is_scored_over_its_own_columns():
    # conv (2->3) on 2x2 maps, flattened channel-major into a Linear(12, 2): channel c owns
    # columns 4c .. 4c+3. Conv rows are equal (|1|+|1| = 2 each), so the consumer decides:
    #   c0: 9+0+0+0 = 9     c1: 1+1+1+1 = 4     c2: 0+0+3+3 = 6      -> drop c1
    # (the wrong, strided columns c, c+3, c+6, c+9 would give 10, 5, 4 and drop c2)
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.Flatten(), nn.Linear(12, 2,
                                                                                  bias=False))
    _set(model[0].weight, np.ones((3, 2)))
    _set(model[2].weight, [[9, 0, 0, 0, 1, 1, 1, 1, 0, 0, 3, 3], [0] * 12])
    model.eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 2, 2, 2))
    sel = tp.select_channels(DG, "0", strategy="l1", amount=1)
    assert sel.idxs == [1] and sel.scores.tolist() == [11, 6, 8]


# ---------------------------------------------------------------------------------------------
# round_to and global ranking with its per-group floor
# ---------------------------------------------------------------------------------------------
class TwoBranches(nn.Module):
    """Two independent groups of 4 and 8 channels, each read by a one-channel head whose
    weights are zero, so a channel's L1 score is the L1 of its conv row alone."""

    def __init__(self, rows_a, rows_b):
        super().__init__()
        self.conv_a = nn.Conv2d(1, 4, 1, bias=False)
        self.conv_b = nn.Conv2d(1, 8, 1, bias=False)
        self.head_a = nn.Conv2d(4, 1, 1, bias=False)
        self.head_b = nn.Conv2d(8, 1, 1, bias=False)
        _set(self.conv_a.weight, rows_a)
        _set(self.conv_b.weight, rows_b)
        _set(self.head_a.weight, np.zeros(4))
        _set(self.head_b.weight, np.zeros(8))

    def forward(self, x):
        return self.head_a(torch.relu(self.conv_a(x))) + self.head_b(torch.relu(self.conv_b(x)))


A_ROWS = [0.1, 0.2, 0.3, 3.4]  # mean 1.0
B_ROWS = [1.8, 0.5, 1.3, 0.6, 1.1, 0.7, 1.2, 0.8]  # mean 1.0


def two_branches():
    model = TwoBranches(A_ROWS, B_ROWS).eval()
    x = torch.randn(1, 1, 2, 2)
    return model, x, tp.DependencyGraph().build_dependency(model, x)


def picks(report):
    return {g.root: g.idxs for g in report.groups}


def test_local_pruning_and_round_to():
    model, x, DG = two_branches()
    # 40 %: A loses int(1.6) = 1 (c0, 0.1); B loses int(3.2) = 3: 0.5 (c1), 0.6 (c3), 0.7 (c5)
    assert picks(tp.prune_model(model, x, amount=0.4, DG=DG, dry_run=True)) == {
        "conv_a": [0], "conv_b": [1, 3, 5]}
    # round_to=4: B keeps 8-3 = 5 -> nearest multiple of 4 is 4, so it loses 4 (adding c7,
    # 0.8); A keeps 4-1 = 3 -> 4 (never below round_to), so it loses nothing
    assert picks(tp.prune_model(model, x, amount=0.4, round_to=4, DG=DG, dry_run=True)) == {
        "conv_b": [1, 3, 5, 7]}
    assert tp.select_channels(DG, "conv_b", "l1", 0.4, round_to=4).idxs == [1, 3, 5, 7]


def test_global_ranking_with_the_per_group_floor():
    model, x, DG = two_branches()
    # both groups have mean score 1, so normalised scores are the rows themselves; the budget
    # is 50 % of 12 = 6 channels, taken in order 0.1 (a0), 0.2 (a1), 0.3 (a2), 0.5 (b1),
    # 0.6 (b3), 0.7 (b5), 0.8 (b7), ... A group may lose at most min(max_group_loss * size,
    # size - 1): with max_group_loss=0.5, A stops at 2 channels and B takes the rest
    r = tp.prune_model(model, x, amount=0.5, global_pruning=True, max_group_loss=0.5, DG=DG,
                       dry_run=True)
    assert picks(r) == {"conv_a": [0, 1], "conv_b": [1, 3, 5, 7]}
    # with the default 0.9, A's cap is min(3, 3) = 3: a0, a1, a2, then b1, b3, b5
    r = tp.prune_model(model, x, amount=0.5, global_pruning=True, DG=DG, dry_run=True)
    assert picks(r) == {"conv_a": [0, 1, 2], "conv_b": [1, 3, 5]}
    # local pruning at the same amount takes 2 of A and 4 of B regardless of the scores
    assert picks(tp.prune_model(model, x, amount=0.5, DG=DG, dry_run=True)) == {
        "conv_a": [0, 1], "conv_b": [1, 3, 5, 7]}


def test_global_ranking_normalises_each_group_by_its_mean():
    # scale B's rows by 10: raw scores would put every A channel first, but each group is
    # divided by its own mean, so the order is the same as above
    model = TwoBranches(A_ROWS, [10 * v for v in B_ROWS]).eval()
    x = torch.randn(1, 1, 2, 2)
    r = tp.prune_model(model, x, amount=0.5, global_pruning=True, dry_run=True)
    assert picks(r) == {"conv_a": [0, 1, 2], "conv_b": [1, 3, 5]}


# --- the classic strategy objects (tp.strategy.L1Strategy()(weight, amount=...)) -------------
def test_classic_strategy_l1_and_l2_rank_rows_differently():
    from prune_explorer.strategy import L1Strategy, L2Strategy
    # row 0 = [3, 0]: L1 3, L2 3; row 1 = [2, 2]: L1 4, L2 sqrt(8) ~ 2.83
    w = torch.tensor([[3.0, 0.0], [2.0, 2.0]])
    assert L1Strategy()(w, amount=1) == [0]
    assert L2Strategy()(w, amount=1) == [1]


def test_classic_strategy_amounts_and_rounding():
    from prune_explorer.strategy import L1Strategy, resolve_amount
    w = torch.arange(1.0, 11.0).view(10, 1)  # row i has norm i + 1: the lowest go first
    assert L1Strategy().apply(w, amount=0.3) == [0, 1, 2]  # no rounding unless asked
    assert L1Strategy().apply(w, amount=1) == [0]  # an int is a count: one channel
    assert L1Strategy().apply(w, amount=0.3, round_to=4) == [0, 1]  # 8 left, a multiple of 4
    # round_to as large as the layer: no multiple of 4 below 4 channels, so nothing goes
    assert resolve_amount(1, 4, round_to=4) == 0
    assert L1Strategy().apply(w[:4], amount=0.5, round_to=4) == []


def test_classic_strategy_ties_go_to_the_lower_index():
    from prune_explorer.strategy import L1Strategy
    w = torch.ones(10, 3)
    w[7] = 0.5
    assert L1Strategy()(w, amount=4) == [0, 1, 2, 7]
