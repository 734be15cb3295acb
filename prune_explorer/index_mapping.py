"""Pure functions: how channel indices map through ops.

Two kinds of relation cover every op we know:

* an **owner map** ``b[i] == a[owner[i]]`` (``-1``: not from ``a``). Identity, concat offsets,
  split/slice ranges, repeats, pixel shuffle and flatten's per-channel expansion are all owner
  maps. ``forward`` sends indices of ``a`` to ``b``; ``inverse`` brings indices of ``b`` back.
* a **block**: two lists of dims whose row-major products are the same elements (a reshape).
  ``element_mask`` and ``decompose`` move a pruned set across it; when the set does not split
  into whole slices of the other side, ``decompose`` widens it to the cheapest set that does
  (pruning slot 3 of one head means slot 3 of every head, or the whole head).

Everything here works on numpy arrays and plain ints, and is tested by round trips.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Iterable, Sequence

import numpy as np

INDEX = np.int64


def as_index_array(idxs: Iterable[int]) -> np.ndarray:
    return np.unique(np.asarray(list(idxs) if not isinstance(idxs, np.ndarray) else idxs,
                                dtype=INDEX))


# ---------------------------------------------------------------------------------------------
# owner maps
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OwnerMap:
    """``b[i] <- a[owner[i]]``; ``owner is None`` means identity (sizes equal)."""

    size_a: int
    size_b: int
    owner: np.ndarray | None = None

    def forward(self, idxs: np.ndarray) -> np.ndarray:
        """Indices of ``b`` whose element comes from one of ``idxs`` of ``a``."""
        if self.owner is None:
            return idxs
        if len(idxs) == 0:
            return idxs
        hit = np.zeros(self.size_a + 1, dtype=bool)  # last slot absorbs owner == -1
        hit[idxs] = True
        return np.nonzero(hit[self.owner])[0].astype(INDEX)

    def inverse(self, idxs: np.ndarray) -> np.ndarray:
        """Indices of ``a`` that feed any of ``idxs`` of ``b`` (unique when ``idxs`` is)."""
        if self.owner is None:
            return idxs
        if len(idxs) == 0:
            return idxs
        src = self.owner[idxs]
        src = src[src >= 0]
        return src if self.injective else np.unique(src)

    def covered(self) -> np.ndarray | None:
        """Mask over ``b`` of the indices that come from ``a`` (None: all of them)."""
        if self.owner is None:
            return None
        return self.owner >= 0

    @cached_property
    def injective(self) -> bool:
        if self.owner is None:
            return True
        o = self.owner[self.owner >= 0]
        return len(np.unique(o)) == len(o)


def identity_map(size: int) -> OwnerMap:
    return OwnerMap(size, size, None)


def concat_maps(sizes: Sequence[int]) -> list[OwnerMap]:
    """cat of pieces with ``sizes``: for each piece, the map piece -> concatenated output."""
    total = int(sum(sizes))
    maps, offset = [], 0
    for s in sizes:
        owner = np.full(total, -1, dtype=INDEX)
        owner[offset:offset + s] = np.arange(s, dtype=INDEX)
        maps.append(OwnerMap(int(s), total, owner))
        offset += s
    return maps


def split_maps(size: int, sizes: Sequence[int]) -> list[OwnerMap]:
    """split of a dim of ``size`` into ``sizes``: for each piece, the map input -> piece."""
    maps, offset = [], 0
    for s in sizes:
        maps.append(OwnerMap(size, int(s), np.arange(offset, offset + s, dtype=INDEX)))
        offset += s
    return maps


def slice_map(size: int, start: int | None, end: int | None, step: int = 1) -> OwnerMap:
    idx = np.arange(size, dtype=INDEX)[slice(start, end, step)]
    if len(idx) == size and step == 1:
        return identity_map(size)
    return OwnerMap(size, len(idx), idx)


def flatten_owner(channels: int, inner: int) -> OwnerMap:
    """flatten C x (inner) -> C*inner: feature f comes from channel f // inner."""
    return OwnerMap(channels, channels * inner,
                    np.arange(channels * inner, dtype=INDEX) // inner)


def repeat_map(size: int, times: int) -> OwnerMap:
    """``x.repeat`` along a dim: out[i] <- in[i % size]."""
    return OwnerMap(size, size * times, np.arange(size * times, dtype=INDEX) % size)


def repeat_interleave_map(size: int, times: int) -> OwnerMap:
    """``repeat_interleave`` (and GQA's expand+reshape): out[i] <- in[i // times]."""
    return OwnerMap(size, size * times, np.arange(size * times, dtype=INDEX) // times)


def pixel_shuffle_map(out_channels: int, r2: int) -> OwnerMap:
    """pixel_shuffle: input channel j lands in output channel j // r^2 (a = out, b = in)."""
    return OwnerMap(out_channels, out_channels * r2,
                    np.arange(out_channels * r2, dtype=INDEX) // r2)


def flatten_features(channel: int, inner: int) -> range:
    """Channel ``c`` of C x H x W flattened: features ``c*inner .. (c+1)*inner - 1``."""
    return range(channel * inner, (channel + 1) * inner)


# ---------------------------------------------------------------------------------------------
# reshape groups and blocks
# ---------------------------------------------------------------------------------------------
def reshape_groups(in_shape: Sequence[int], out_shape: Sequence[int]
                   ) -> list[tuple[list[int], list[int]]]:
    """Split a reshape into minimal groups of consecutive dims with equal products.

    Size-1 dims are dropped (they carry nothing). Each group is ``(in_dims, out_dims)``;
    a group with one dim on each side is an identity.
    """
    a = [(i, s) for i, s in enumerate(in_shape) if s != 1]
    b = [(j, s) for j, s in enumerate(out_shape) if s != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        gi, gj = [a[i][0]], [b[j][0]]
        pa, pb = a[i][1], b[j][1]
        i += 1
        j += 1
        while pa != pb:
            if pa < pb:
                if i >= len(a):
                    raise ValueError(f"cannot reshape {tuple(in_shape)} to {tuple(out_shape)}")
                gi.append(a[i][0])
                pa *= a[i][1]
                i += 1
            else:
                if j >= len(b):
                    raise ValueError(f"cannot reshape {tuple(in_shape)} to {tuple(out_shape)}")
                gj.append(b[j][0])
                pb *= b[j][1]
                j += 1
        groups.append((gi, gj))
    if i != len(a) or j != len(b):
        raise ValueError(f"cannot reshape {tuple(in_shape)} to {tuple(out_shape)}")
    return groups


def element_mask(sizes: Sequence[int], pruned: Sequence[np.ndarray | None]) -> np.ndarray:
    """Row-major mask over the product of ``sizes``: an element is pruned when any of its
    coordinates is pruned along its dim."""
    mask = np.zeros(tuple(sizes), dtype=bool)
    for axis, idxs in enumerate(pruned):
        if idxs is None or len(idxs) == 0:
            continue
        index = [slice(None)] * len(sizes)
        index[axis] = idxs
        mask[tuple(index)] = True
    return mask.reshape(-1)


def decompose(mask: np.ndarray, sizes: Sequence[int], expandable: Sequence[bool],
              prefer: Sequence[bool] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Express a pruned element set as pruned indices per dim.

    Returns ``(per_dim, mask)`` where ``mask`` may be *wider* than the input: elements that are
    not whole slices of any dim are covered by widening the cheapest expandable dim (fewest
    extra elements), among the ``prefer``-red dims when any of them is expandable. Raises
    ``ValueError`` when only non-expandable dims could cover them.
    """
    sizes = tuple(int(s) for s in sizes)
    m = mask.reshape(sizes).copy()
    n = len(sizes)
    while True:
        per_dim = []
        covered = np.zeros(sizes, dtype=bool)
        for axis in range(n):
            if not expandable[axis]:
                per_dim.append(np.zeros(0, dtype=INDEX))
                continue
            other = tuple(k for k in range(n) if k != axis)
            full = m.all(axis=other) if other else m.copy()
            idx = np.nonzero(full)[0].astype(INDEX)
            per_dim.append(idx)
            if len(idx):
                index = [slice(None)] * n
                index[axis] = idx
                covered[tuple(index)] = True
        residual = m & ~covered
        if not residual.any():
            return per_dim, m.reshape(-1)
        coords = np.nonzero(residual)
        best_axis, best_cost = None, None
        pool = [a for a in range(n) if expandable[a]]
        if prefer is not None and any(prefer[a] for a in pool):
            pool = [a for a in pool if prefer[a]]
        for axis in pool:
            add = np.unique(coords[axis])
            index = [slice(None)] * n
            index[axis] = add
            cost = int((~m[tuple(index)]).sum())
            if best_cost is None or cost < best_cost:
                best_axis, best_cost = axis, cost
        if best_axis is None:
            raise ValueError("the pruned elements are not whole slices of any prunable dim")
        index = [slice(None)] * n
        index[best_axis] = np.unique(coords[best_axis])
        m[tuple(index)] = True


def product_size(sizes: Sequence[int]) -> int:
    return int(prod(int(s) for s in sizes))


# ---------------------------------------------------------------------------------------------
# broadcasting and dim bookkeeping
# ---------------------------------------------------------------------------------------------
def broadcast_pairs(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[tuple[int, int]]:
    """(in_dim, out_dim) pairs that carry the same index (right-aligned, sizes equal and > 1)."""
    pairs = []
    offset = len(out_shape) - len(in_shape)
    for i, s in enumerate(in_shape):
        j = i + offset
        if j >= 0 and s == out_shape[j] and s != 1:
            pairs.append((i, j))
    return pairs


def kept_dims(ndim: int, reduced: Iterable[int], keepdim: bool) -> list[tuple[int, int]]:
    """(in_dim, out_dim) pairs surviving a reduction over ``reduced``."""
    red = {d % ndim for d in reduced} if ndim else set()
    pairs, j = [], 0
    for i in range(ndim):
        if i in red:
            if keepdim:
                j += 1
            continue
        pairs.append((i, j))
        j += 1
    return pairs


def round_remaining(total: int, n_to_prune: int, round_to: int) -> int:
    """Adjust ``n_to_prune`` so the remaining count is a multiple of ``round_to`` (nearest,
    never leaving fewer than ``round_to`` channels when that is possible)."""
    round_to = int(round_to or 1)
    if round_to <= 1:
        return n_to_prune
    remain = total - n_to_prune
    down = (remain // round_to) * round_to
    up = down + round_to
    if down < round_to:  # never round to zero channels
        target = min(up, total) if up <= total else total
    else:
        target = down if (remain - down) < (up - remain) or up > total else up
    return max(0, total - target)
