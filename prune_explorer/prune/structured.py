"""Structured prune functions and the classic classes behind them.

The functions are the engine's own (``prune_conv(layer, idxs, inplace=True, dry_run=False)
-> (layer, num_pruned)``). The classes are the two shapes 0.2.x offered for writing your own:

- ``BasePruningFunction`` (0.2.4–0.2.7): a class of static methods ``prune_params`` and
  ``calc_nparams_to_prune`` (and optionally ``check``), called through ``Cls.apply(layer,
  idxs, inplace, dry_run)``. The classic ``examples/customized_layer.py`` subclasses it and
  wraps ``apply`` in a function it registers with ``DG.register_customized_layer``.
- ``BasePruner`` (0.2.8): an object with ``prune(layer, idxs)``, called as ``pruner(layer,
  idxs, inplace, dry_run) -> (layer, metrics)`` where ``metrics`` is a dict
  (``{"#params": n}`` unless ``set_metrics``/``set_global_metrics`` says otherwise).

The built-in subclasses of both do their surgery with the engine's functions, so tied weights
stay tied and size attributes are re-derived from the tensors.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from typing import Callable, Dict, Sequence, Tuple

from torch import nn

from .. import pruners as P
from ..pruners import (prune_batchnorm, prune_conv, prune_conv_transpose, prune_depthwise_conv,
                        prune_embedding, prune_group_conv, prune_groupnorm, prune_instancenorm,
                        prune_layernorm, prune_linear, prune_multihead_attention,
                        prune_multihead_attention_heads, prune_parameter, prune_prelu,
                        prune_related_batchnorm, prune_related_conv,
                        prune_related_conv_transpose, prune_related_embedding,
                        prune_related_group_conv, prune_related_groupnorm,
                        prune_related_instancenorm, prune_related_layernorm,
                        prune_related_linear, prune_related_multihead_attention,
                        prune_related_prelu)

__all__ = [
    # functions (the engine's)
    "prune_conv", "prune_related_conv", "prune_group_conv", "prune_related_group_conv",
    "prune_depthwise_conv", "prune_conv_transpose", "prune_related_conv_transpose",
    "prune_linear", "prune_related_linear", "prune_batchnorm", "prune_related_batchnorm",
    "prune_instancenorm", "prune_related_instancenorm", "prune_layernorm",
    "prune_related_layernorm", "prune_groupnorm", "prune_related_groupnorm", "prune_prelu",
    "prune_related_prelu", "prune_embedding", "prune_related_embedding",
    "prune_multihead_attention", "prune_related_multihead_attention",
    "prune_multihead_attention_heads", "prune_parameter",
    # 0.2.4-0.2.7 classes
    "BasePruningFunction", "ConvPruning", "GroupConvPruning", "RelatedConvPruning",
    "LinearPruning", "RelatedLinearPruning", "BatchnormPruning", "PReLUPruning",
    "LayernormPruning", "EmbeddingPruning",
    # 0.2.8 objects
    "BasePruner", "ConvOutChannelPruner", "ConvInChannelPruner", "GroupConvPruner",
    "LinearOutChannelPruner", "LinearInChannelPruner", "BatchnormPruner", "LayernormPruner",
    "PReLUPruner", "EmbeddingPruner", "ParameterPruner", "MultiheadAttentionPruner",
    "prune_conv_out_channel", "prune_conv_in_channel", "prune_linear_out_channel",
    "prune_linear_in_channel", "set_global_metrics",
]


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _count(fn: Callable, layer: nn.Module, idxs, **kw) -> int:
    return fn(layer, idxs, dry_run=True, **kw)[1]


# ---------------------------------------------------------------------------------------------
# 0.2.4-0.2.7: classes of static methods, called through ``apply``
# ---------------------------------------------------------------------------------------------
class BasePruningFunction(ABC):
    """Subclass with ``prune_params(layer, idxs) -> layer`` and ``calc_nparams_to_prune(layer,
    idxs) -> int`` (static methods); ``check(layer, idxs)`` may raise on bad input. Extra
    keyword arguments of ``apply`` (0.2.x passed ``pruning_dim`` to LayerNorm) reach the two
    methods that accept them."""

    @classmethod
    def apply(cls, layer: nn.Module, idxs: Sequence[int], inplace: bool = True,
              dry_run: bool = False, **kwargs) -> Tuple[nn.Module, int]:
        idxs = sorted(set(int(i) for i in idxs))
        cls.check(layer, idxs)
        kw = {k: v for k, v in kwargs.items() if _accepts(cls.calc_nparams_to_prune, k)}
        n = cls.calc_nparams_to_prune(layer, idxs, **kw)
        if dry_run:
            return layer, n
        if not inplace:
            layer = copy.deepcopy(layer)
        kw = {k: v for k, v in kwargs.items() if _accepts(cls.prune_params, k)}
        layer = cls.prune_params(layer, idxs, **kw)
        return layer, n

    @staticmethod
    def check(layer: nn.Module, idxs: Sequence[int]) -> None:
        pass

    @staticmethod
    @abstractmethod
    def prune_params(layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Remove ``idxs`` from ``layer`` in place and return it."""

    @staticmethod
    @abstractmethod
    def calc_nparams_to_prune(layer: nn.Module, idxs: Sequence[int]) -> int:
        """How many parameters ``prune_params`` would remove."""


