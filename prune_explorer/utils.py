"""Small helpers kept under the classic names (``tp.utils.count_params``)."""

from __future__ import annotations

from .metrics import count_params

__all__ = ["count_params"]
