"""Unstructured masking, as 0.2.x had it: a 0/1 mask kept as a buffer (``weight_mask``,
``bias_mask``) and applied to the tensor before every forward. Masking twice keeps what
*either* mask keeps (the union of ones), exactly like 0.2.x."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

__all__ = ["mask_weight", "mask_bias"]


def _apply_masks(module: nn.Module, _inputs) -> None:
    with torch.no_grad():
        for attr in ("weight", "bias"):
            t, mask = getattr(module, attr, None), getattr(module, f"{attr}_mask", None)
            if t is not None and mask is not None:
                t.mul_(mask)


def _mask(layer: nn.Module, attr: str, mask, inplace: bool) -> nn.Module:
    if not inplace:
        layer = copy.deepcopy(layer)
    t = getattr(layer, attr, None)
    if t is None:
        return layer  # no bias to mask: nothing to do (0.2.x did the same)
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if tuple(m.shape) != tuple(t.shape):
        raise ValueError(f"the {attr} mask for {type(layer).__name__} has shape "
                         f"{list(m.shape)} but its {attr} has shape {list(t.shape)}; pass a 0/1 "
                         f"mask of the {attr}'s shape")
    m = (m != 0).to(dtype=t.dtype, device=t.device)
    old = getattr(layer, f"{attr}_mask", None)
    if old is not None:
        m = ((old + m) > 0).to(t.dtype)
        setattr(layer, f"{attr}_mask", m)
    else:
        layer.register_buffer(f"{attr}_mask", m)
    if not getattr(layer, "_pe_mask_hook", False):
        layer.register_forward_pre_hook(_apply_masks)
        layer._pe_mask_hook = True
    return layer


def mask_weight(layer: nn.Module, mask, inplace: bool = True) -> nn.Module:
    """Zero the weight entries where ``mask`` is 0, before every forward of ``layer``."""
    return _mask(layer, "weight", mask, inplace)


def mask_bias(layer: nn.Module, mask, inplace: bool = True) -> nn.Module:
    """Zero the bias entries where ``mask`` is 0, before every forward of ``layer``."""
    return _mask(layer, "bias", mask, inplace)
