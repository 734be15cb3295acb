"""Per-layer prune functions with the classic signature
``fn(layer, idxs, inplace=True, dry_run=False) -> (layer, num_pruned)``.

They cut tensors in place (``param.data = ...``), so a parameter shared by two modules (tied
embeddings) stays shared and optimisers keep their references; then they re-derive the
layer's size attributes from its tensors. ``num_pruned`` counts parameters (not buffers).
The dependency graph calls the same surgery through ``prune_tensor``; these functions are for
users who fix dependencies by hand, as the classic README shows.
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import InvalidIndicesError, PruneAllChannelsError


# ---------------------------------------------------------------------------------------------
# tensor surgery
# ---------------------------------------------------------------------------------------------
def validate_indices(idxs: Iterable, size: int, where: str) -> list[int]:
    """Integers, unique, in ``[0, size)``, not all of them. Raises with ``where`` named."""
    if isinstance(idxs, torch.Tensor):
        if idxs.dtype.is_floating_point or idxs.dtype == torch.bool:
            raise InvalidIndicesError(f"indices for {where} must be integers, got a {idxs.dtype} "
                                      f"tensor; pass e.g. [2, 6, 9]")
        idxs = idxs.flatten().tolist()
    if isinstance(idxs, (int,)) and not isinstance(idxs, bool):
        idxs = [idxs]
    try:
        items = list(idxs)
    except TypeError:
        raise InvalidIndicesError(
            f"indices for {where} must be a list of integers, got {type(idxs).__name__}") from None
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, (int,)) and not (
                hasattr(i, "__index__") and not isinstance(i, float)):
            raise InvalidIndicesError(
                f"index {i!r} for {where} is not an integer; pass integer channel indices "
                f"such as [2, 6, 9]")
        i = int(i)
        if i < 0:
            raise InvalidIndicesError(
                f"index {i} for {where} is negative; channel indices run from 0 to {size - 1}")
        if i >= size:
            raise InvalidIndicesError(
                f"index {i} is out of range for {where}, which has {size} channels "
                f"(valid: 0..{size - 1})")
        out.append(i)
    if len(set(out)) != len(out):
        dups = sorted({i for i in out if out.count(i) > 1})
        raise InvalidIndicesError(f"indices {dups} are given more than once for {where}; "
                                  f"list each channel once")
    if size and len(out) >= size:
        raise PruneAllChannelsError(
            f"pruning {len(out)} of {size} channels would remove every channel of {where}; "
            f"keep at least one")
    return sorted(out)


def keep_index(size: int, idxs: Sequence[int], device=None) -> torch.Tensor:
    """The indices of ``range(size)`` not in ``idxs`` (validated beforehand), ascending."""
    mask = np.ones(size, dtype=bool)
    mask[np.asarray(idxs, dtype=np.int64)] = False
    return torch.from_numpy(mask.nonzero()[0]).to(device=device)  # (np.flatnonzero: 4x the cost)


def prune_tensor(t: torch.Tensor, dim: int, idxs: Sequence[int],
                 keep: torch.Tensor | None = None) -> None:
    """Remove ``idxs`` along ``dim`` of a parameter or buffer, in place (identity kept).
    ``keep``: the indices that stay, when the caller has them already."""
    if not len(idxs):
        return
    if keep is None:
        keep = keep_index(t.shape[dim], idxs, t.device)
    t.data = torch.index_select(t.data, dim, keep)  # .data: no autograd, a new contiguous tensor
    grad = getattr(t, "grad", None)
    if grad is not None and grad.shape[dim] == len(keep) + len(idxs):
        t.grad = torch.index_select(grad, dim, keep).contiguous()
    elif grad is not None:
        t.grad = None


def removed_numel(shape: Sequence[int], cuts: dict[int, int]) -> int:
    """Elements removed from a tensor of ``shape`` when ``cuts[dim]`` entries go along dim."""
    before = 1
    after = 1
    for d, s in enumerate(shape):
        before *= s
        after *= s - cuts.get(d, 0)
    return before - after


def _surgery(layer: nn.Module, idxs, specs: Sequence[tuple[str, int]], inplace: bool,
             dry_run: bool, size: int, name: str, sync=None):
    where = f"{type(layer).__name__} {name}" if name else repr(layer)
    idxs = validate_indices(idxs, size, where)
    count = 0
    for attr, dim in specs:
        t = getattr(layer, attr, None)
        if isinstance(t, nn.Parameter) and t.dim() > dim:
            count += removed_numel(t.shape, {dim: len(idxs)})
    if dry_run:
        return layer, count
    if not inplace:
        layer = copy.deepcopy(layer)
    for attr, dim in specs:
        t = getattr(layer, attr, None)
        if isinstance(t, torch.Tensor) and t.dim() > dim:
            prune_tensor(t, dim, idxs)
    (sync or sync_layer)(layer)
    return layer, count


# ---------------------------------------------------------------------------------------------
# re-deriving size attributes from tensors
# ---------------------------------------------------------------------------------------------
def sync_layer(m: nn.Module) -> None:
    """Make a layer's size attributes agree with its (pruned) tensors."""
    if isinstance(m, nn.modules.conv._ConvNd):
        w = m.weight
        if m.transposed:
            m.in_channels = w.shape[0]
            m.out_channels = w.shape[1] * m.groups
        else:
            m.out_channels = w.shape[0]
            m.in_channels = w.shape[1] * m.groups
    elif isinstance(m, nn.Linear):
        m.out_features, m.in_features = m.weight.shape
    elif isinstance(m, nn.Bilinear):
        m.out_features, m.in1_features, m.in2_features = m.weight.shape
    elif isinstance(m, nn.modules.batchnorm._NormBase):
        t = m.weight if m.weight is not None else m.running_mean
        if t is not None:
            m.num_features = t.shape[0]
    elif isinstance(m, nn.LayerNorm):
        if m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)
    elif isinstance(m, nn.GroupNorm):
        if m.weight is not None:
            m.num_channels = m.weight.shape[0]
    elif isinstance(m, nn.PReLU):
        m.num_parameters = m.weight.numel()
    elif isinstance(m, nn.Embedding):
        m.num_embeddings, m.embedding_dim = m.weight.shape
    elif isinstance(m, nn.RMSNorm) if hasattr(nn, "RMSNorm") else False:
        if m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)
    elif type(m).__name__ == "Conv1D" and hasattr(m, "nf"):  # Hugging Face GPT-2 style
        m.nf = m.weight.shape[1]
    elif isinstance(m, nn.MultiheadAttention):
        _sync_mha(m)
    elif isinstance(m, nn.RNNBase) and getattr(m, "weight_ih_l0", None) is not None:
        m.input_size = m.weight_ih_l0.shape[1]  # its forward checks the input against it


