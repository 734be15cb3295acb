"""``tp.prune``: the classic 0.2.x namespace of prune functions and classes.

``tp.prune.structured`` holds the prune functions (the engine's own: ``tp.prune_conv`` is
``tp.prune.structured.prune_conv``) and the classic classes a custom layer subclasses
(``BasePruningFunction``, and 0.2.8's ``BasePruner``); ``tp.prune.unstructured`` the masking
helpers (``mask_weight``, ``mask_bias``); ``tp.prune.strategy`` is ``tp.strategy``.
"""

from .. import strategy
from . import structured, unstructured
from .structured import *  # noqa: F401,F403
from .structured import __all__ as _structured_all
from .unstructured import mask_bias, mask_weight

__all__ = ["structured", "unstructured", "strategy", "mask_weight", "mask_bias",
           *_structured_all]
