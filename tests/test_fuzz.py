"""Property-based fuzzing: random architectures x random plans (generator and properties in
``fuzz_models.py``), plus the minimal regressions of the engine bugs the fuzzer found.

The CI run is derandomized (stable across runs and machines); ``benchmarks/fuzz.py`` runs
thousands of seeded examples.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import prune_explorer as tp
from fuzz_models import HypothesisDraw, RandomDraw, Shuffle, run_example
from oracle import assert_matches_twin, snapshot, state_equal


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(st.data())
def test_random_architectures_and_plans(data):
    run_example(HypothesisDraw(data))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_seeded_examples_run(seed):
    """The generator itself, under the plain RNG the long run uses."""
    stats = run_example(RandomDraw(seed), plans=2)
    assert sum(stats.values()) == 2


# ---- regressions: each was found by the fuzzer ------------------------------------------------
class ResidualSelfMap(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = self.stem(x)
        return self.head(h + self.body(h))


def test_step_params_add_up_when_one_tensor_loses_rows_and_columns():
    # body's weight loses channels 1 and 5 as outputs *and* as inputs, in two steps; the
    # steps used to count the 2x2 corner twice
    model = ResidualSelfMap().eval()
    x = torch.randn(2, 3, 5, 5)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.stem, "out", [1, 5])
    body = [s for s in plan.steps if s.target == "body"]
    assert {s.kind for s in body} == {"in", "out"}
    assert sum(s.params for s in plan.steps) == plan.params_removed
    assert sum(s.params for s in body) == (8 * 8 * 9 - 6 * 6 * 9) + 2  # weight, bias
    assert_matches_twin(model, plan, x)


class OneChannelPiece(nn.Module):
    def __init__(self, sizes=(8, 1, 7)):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # two outputs per input channel
        self.split_sizes = list(sizes)
        self.branches = nn.ModuleList(nn.Conv2d(n, 4, 1) for n in sizes)

    def forward(self, x):
        parts = torch.split(self.dw(self.stem(x)), self.split_sizes, 1)
        return sum(b(p) for b, p in zip(self.branches, parts))


def test_a_one_channel_split_piece_is_not_silently_dropped():
    # dw's channel 9 drags channel 8 along (same input channel); channel 8 is the whole
    # one-channel piece: the plan used to forget it and exec failed on the split sizes
    model = OneChannelPiece().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(2, 3, 5, 5))
    before = snapshot(model)
    with pytest.raises(tp.PruneAllChannelsError, match="all 1 entries of the output of split"):
        DG.get_pruning_plan(model.dw, "out", [9])
    with pytest.raises(tp.PruneAllChannelsError):
        DG.get_pruning_plan(model.branches[2], "in", [0])
    assert state_equal(before, snapshot(model))
    plan = DG.get_pruning_plan(model.dw, "out", [0, 1])  # elsewhere it still prunes
    assert_matches_twin(model, plan, torch.randn(2, 3, 5, 5))
    assert model.split_sizes == [6, 1, 7]


class EqualSizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(5, 6)
        self.split_sizes = [6, 6]
        self.p, self.q = nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], -1)
        u, v = h.split(self.split_sizes, -1)
        return self.p(u) + self.q(v)


def test_a_size_list_is_updated_by_position_not_by_value():
    # only the second piece shrinks: [6, 6] -> [6, 4], not [4, 4]
    model = EqualSizes().eval()
    x = torch.randn(2, 5)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.q, "in", [1, 2])
    assert_matches_twin(model, plan, x)
    assert model.split_sizes == [6, 4]


class Heads(nn.Module):
    """Hand-written attention whose num_heads equals its head_dim (or head_dim equals the
    inner size): an attribute value alone does not say which attribute sized which dim."""

    def __init__(self, d=10, heads=3, head_dim=3):
        super().__init__()
        self.num_heads, self.head_dim = heads, head_dim
        self.all_head_size = heads * head_dim
        self.q, self.k, self.v = (nn.Linear(d, heads * head_dim) for _ in range(3))
        self.proj = nn.Linear(heads * head_dim, d)
        self.scale = head_dim ** -0.5

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in (self.q(x), self.k(x), self.v(x)))
        o = torch.softmax(q @ k.transpose(-2, -1) * self.scale, -1) @ v
        return self.proj(o.transpose(1, 2).reshape(B, T, self.all_head_size))


@pytest.mark.parametrize("heads,head_dim,root,idxs,policy,expect", [
    (3, 3, "v", [0, 1, 4, 7], "heads", (2, 2)),  # q/k/v views share self.head_dim
    (3, 3, "k", [6, 7, 8], "cheapest", (2, 3)),  # a whole head: num_heads changes, not head_dim
    (3, 3, "q", [1, 4, 7], "dims", (3, 2)),      # a slot in every head: head_dim changes
    (1, 2, "k", [1], "heads", (1, 1)),           # head_dim == all_head_size
    (3, 3, "k", [0, 1, 2, 5, 6, 7, 8], "heads", (1, 2)),  # both change, to different sizes
])
def test_attention_sizes_when_attributes_share_a_value(heads, head_dim, root, idxs, policy,
                                                       expect):
    model = Heads(heads=heads, head_dim=head_dim).eval()
    x = torch.randn(2, 4, 10)  # no other dim of the views shares the value
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(root, "out", idxs, policy=policy)
    assert_matches_twin(model, plan, x)
    assert (model.num_heads, model.head_dim) == expect
    assert model.all_head_size == expect[0] * expect[1]
    assert model.q.out_features == model.k.out_features == model.v.out_features


def test_a_layer_inside_a_black_box_names_the_black_box():
    # nn.MultiheadAttention reads out_proj's weights without calling it: the error used to say
    # "never called in forward ... check the inputs", which sent users the wrong way
    model = nn.Sequential(nn.Linear(6, 8), nn.MultiheadAttention(8, 2, batch_first=True))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.attn = model[0], model[1]

        def forward(self, x):
            h = self.inp(x)
            return self.attn(h, h, h, need_weights=False)[0]

    wrapped = Wrap().eval()
    DG = tp.DependencyGraph().build_dependency(wrapped, torch.randn(2, 3, 6))
    with pytest.raises(tp.UnknownModuleError,
                       match=r"attn\.out_proj .* is part of attn \(MultiheadAttention\).*plan on "
                             r"attn instead"):
        DG.get_pruning_plan("attn.out_proj", "out", [0])


class Chunks(nn.Module):
    def __init__(self, c=4, chunks=2):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 1)
        self.chunks = chunks  # the number of pieces: it stays when each piece shrinks
        self.branches = nn.ModuleList(nn.Conv2d(c // chunks, 3, 1) for _ in range(chunks))

    def forward(self, x):
        parts = self.stem(x).chunk(self.chunks, dim=1)
        return sum(b(p) for b, p in zip(self.branches, parts))


def test_chunk_count_is_not_taken_for_the_piece_size():
    # chunk(2) of 4 channels runs as split(x, 2): the piece size 2 changed to 1 and the
    # count attribute holding the same value 2 was "updated" to 1
    model = Chunks().eval()
    x = torch.randn(2, 3, 4, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.stem, "out", [1])
    assert_matches_twin(model, plan, x)
    assert model.chunks == 2 and model.stem.out_channels == 2


class Shuffle3(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 9, 1), nn.Conv2d(9, 2, 1)
        self.groups = 3

    def forward(self, x):
        h = self.stem(x)
        b, c, hh, ww = h.shape
        h = h.view(b, self.groups, c // self.groups, hh, ww).transpose(1, 2).contiguous()
        return self.head(h.view(b, c, hh, ww))


def test_a_size_read_from_the_tensor_is_not_taken_for_an_attribute():
    # groups == channels per group == 3: removing a slot per group changes c // groups (read
    # from the tensor, so it adapts by itself) and self.groups was "updated" to 2 — the model
    # still ran, but shuffled differently (silently wrong outputs)
    model = Shuffle3().eval()
    x = torch.randn(2, 3, 4, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.head, "in", [7])
    assert sorted(next(s for s in plan.layer_steps if s.target == "stem").idxs) == [2, 5, 8]
    assert_matches_twin(model, plan, x)
    assert model.groups == 3


def test_a_size_read_from_the_tensor_inside_a_leaf_module():
    """The fuzzer's shuffle: a leaf module of its own (no children)."""
    model = nn.Sequential(nn.Conv2d(3, 9, 1), Shuffle(3), nn.Conv2d(9, 2, 1)).eval()
    x = torch.randn(2, 3, 4, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model[2], "in", [7])
    assert_matches_twin(model, plan, x)
    assert model[1].groups == 3
