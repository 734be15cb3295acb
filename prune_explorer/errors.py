"""Exceptions. Each one names the layer (or op) involved and says what to do about it.

All derive from ``PruningError`` so callers can catch the family; each also derives from the
built-in exception a user would naturally expect (``ValueError`` for bad arguments, ...).
"""

from __future__ import annotations


class PruningError(Exception):
    """Base class of every error raised by prune_explorer."""


class TracingError(PruningError, RuntimeError):
    """The model could not be run (or traced) with the example inputs."""


class InvalidIndicesError(PruningError, ValueError):
    """Indices given for a plan are out of range, duplicated, negative or not integers."""


class InvalidAmountError(PruningError, ValueError):
    """A pruning amount or round_to that cannot be honoured."""


class PruneAllChannelsError(PruningError, ValueError):
    """A plan would remove every channel of some layer or tensor."""


class UnknownModuleError(PruningError, KeyError):
    """The module is not part of the traced model, or was never called in forward."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnsupportedOperationError(PruningError, NotImplementedError):
    """The plan would have to carry channels through an op or layer nobody described."""


class StaleGraphError(PruningError, RuntimeError):
    """The model changed after tracing; the dependency graph no longer describes it."""


class PlanExecutionError(PruningError, RuntimeError):
    """Executing a plan failed; the model was restored to its state before exec."""


class HistoryMismatchError(PruningError, ValueError):
    """A saved pruning history does not fit the model it is replayed on."""
