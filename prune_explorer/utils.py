"""Small helpers kept under the classic names (``tp.utils.count_params``,
``tp.utils.count_prunable_channels``)."""

from __future__ import annotations

from .classic import (TORCH_BATCHNORM, TORCH_CONV, TORCH_LINEAR, TORCH_PRELU,
                      count_prunable_channels, count_prunable_params)
from .metrics import count_params

__all__ = ["count_params", "count_prunable_params", "count_prunable_channels", "TORCH_CONV",
           "TORCH_BATCHNORM", "TORCH_PRELU", "TORCH_LINEAR"]