def _sync_mha(m: nn.MultiheadAttention) -> None:
    m.embed_dim = m.out_proj.weight.shape[1]
    m.head_dim = m.embed_dim // m.num_heads
    m.out_proj.in_features = m.out_proj.weight.shape[1]
    m.out_proj.out_features = m.out_proj.weight.shape[0]
    if m._qkv_same_embed_dim:
        m.kdim = m.vdim = m.embed_dim
    else:
        m.kdim = m.k_proj_weight.shape[1]
        m.vdim = m.v_proj_weight.shape[1]


# ---------------------------------------------------------------------------------------------
# classic functions
# ---------------------------------------------------------------------------------------------
def _conv_out_specs(layer):
    return [("weight", 1 if layer.transposed else 0), ("bias", 0)]


def _conv_in_specs(layer):
    return [("weight", 0 if layer.transposed else 1)]


def prune_conv(layer: nn.modules.conv._ConvNd, idxs, inplace=True, dry_run=False, name=""):
    """Remove output channels of a convolution (Conv1d/2d/3d, ConvTranspose1d/2d/3d)."""
    if layer.groups > 1:
        return prune_group_conv(layer, idxs, inplace, dry_run, name)
    return _surgery(layer, idxs, _conv_out_specs(layer), inplace, dry_run, layer.out_channels, name)


def prune_related_conv(layer: nn.modules.conv._ConvNd, idxs, inplace=True, dry_run=False, name=""):
    """Remove input channels of a convolution (its weight's input dim)."""
    if layer.groups > 1:
        return prune_group_conv(layer, idxs, inplace, dry_run, name)
    return _surgery(layer, idxs, _conv_in_specs(layer), inplace, dry_run, layer.in_channels, name)