def _classic(fn: Callable, doc: str) -> type:
    """A BasePruningFunction subclass whose methods call the engine's ``fn``."""

    def prune_params(layer, idxs):
        return fn(layer, idxs)[0]

    def calc_nparams_to_prune(layer, idxs):
        return _count(fn, layer, idxs)

    return type(doc, (BasePruningFunction,), {
        "prune_params": staticmethod(prune_params),
        "calc_nparams_to_prune": staticmethod(calc_nparams_to_prune),
        "__doc__": f"Classic class over the engine's ``{fn.__name__}``."})


ConvPruning = _classic(prune_conv, "ConvPruning")
RelatedConvPruning = _classic(prune_related_conv, "RelatedConvPruning")
GroupConvPruning = _classic(prune_group_conv, "GroupConvPruning")
LinearPruning = _classic(prune_linear, "LinearPruning")
RelatedLinearPruning = _classic(prune_related_linear, "RelatedLinearPruning")
BatchnormPruning = _classic(prune_batchnorm, "BatchnormPruning")
PReLUPruning = _classic(prune_prelu, "PReLUPruning")
EmbeddingPruning = _classic(prune_embedding, "EmbeddingPruning")


def _layernorm_along(layer: nn.LayerNorm, idxs, pruning_dim: int, dry_run: bool) -> int:
    """Remove entries of a LayerNorm along one of its normalized dims (0.2.x's
    ``pruning_dim``, counted from the end: -1 is the last)."""
    shape = tuple(layer.normalized_shape)
    if len(shape) < -pruning_dim:
        return 0
    dim = len(shape) + pruning_dim if pruning_dim < 0 else pruning_dim
    idxs = P.validate_indices(idxs, shape[dim], f"LayerNorm dim {pruning_dim}")
    n = 2 * len(idxs) if layer.elementwise_affine and layer.bias is not None else (
        len(idxs) if layer.elementwise_affine else 0)
    if dry_run:
        return n
    for t in (layer.weight, layer.bias):
        if t is not None:
            P.prune_tensor(t, dim, idxs)
    layer.normalized_shape = shape[:dim] + (shape[dim] - len(idxs),) + shape[dim + 1:]
    return n


class LayernormPruning(BasePruningFunction):
    """LayerNorm entries along ``pruning_dim`` (default -1, the hidden size)."""

    @staticmethod
    def prune_params(layer, idxs, pruning_dim: int = -1):
        _layernorm_along(layer, idxs, pruning_dim, False)
        return layer

    @staticmethod
    def calc_nparams_to_prune(layer, idxs, pruning_dim: int = -1):
        return _layernorm_along(layer, idxs, pruning_dim, True)


