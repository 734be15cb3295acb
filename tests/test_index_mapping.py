"""Index maps are pure functions: tested by round trips and against torch itself."""

import numpy as np
import pytest
import torch

from prune_explorer import index_mapping as im


def test_concat_offsets_round_trip():
    maps = im.concat_maps([64, 32, 16])
    assert maps[1].forward(np.array([0, 5])).tolist() == [64, 69]
    assert maps[2].forward(np.array([3])).tolist() == [99]
    for m in maps:
        idx = np.array([0, 2, m.size_a - 1])
        assert m.inverse(m.forward(idx)).tolist() == idx.tolist()
    assert maps[0].inverse(np.array([63, 64, 100])).tolist() == [63]


def test_concat_agrees_with_torch_cat():
    a, b = torch.arange(6).view(1, 6), torch.arange(6, 10).view(1, 4)
    out = torch.cat([a, b], 1)[0]
    for piece, m, t in zip((a, b), im.concat_maps([6, 4]), (a, b)):
        for i in range(t.shape[1]):
            assert out[m.forward(np.array([i]))].item() == t[0, i].item()


def test_split_ranges_match_torch_split():
    x = torch.arange(10)
    pieces = torch.split(x, [3, 7])
    for m, p in zip(im.split_maps(10, [3, 7]), pieces):
        for j in range(len(p)):
            assert x[m.inverse(np.array([j]))].item() == p[j].item()
    assert im.split_maps(10, [3, 7])[1].forward(np.array([2, 3, 9])).tolist() == [0, 6]


def test_slice_and_step():
    m = im.slice_map(10, 2, 9, 3)  # 2, 5, 8
    assert m.forward(np.array([5, 6])).tolist() == [1]
    assert m.inverse(np.array([0, 2])).tolist() == [2, 8]


def test_flatten_channel_to_features():
    # channel 3 of 64x7x7 -> features 147..195
    assert list(im.flatten_features(3, 49)) == list(range(147, 196))
    m = im.flatten_owner(64, 49)
    assert m.forward(np.array([3])).tolist() == list(range(147, 196))
    assert m.inverse(np.array([150, 195, 196])).tolist() == [3, 4]
    x = torch.arange(64 * 7 * 7).view(64, 7, 7)
    assert torch.equal(x[3].flatten(), x.flatten()[147:196])


def test_repeat_and_repeat_interleave_are_many_to_one():
    r = im.repeat_map(4, 3)
    assert r.forward(np.array([1])).tolist() == [1, 5, 9]
    assert not r.injective
    ri = im.repeat_interleave_map(4, 2)
    assert ri.forward(np.array([1])).tolist() == [2, 3]
    assert ri.inverse(np.array([3, 4])).tolist() == [1, 2]
    x = torch.arange(4)
    assert torch.equal(x.repeat_interleave(2)[[2, 3]], torch.tensor([1, 1]))


@pytest.mark.parametrize("a,b,groups", [
    ((2, 64, 7, 7), (2, 3136), [([0], [0]), ([1, 2, 3], [1])]),
    ((1, 197, 768), (1, 197, 12, 64), [([1], [1]), ([2], [2, 3])]),
    ((8, 2, 58, 4, 4), (8, 116, 4, 4), [([0], [0]), ([1, 2], [1]), ([3], [2]), ([4], [3])]),
    ((1, 1, 5), (5,), [([2], [0])]),
])
def test_reshape_groups(a, b, groups):
    assert im.reshape_groups(a, b) == groups


def test_decompose_whole_slices_and_widening():
    # 12 heads x 64: removing all of head 2 is a whole row
    mask = im.element_mask([12, 64], [np.array([2]), None])
    per_dim, m = im.decompose(mask, [12, 64], [True, True])
    assert per_dim[0].tolist() == [2] and per_dim[1].tolist() == []
    # slot 5 of every head: a whole column
    per_dim, _ = im.decompose(im.element_mask([12, 64], [None, np.array([5])]), [12, 64],
                              [True, True])
    assert per_dim[0].tolist() == [] and per_dim[1].tolist() == [5]
    # a lone element widens to the cheaper slice: a column (12) rather than a row (64)
    lone = np.zeros(12 * 64, dtype=bool)
    lone[2 * 64 + 5] = True
    per_dim, m = im.decompose(lone, [12, 64], [True, True])
    assert per_dim[1].tolist() == [5] and m.sum() == 12
    # ... unless the column dim cannot be pruned
    per_dim, m = im.decompose(lone, [12, 64], [True, False])
    assert per_dim[0].tolist() == [2] and m.sum() == 64
    # ... or whole heads are preferred
    per_dim, m = im.decompose(lone, [12, 64], [True, True], prefer=[True, False])
    assert per_dim[0].tolist() == [2]
    with pytest.raises(ValueError):
        im.decompose(lone, [12, 64], [False, False])