def prune_group_conv(layer: nn.modules.conv._ConvNd, idxs, inplace=True, dry_run=False, name=""):
    """A grouped conv loses whole groups: ``idxs`` are output channels; every group touched
    is removed (inputs and outputs), and ``groups`` shrinks. Depthwise convs lose exactly the
    given channels."""
    g = layer.groups
    where = f"{type(layer).__name__} {name}" if name else repr(layer)
    idxs = validate_indices(idxs, layer.out_channels, where)
    per_out = layer.out_channels // g
    per_in = layer.in_channels // g
    groups = sorted({i // per_out for i in idxs})
    if len(groups) >= g:
        raise PruneAllChannelsError(f"pruning {where} would remove all of its {g} groups")
    out_idx = [k * per_out + j for k in groups for j in range(per_out)]
    in_idx = [k * per_in + j for k in groups for j in range(per_in)]
    count = removed_numel(layer.weight.shape,
                          {0: len(in_idx) if layer.transposed else len(out_idx)})
    if layer.bias is not None:
        count += len(out_idx)
    if dry_run:
        return layer, count
    if not inplace:
        layer = copy.deepcopy(layer)
    if layer.transposed:
        prune_tensor(layer.weight, 0, in_idx)
    else:
        prune_tensor(layer.weight, 0, out_idx)
    if layer.bias is not None:
        prune_tensor(layer.bias, 0, out_idx)
    layer.groups = g - len(groups)
    sync_layer(layer)
    return layer, count


def prune_conv_transpose(layer, idxs, inplace=True, dry_run=False, name=""):
    """Output channels of a ConvTranspose (its weight's dim 1)."""
    return prune_conv(layer, idxs, inplace, dry_run, name)


def prune_related_conv_transpose(layer, idxs, inplace=True, dry_run=False, name=""):
    """Input channels of a ConvTranspose (its weight's dim 0)."""
    return prune_related_conv(layer, idxs, inplace, dry_run, name)


def prune_linear(layer: nn.Linear, idxs, inplace=True, dry_run=False, name=""):
    """Remove output features of a Linear layer."""
    return _surgery(layer, idxs, [("weight", 0), ("bias", 0)], inplace, dry_run,
                    layer.out_features, name)


def prune_related_linear(layer: nn.Linear, idxs, inplace=True, dry_run=False, name=""):
    """Remove input features of a Linear layer."""
    return _surgery(layer, idxs, [("weight", 1)], inplace, dry_run, layer.in_features, name)


_NORM_SPECS = [("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0)]


def prune_batchnorm(layer: nn.modules.batchnorm._BatchNorm, idxs, inplace=True, dry_run=False,
                    name=""):
    """Remove channels of a BatchNorm (weight, bias and running statistics)."""
    return _surgery(layer, idxs, _NORM_SPECS, inplace, dry_run, layer.num_features, name)


def prune_instancenorm(layer: nn.modules.instancenorm._InstanceNorm, idxs, inplace=True,
                       dry_run=False, name=""):
    """Remove channels of an InstanceNorm (affine parameters and running statistics, if any)."""
    return _surgery(layer, idxs, _NORM_SPECS, inplace, dry_run, layer.num_features, name)


def prune_layernorm(layer: nn.LayerNorm, idxs, inplace=True, dry_run=False, name=""):
    """Remove entries of a LayerNorm over the channel dim (first normalized dim)."""
    if not layer.elementwise_affine:
        where = f"LayerNorm {name}" if name else repr(layer)
        validate_indices(idxs, layer.normalized_shape[0], where)
        if dry_run:
            return layer, 0
        if not inplace:
            layer = copy.deepcopy(layer)
        layer.normalized_shape = (layer.normalized_shape[0] - len(list(idxs)),) + tuple(
            layer.normalized_shape[1:])
        return layer, 0
    return _surgery(layer, idxs, [("weight", 0), ("bias", 0)], inplace, dry_run,
                    layer.normalized_shape[0], name)


def prune_groupnorm(layer: nn.GroupNorm, idxs, inplace=True, dry_run=False, name=""):
    """Remove channels of a GroupNorm. The channel count must stay a multiple of
    ``num_groups``: remove the same number of channels from every group."""
    where = f"GroupNorm {name}" if name else repr(layer)
    checked = validate_indices(idxs, layer.num_channels, where)
    per = layer.num_channels // layer.num_groups
    counts = [0] * layer.num_groups
    for i in checked:
        counts[i // per] += 1
    if len(set(counts)) != 1:
        raise InvalidIndicesError(
            f"{where} has {layer.num_groups} groups of {per} channels; remove the same number "
            f"of channels from every group (got {counts})")
    return _surgery(layer, checked, [("weight", 0), ("bias", 0)], inplace, dry_run,
                    layer.num_channels, name)


def prune_prelu(layer: nn.PReLU, idxs, inplace=True, dry_run=False, name=""):
    """Remove channels of a PReLU with one weight per channel (a shared weight is kept)."""
    if layer.num_parameters == 1:
        return layer, 0
    return _surgery(layer, idxs, [("weight", 0)], inplace, dry_run, layer.num_parameters, name)


def prune_embedding(layer: nn.Embedding, idxs, inplace=True, dry_run=False, name=""):
    """Remove dims of an Embedding's vectors (``embedding_dim``)."""
    return _surgery(layer, idxs, [("weight", 1)], inplace, dry_run, layer.embedding_dim, name)


def prune_related_embedding(layer: nn.Embedding, idxs, inplace=True, dry_run=False, name=""):
    """Remove rows (tokens) of an Embedding's vocabulary (``num_embeddings``)."""
    return _surgery(layer, idxs, [("weight", 0)], inplace, dry_run, layer.num_embeddings, name)


def prune_multihead_attention(layer: nn.MultiheadAttention, idxs, inplace=True, dry_run=False,
                              name=""):
    """Remove embedding dims of nn.MultiheadAttention consistently across q, k, v (rows and
    columns of ``in_proj_weight``) and ``out_proj``. The remaining ``embed_dim`` must stay a
    multiple of ``num_heads``; to remove whole heads use ``prune_multihead_attention_heads``."""
    where = f"MultiheadAttention {name}" if name else repr(layer)
    idxs = validate_indices(idxs, layer.embed_dim, where)
    if (layer.embed_dim - len(idxs)) % layer.num_heads:
        raise InvalidIndicesError(
            f"{where} has {layer.num_heads} heads; the remaining embed_dim "
            f"({layer.embed_dim - len(idxs)}) must be a multiple of it. Remove a multiple of "
            f"{layer.num_heads} dims (the same slot in every head) or whole heads")
    return _prune_mha(layer, idxs, 0, inplace, dry_run)


def prune_multihead_attention_heads(layer: nn.MultiheadAttention, heads, inplace=True,
                                    dry_run=False, name=""):
    """Remove whole heads of nn.MultiheadAttention (and their embedding dims)."""
    where = f"MultiheadAttention {name}" if name else repr(layer)
    heads = validate_indices(heads, layer.num_heads, where + " heads")
    hd = layer.head_dim
    idxs = [h * hd + j for h in heads for j in range(hd)]
    return _prune_mha(layer, idxs, len(heads), inplace, dry_run)


def _prune_mha(layer: nn.MultiheadAttention, idxs: list[int], heads_removed: int, inplace: bool,
               dry_run: bool):
    E = layer.embed_dim
    n = len(idxs)
    rows = list(idxs) + [E + i for i in idxs] + [2 * E + i for i in idxs]
    count = 0
    if layer._qkv_same_embed_dim:
        count += removed_numel(layer.in_proj_weight.shape, {0: 3 * n, 1: n})
    else:
        count += removed_numel(layer.q_proj_weight.shape, {0: n, 1: n})
        count += removed_numel(layer.k_proj_weight.shape, {0: n})
        count += removed_numel(layer.v_proj_weight.shape, {0: n})
    if layer.in_proj_bias is not None:
        count += 3 * n
    count += removed_numel(layer.out_proj.weight.shape, {0: n, 1: n})
    if layer.out_proj.bias is not None:
        count += n
    if layer.bias_k is not None:
        count += 2 * n
    if dry_run:
        return layer, count
    if not inplace:
        layer = copy.deepcopy(layer)
    if layer._qkv_same_embed_dim:
        prune_tensor(layer.in_proj_weight, 0, rows)
        prune_tensor(layer.in_proj_weight, 1, idxs)
    else:
        for w in (layer.q_proj_weight, layer.k_proj_weight, layer.v_proj_weight):
            prune_tensor(w, 0, idxs)
        prune_tensor(layer.q_proj_weight, 1, idxs)
    if layer.in_proj_bias is not None:
        prune_tensor(layer.in_proj_bias, 0, rows)
    prune_tensor(layer.out_proj.weight, 0, idxs)
    prune_tensor(layer.out_proj.weight, 1, idxs)
    if layer.out_proj.bias is not None:
        prune_tensor(layer.out_proj.bias, 0, idxs)
    if layer.bias_k is not None:
        prune_tensor(layer.bias_k, 2, idxs)
        prune_tensor(layer.bias_v, 2, idxs)
    layer.num_heads -= heads_removed
    _sync_mha(layer)
    return layer, count


def prune_parameter(param: torch.Tensor, idxs, dim: int = 0, inplace=True, dry_run=False, name=""):
    """Remove entries of a bare ``nn.Parameter`` (cls_token, pos_embed, layer-scale gamma)."""
    where = f"parameter {name}" if name else f"parameter of shape {list(param.shape)}"
    idxs = validate_indices(idxs, param.shape[dim], where)
    count = removed_numel(param.shape, {dim: len(idxs)})
    if dry_run:
        return param, count
    if not inplace:
        param = copy.deepcopy(param)
    prune_tensor(param, dim, idxs)
    return param, count


# related (input-side) aliases for layers whose inputs and outputs are the same channels
prune_related_batchnorm = prune_batchnorm
prune_related_instancenorm = prune_instancenorm
prune_related_layernorm = prune_layernorm
prune_related_groupnorm = prune_groupnorm
prune_related_prelu = prune_prelu
prune_related_multihead_attention = prune_multihead_attention
prune_related_group_conv = prune_group_conv
prune_depthwise_conv = prune_group_conv