# ---------------------------------------------------------------------------------------------
# 0.2.8: pruner objects returning a dict of metrics
# ---------------------------------------------------------------------------------------------
class BasePruner(ABC):
    """Subclass with ``prune(self, layer, idxs) -> layer`` and ``calc_nparams_to_prune``;
    call an instance as ``pruner(layer, idxs, inplace=True, dry_run=False) -> (layer,
    metrics)``. ``side`` ("out" or "in") tells ``DG.get_pruning_plan`` which channels of a
    layer the pruner removes."""

    side = "out"
    name = ""

    def __init__(self, metrics_dict: Dict[str, Callable] | None = None, dim: int = 1):
        self.set_metrics(metrics_dict)
        self.dim = dim
        if self.name:
            self.__name__ = self.name

    def add_metric(self, name: str, metric_fn: Callable) -> None:
        self.metrics[name] = metric_fn

    def set_metrics(self, metric_dict: Dict[str, Callable] | None = None) -> None:
        self.metrics = dict(metric_dict) if metric_dict is not None else {
            "#params": self.calc_nparams_to_prune}

    def check(self, layer: nn.Module, idxs: Sequence[int]) -> None:
        pass

    def __call__(self, layer: nn.Module, idxs: Sequence[int], inplace: bool = True,
                 dry_run: bool = False):
        idxs = sorted(set(int(i) for i in idxs))
        self.check(layer, idxs)
        metrics = {name: fn(layer, idxs) for name, fn in self.metrics.items()}
        if dry_run:
            return layer, metrics
        if not inplace:
            layer = copy.deepcopy(layer)
        return self.prune(layer, idxs), metrics

    @abstractmethod
    def prune(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Remove ``idxs`` from ``layer`` in place and return it."""

    def calc_nparams_to_prune(self, layer: nn.Module, idxs: Sequence[int]) -> int:
        return 0


def _pruner(fn: Callable, cls_name: str, side: str, name: str = "") -> type:
    def prune(self, layer, idxs):
        return fn(layer, idxs)[0]

    def calc_nparams_to_prune(self, layer, idxs):
        return _count(fn, layer, idxs)

    return type(cls_name, (BasePruner,), {
        "prune": prune, "calc_nparams_to_prune": calc_nparams_to_prune, "side": side,
        "name": name, "__doc__": f"0.2.8 pruner over the engine's ``{fn.__name__}``."})


ConvOutChannelPruner = _pruner(prune_conv, "ConvOutChannelPruner", "out", "prune_conv_out_channel")
ConvInChannelPruner = _pruner(prune_related_conv, "ConvInChannelPruner", "in",
                              "prune_conv_in_channel")
GroupConvPruner = _pruner(prune_group_conv, "GroupConvPruner", "out", "prune_group_conv")
LinearOutChannelPruner = _pruner(prune_linear, "LinearOutChannelPruner", "out",
                                 "prune_linear_out_channel")
LinearInChannelPruner = _pruner(prune_related_linear, "LinearInChannelPruner", "in",
                                "prune_linear_in_channel")
BatchnormPruner = _pruner(prune_batchnorm, "BatchnormPruner", "out", "prune_batchnorm")
PReLUPruner = _pruner(prune_prelu, "PReLUPruner", "out", "prune_prelu")
EmbeddingPruner = _pruner(prune_embedding, "EmbeddingPruner", "out", "prune_embedding")
MultiheadAttentionPruner = _pruner(prune_multihead_attention, "MultiheadAttentionPruner", "out",
                                   "prune_multihead_attention")


class LayernormPruner(BasePruner):
    name = "prune_layernorm"

    def __init__(self, metrics=None, pruning_dim: int = -1):
        super().__init__(metrics)
        self.pruning_dim = pruning_dim

    def prune(self, layer, idxs):
        _layernorm_along(layer, idxs, self.pruning_dim, False)
        return layer

    def calc_nparams_to_prune(self, layer, idxs):
        return _layernorm_along(layer, idxs, self.pruning_dim, True)


class ParameterPruner(BasePruner):
    """A bare tensor along ``dim`` (0.2.8's default for transformers was 2)."""

    name = "prune_parameter"

    def prune(self, tensor, idxs):
        return prune_parameter(tensor, idxs, dim=self.dim)[0]

    def calc_nparams_to_prune(self, tensor, idxs):
        return 0  # as 0.2.8 counted it


# 0.2.8's instances whose names 0.2.7 did not have (the shared names keep 0.2.7's functions)
prune_conv_out_channel = ConvOutChannelPruner()
prune_conv_in_channel = ConvInChannelPruner()
prune_linear_out_channel = LinearOutChannelPruner()
prune_linear_in_channel = LinearInChannelPruner()


def set_global_metrics(metric_dict: Dict[str, Callable]) -> None:
    """Use ``metric_dict`` for every 0.2.8 pruner object (``plan.exec()`` still returns the
    number of parameters removed)."""
    for p in (prune_conv_out_channel, prune_conv_in_channel, prune_linear_out_channel,
              prune_linear_in_channel):
        p.set_metrics(metric_dict)
