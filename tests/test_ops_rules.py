"""Masked-twin checks for the op rules nothing else exercised (tests/test_rule_coverage.py
requires every rule of op_rules*.py to be pruned through by some twin-checked plan). Each model
puts the op between a producer whose channels are pruned and a consumer that reads them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin


class Sandwich(nn.Module):
    """producer (conv/linear, channel dim 1) -> op -> consumer."""

    def __init__(self, op, producer, consumer, param=None):
        super().__init__()
        self.op, self.producer, self.consumer = op, producer, consumer
        if param is not None:
            self.p = nn.Parameter(param)

    def forward(self, x):
        return self.consumer(self.op(self, self.producer(x)))


def conv2d(cin=3, cout=8):
    return nn.Conv2d(cin, cout, 1)


def run(model, x, idxs, root="producer"):
    model.eval()
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(root, "out", idxs)
    assert_matches_twin(model, plan, x)
    return {s.target: s.idxs for s in plan.layer_steps}


X4 = torch.randn(2, 3, 4, 4)

CASES = {
    # name: (op(self, h), producer, consumer, x, pruned producer channels, extra param)
    "flip": (lambda s, h: h.flip(1), conv2d(), conv2d(8, 2), X4, [1, 6], None),
    "roll (spatial)": (lambda s, h: h.roll(1, 3), conv2d(), conv2d(8, 2), X4, [0, 7], None),
    "repeat": (lambda s, h: h.repeat(1, 2, 1, 1), conv2d(), conv2d(16, 2), X4, [2, 5], None),
    "select": (lambda s, h: h[:, :, 0], conv2d(), nn.Conv1d(8, 2, 1), X4, [3], None),
    "index_select": (lambda s, h: h.index_select(2, torch.tensor([3, 0])), conv2d(),
                     conv2d(8, 2), X4, [1, 4], None),
    "topk": (lambda s, h: h.topk(2, dim=3).values, conv2d(), conv2d(8, 2), X4, [0, 5], None),
    "as_strided": (lambda s, h: torch.as_strided(h, h.shape, h.stride()), conv2d(),
                   conv2d(8, 2), X4, [2], None),
    "equal (values read in Python)": (lambda s, h: h * float(torch.equal(h, h)), conv2d(),
                                      conv2d(8, 2), X4, [1, 2], None),
    "linalg_vector_norm": (lambda s, h: h / (torch.linalg.vector_norm(h, dim=(2, 3),
                                                                      keepdim=True) + 1),
                           conv2d(), conv2d(8, 2), X4, [0, 3], None),
    "var": (lambda s, h: (h - h.mean((2, 3), keepdim=True)) / (h.var((2, 3), keepdim=True) + 1),
            conv2d(), conv2d(8, 2), X4, [4, 7], None),
    "reflection_pad1d (1-d spatial ops)": (lambda s, h: F.pad(h, (2, 1), mode="reflect"),
                                           nn.Conv1d(3, 8, 1), nn.Conv1d(8, 2, 1),
                                           torch.randn(2, 3, 6), [1, 5], None),
    "max_pool3d (3-d spatial ops)": (lambda s, h: F.max_pool3d(h, 2), nn.Conv3d(3, 8, 1),
                                     nn.Conv3d(8, 2, 1), torch.randn(2, 3, 4, 4, 4), [6], None),
    "bmm": (lambda s, h: torch.bmm(h, torch.bmm(h.transpose(1, 2), h)), nn.Conv1d(3, 8, 1),
            nn.Conv1d(8, 2, 1), torch.randn(2, 3, 5), [0, 2, 7], None),
    "baddbmm": (lambda s, h: torch.baddbmm(s.p, h, torch.bmm(h.transpose(1, 2), h)),
                nn.Conv1d(3, 8, 1), nn.Conv1d(8, 2, 1), torch.randn(2, 3, 5), [1, 6],
                torch.randn(8, 5)),
    "scatter": (lambda s, h: torch.zeros_like(h).scatter(
        2, torch.arange(h.shape[2]).flip(0).view(1, 1, -1, 1).expand(*h.shape), h),
        conv2d(), conv2d(8, 2), X4, [3, 4], None),
    "view_as_complex / view_as_real": (
        lambda s, h: torch.view_as_real(torch.view_as_complex(
            h.reshape(*h.shape[:2], -1, 2)) * (1 + 2j)).reshape(h.shape),
        conv2d(), conv2d(8, 2), X4, [0, 5], None),
    "mv": (lambda s, h: torch.mv(s.p, h), nn.Linear(5, 8), nn.Identity(), torch.randn(5),
           [2, 3], torch.randn(3, 8)),
    "addmv": (lambda s, h: torch.addmv(torch.ones(3), s.p, h), nn.Linear(5, 8), nn.Identity(),
              torch.randn(5), [0, 7], torch.randn(3, 8)),
    "dot": (lambda s, h: torch.dot(s.p, h), nn.Linear(5, 8), nn.Identity(), torch.randn(5),
            [4], torch.randn(8)),
    "layer_norm (over a dim that is not pruned)": (
        lambda s, h: F.layer_norm(h, h.shape[-1:]), nn.Conv1d(3, 8, 1), nn.Conv1d(8, 2, 1),
        torch.randn(2, 3, 6), [0, 6], None),
}


class Attention(nn.Module):
    """q, k, v projections split in 2 heads of 4, scaled_dot_product_attention, merged."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

    def forward(self, x):
        b, n, _ = x.shape

        def heads(t):
            return t.view(b, n, 2, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


def test_attention_value_dims_flow_to_the_output_projection():
    # value dim 1 of head 0 is channel 1; "dims" takes the same slot in both heads: 1 and 5
    model = Attention().eval()
    x = torch.randn(2, 5, 8)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan("v", "out", [1], policy="dims")
    assert_matches_twin(model, plan, x)
    assert {s.target: s.idxs for s in plan.layer_steps} == {"v": [1, 5], "o": [1, 5]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_keeps_the_masked_twin(name):
    op, producer, consumer, x, idxs, param = CASES[name]
    steps = run(Sandwich(op, producer, consumer, param), x, idxs)
    assert steps["producer"] == idxs


def test_pixel_shuffle_maps_four_input_channels_to_one_output_channel():
    model = Sandwich(lambda s, h: F.pixel_shuffle(h, 2), conv2d(3, 8), conv2d(2, 3))
    # output channel c of pixel_shuffle(r=2) is made of input channels 4c .. 4c+3: asking for
    # input channel 5 takes its whole quartet 4..7, i.e. output channel 1
    steps = run(model, X4, [5])
    assert steps["producer"] == [4, 5, 6, 7] and steps["consumer"] == [1]


def test_pixel_unshuffle_spreads_one_channel_over_four():
    model = Sandwich(lambda s, h: F.pixel_unshuffle(h, 2), conv2d(3, 2), conv2d(8, 3))
    # input channel c becomes output channels 4c .. 4c+3
    steps = run(model, torch.randn(2, 3, 4, 4), [1])
    assert steps["producer"] == [1] and steps["consumer"] == [4, 5, 6, 7]


def test_glu_prunes_both_halves_together():
    model = Sandwich(lambda s, h: F.glu(h, 1), conv2d(3, 8), conv2d(4, 3))
    # glu's output channel c is h[c] * sigmoid(h[c + 4])
    steps = run(model, X4, [1])
    assert steps["producer"] == [1, 5] and steps["consumer"] == [1]


def test_group_norm_loses_whole_groups():
    model = Sandwich(lambda s, h: s.gn(h), conv2d(3, 16), conv2d(16, 3))
    model.gn = nn.GroupNorm(4, 16)
    with torch.no_grad():
        model.gn.weight.uniform_(0.5, 2)
        model.gn.bias.uniform_(-1, 1)
    # removing all four channels of group 1 leaves the other groups' statistics alone, so the
    # masked twin is exact; the GroupNorm keeps 3 groups of 4
    steps = run(model, X4, [4, 5, 6, 7])
    assert steps["gn"] == [4, 5, 6, 7] and model.gn.num_groups == 3
    assert model.gn.num_channels == 12


# ops whose rule is in the table but that this PyTorch never dispatches on CPU: the Python
# call decomposes before the dispatch mode sees it (the rule stays for other versions).
NEVER_DISPATCHED_OPS = {
    "prelu": (lambda x: F.prelu(x, torch.ones(4)), torch.randn(2, 4, 3, 3)),
    "repeat_interleave": (lambda x: x.repeat_interleave(2, dim=1), torch.randn(2, 4, 3, 3)),
}


def test_the_coverage_check_excuses_exactly_these():
    import rule_coverage
    assert rule_coverage.NEVER_DISPATCHED == set(NEVER_DISPATCHED_OPS)


@pytest.mark.parametrize("name", sorted(NEVER_DISPATCHED_OPS))
def test_rules_this_pytorch_never_dispatches(name):
    fn, x = NEVER_DISPATCHED_OPS[name]

    class M(nn.Module):
        def forward(self, x):
            return fn(x)

    graph = tp.trace(M(), x)
    packets = {c.packet for n in graph.nodes.values() for c in n.calls}
    assert name not in packets, f"aten.{name} is dispatched now: give it a masked-twin model"


def test_roll_along_channels_is_refused():
    """Rolling the pruned tensor wraps at the new width: [h0..h7] rolled by 3 is h5 h6 h7 h0..
    h4; without h7 it would have to be h5 h6 h0..h4, but roll(3) of the 7 kept channels gives
    h4 h5 h6 h0 h1 h2 h3. No index map says that, so the plan must stop at the roll."""
    model = Sandwich(lambda s, h: h.roll(3, 1), conv2d(), conv2d(8, 2)).eval()
    DG = tp.DependencyGraph().build_dependency(model, X4)
    with pytest.raises(tp.UnsupportedOperationError, match="roll"):
        DG.get_pruning_plan("producer", "out", [7])
    # not even a full turn of the old width: roll(8) of 6 channels is roll(2)
    model = Sandwich(lambda s, h: h.roll(8, 1), conv2d(), conv2d(8, 2)).eval()
    DG = tp.DependencyGraph().build_dependency(model, X4)
    with pytest.raises(tp.UnsupportedOperationError, match="roll"):
        DG.get_pruning_plan("producer", "out", [1, 7])


def test_glu_along_another_dim_keeps_the_channels():
    # glu over the width halves it; the channel dim passes through unchanged
    model = Sandwich(lambda s, h: F.glu(h, -1), conv2d(3, 8), conv2d(8, 2))
    steps = run(model, X4, [1, 6])
    assert steps["producer"] == [1, 6] and steps["consumer"] == [1, 6]


def test_index_put_of_a_vector_into_the_rows_of_a_matrix():
    # out = h.clone(); out[[0]] = p: p (8) fills row 0 of h (2 x 8), so p's entries are h's
    # channels and are pruned with them
    model = Sandwich(lambda s, h: h.index_put((torch.tensor([0]),), s.p), nn.Linear(3, 8),
                     nn.Linear(8, 2), param=torch.randn(8))
    p = model.p.detach().clone()
    run(model, torch.randn(2, 3), [2, 5])
    assert torch.equal(model.p, p[[0, 1, 3, 4, 6, 7]])


def test_cat_skips_a_legacy_empty_vector():
    # torch.cat accepts a 1-d empty tensor next to n-d ones (and ignores it)
    model = Sandwich(lambda s, h: torch.cat([h, h.new_zeros(0)], 1), conv2d(), conv2d(8, 2))
    steps = run(model, X4, [1, 6])
    assert steps["producer"] == [1, 6] and steps["consumer"] == [1, 6]


class LearnedQueries(nn.Module):
    """3-d attention (no head dim) of 6 learned queries over the tokens, then a linear that
    mixes the 6 query slots: the queries' rows are prunable channels of that linear."""

    def __init__(self):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(6, 8))
        self.kv = nn.Linear(4, 16)
        self.mix = nn.Linear(6, 2)

    def forward(self, x):                                    # x: [B, 5, 4]
        k, v = self.kv(x).chunk(2, -1)
        q = self.queries.expand(x.shape[0], -1, -1)
        o = F.scaled_dot_product_attention(q, k, v)          # [B, 6, 8]
        return self.mix(o.transpose(1, 2))                   # [B, 8, 2]


def test_attention_queries_are_rows_of_the_output():
    model = LearnedQueries().eval()
    x = torch.randn(2, 5, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    q = model.queries.detach().clone()
    plan = DG.get_pruning_plan(model.mix, "in", [1, 4])
    assert_matches_twin(model, plan, x)
    assert torch.equal(model.queries, q[[0, 2, 3, 5]]) and model.mix.in_features == 4
