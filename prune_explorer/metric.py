"""``tp.metric`` (0.2.8): per-layer metrics a 0.2.8 pruner object can report
(``tp.prune_conv_out_channel.add_metric("l1", tp.metric.NormMetric(p=1))``)."""

from __future__ import annotations

import torch

from .classic import TORCH_BATCHNORM, TORCH_CONV, TORCH_LINEAR, TORCH_PRELU

__all__ = ["norm", "NormMetric"]


def norm(weights: torch.Tensor, p: float = 1, norm_dim: int = 0, idxs=None,
         reduction: str = "sum"):
    """The p-norm of every slice of ``weights`` along ``norm_dim`` (of ``idxs`` only), summed
    unless ``reduction`` is not ``"sum"``."""
    per = torch.linalg.vector_norm(weights.detach().transpose(0, norm_dim).flatten(1).float(),
                                   ord=p, dim=1)
    if idxs is not None:
        per = per[list(idxs)]
    return per.sum() if reduction == "sum" else per


class NormMetric:
    """The p-norm of the slices ``idxs`` of a conv/linear (weight rows and bias), BatchNorm
    (scale and shift) or PReLU layer."""

    def __init__(self, p: float, reduction: str = "sum"):
        self.p = p
        self.reduction = reduction

    @torch.no_grad()
    def __call__(self, layer, idxs):
        def n(t, dim=0):
            return norm(t if t.dim() > 1 else t.unsqueeze(-1), self.p, dim, idxs, self.reduction)
        if isinstance(layer, (TORCH_CONV, TORCH_LINEAR)):
            out = n(layer.weight)
            return out + n(layer.bias) if layer.bias is not None else out
        if isinstance(layer, TORCH_BATCHNORM):
            return n(layer.weight) + n(layer.bias) if layer.weight is not None else 0
        if isinstance(layer, TORCH_PRELU):
            return 0 if layer.num_parameters == 1 else n(layer.weight)
        raise NotImplementedError(f"NormMetric does not know {type(layer).__name__}")