def test_element_mask_matches_numpy_broadcasting():
    m = im.element_mask([3, 4], [np.array([1]), np.array([0, 3])]).reshape(3, 4)
    expected = np.zeros((3, 4), bool)
    expected[1, :] = True
    expected[:, [0, 3]] = True
    assert (m == expected).all()


def test_broadcast_and_reductions():
    assert im.broadcast_pairs((64, 1, 1), (2, 64, 7, 7)) == [(0, 1)]
    assert im.broadcast_pairs((1, 7), (3, 7)) == [(1, 1)]
    assert im.kept_dims(4, [2, 3], keepdim=False) == [(0, 0), (1, 1)]
    assert im.kept_dims(4, [-1], keepdim=True) == [(0, 0), (1, 1), (2, 2)]


@pytest.mark.parametrize("total,k,r,remaining", [(64, 25, 16, 32), (64, 25, 1, 39), (10, 9, 4, 4),
                                                 (48, 10, 8, 40), (64, 0, 16, 64),
                                                 # a tie (6 is 2 from 4 and from 8) keeps
                                                 # more channels, as 0.2.7 rounded
                                                 (8, 2, 4, 8), (12, 2, 4, 12)])
def test_round_remaining(total, k, r, remaining):
    assert total - im.round_remaining(total, k, r) == remaining


def test_owner_maps_at_their_edges():
    # empty requests map to empty results (never None)
    m = im.concat_maps([2, 3])[1]
    empty = np.zeros(0, dtype=im.INDEX)
    assert m.forward(empty).tolist() == [] and m.inverse(empty).tolist() == []
    # covered: the output indices that come from the input (None: all of them)
    assert m.covered().tolist() == [False, False, True, True, True]
    assert im.identity_map(3).covered() is None
    pad = im.OwnerMap(2, 4, np.array([-1, 0, 1, -1]))
    assert pad.covered().tolist() == [False, True, True, False]
    assert pad.forward(np.array([1])).tolist() == [2] and pad.inverse(np.array([0, 2])).tolist() == [1]
    # injective: identity and offsets are, repeats are not
    assert im.identity_map(3).injective is True and m.injective is True
    rep = im.repeat_map(2, 2)
    assert rep.injective is False and rep.inverse(np.array([0, 2])).tolist() == [0]


def test_identity_maps_pass_indices_through():
    # an identity map (owner None) sends every index to itself, both ways
    ident = im.identity_map(5)
    assert ident.forward(np.array([1, 3])).tolist() == [1, 3]
    assert ident.inverse(np.array([0, 4])).tolist() == [0, 4]
    # a slice that keeps the whole dim (x[:, :], x[:, 0:6]) is that identity, not a copy map
    for start, end in [(None, None), (0, 6), (0, None)]:
        m = im.slice_map(6, start, end)
        assert (m.size_a, m.size_b, m.owner) == (6, 6, None)
        assert m.forward(np.array([2, 5])).tolist() == [2, 5]
    # a step of 2 over the whole dim is not: out[i] <- in[2i]
    assert im.slice_map(6, None, None, 2).owner.tolist() == [0, 2, 4]


@pytest.mark.parametrize("a,b", [((2, 3), (2,)), ((2,), (2, 3)), ((4, 3), (12, 2))])
def test_reshape_groups_refuses_different_element_counts(a, b):
    # one side runs out of dims before the other: a clear ValueError, not an IndexError
    with pytest.raises(ValueError, match="cannot reshape"):
        im.reshape_groups(a, b)
