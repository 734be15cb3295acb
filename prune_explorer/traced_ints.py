"""Ints that remember which tensor dim they were read from.

During tracing, ``x.shape`` and ``x.size()`` return ``TracedInt``s: plain ints to the model's
code (arithmetic, indexing, torch calls all work), which also remember ``(value, dim)`` and a
rational factor. ``C // num_heads`` stays traced (``C * 1/12``). ``C - hidden`` or ``C + 1`` is
*derived* from the dim (``num == 0``): no exact coupling, but the code computes it from the
tensor, so a pruned model adapts it by itself (no attribute to update). Anything else falls
back to a plain int. When a traced int reaches ``view(B, N, C)``, we know the target dim is
*defined by* another tensor's dim — so pruning one must prune the other.
"""

from __future__ import annotations

from contextvars import ContextVar
from math import gcd

# set while tracing: called with (provenance, int) when the code finds a traced size equal to
# a plain int (``assert x.shape[1] == self.channels``), so a plan can update that attribute
SHAPE_CHECKS: ContextVar = ContextVar("prune_explorer_shape_checks", default=None)


class TracedInt(int):
    """An int read from a tensor's shape: ``int(self) == size(src) * num / den``."""

    def __new__(cls, value: int, src: tuple[int, int], num: int = 1, den: int = 1):
        obj = int.__new__(cls, value)
        g = gcd(num, den) or 1
        obj.src, obj.num, obj.den = src, num // g, den // g
        return obj

    @property
    def provenance(self) -> tuple[int, int, int, int]:
        return (self.src[0], self.src[1], self.num, self.den)

    def __mul__(self, other):
        if isinstance(other, int) and not isinstance(other, (TracedInt, bool)):
            return TracedInt(int(self) * other, self.src, self.num * other, self.den)
        return int(self) * other

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, int) and not isinstance(other, (TracedInt, bool)) and other and \
                int(self) % other == 0:
            return TracedInt(int(self) // other, self.src, self.num, self.den * other)
        return int(self) // other

    def __reduce__(self):  # pickles (and deep-copies) as a plain int
        return (int, (int(self),))

    def __repr__(self) -> str:
        return repr(int(self))

    __str__ = __repr__

    def _derived(self, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return TracedInt(value, self.src, 0, 1)
        return value

    def __add__(self, other):
        return self._derived(int(self) + other)

    def __radd__(self, other):
        return self._derived(other + int(self))

    def __sub__(self, other):
        return self._derived(int(self) - other)

    def __rsub__(self, other):
        return self._derived(other - int(self))

    def __eq__(self, other):
        equal = int.__eq__(self, other)
        if equal is True and type(other) is int:
            _note_check(self, other)
        return equal

    def __ne__(self, other):
        differ = int.__ne__(self, other)
        if differ is False and type(other) is int:
            _note_check(self, other)
        return differ

    __hash__ = int.__hash__

    # every other operation: a plain int

    def __rfloordiv__(self, other):
        return other // int(self)

    def __mod__(self, other):
        return int(self) % other

    def __neg__(self):
        return -int(self)

    def __pos__(self):
        return int(self)

    def __abs__(self):
        return abs(int(self))


def _note_check(x: TracedInt, other: int) -> None:
    sink = SHAPE_CHECKS.get()
    if sink is not None and x.num:
        sink(x.provenance)


def provenance_of(x) -> tuple[int, int, int, int] | None:
    return x.provenance if isinstance(x, TracedInt) else None
