"""prune_explorer: structured pruning with automatic layer-dependency tracking, and a visual
explorer to preview a plan before committing it.

Works as a drop-in for the classic API::

    import prune_explorer as tp
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    plan = DG.get_pruning_plan(model.conv1, tp.prune_conv, idxs=[2, 6, 9])
    plan.exec()
"""

from . import strategy, utils
from .dependency import DependencyGraph
from .errors import (HistoryMismatchError, InvalidAmountError, InvalidIndicesError,
                     PlanExecutionError, PruneAllChannelsError, PruningError, StaleGraphError,
                     TracingError, UnknownModuleError, UnsupportedOperationError)
from .execution import history_of
from .layers import REGISTRY, LayerSpec, register_layer
from .plan import PruningPlan, Step
from .pruners import (prune_batchnorm, prune_conv, prune_conv_transpose, prune_depthwise_conv,
                      prune_embedding, prune_group_conv, prune_groupnorm, prune_instancenorm,
                      prune_layernorm, prune_linear, prune_multihead_attention,
                      prune_multihead_attention_heads, prune_parameter, prune_prelu,
                      prune_related_batchnorm, prune_related_conv,
                      prune_related_conv_transpose, prune_related_embedding,
                      prune_related_group_conv, prune_related_groupnorm,
                      prune_related_instancenorm, prune_related_layernorm,
                      prune_related_linear, prune_related_multihead_attention,
                      prune_related_prelu)
from .tracing import trace

__version__ = "0.1.0"

__all__ = [
    "DependencyGraph", "PruningPlan", "Step", "trace", "strategy", "utils", "history_of",
    "prune_model", "select_channels", "save", "load", "Explorer", "plan_pretrained",
    "prune_pretrained",
    "REGISTRY", "LayerSpec", "register_layer",
    "PruningError", "TracingError", "InvalidIndicesError", "InvalidAmountError",
    "PruneAllChannelsError", "UnknownModuleError", "UnsupportedOperationError",
    "StaleGraphError", "PlanExecutionError", "HistoryMismatchError",
    "prune_conv", "prune_related_conv", "prune_group_conv", "prune_related_group_conv",
    "prune_depthwise_conv", "prune_conv_transpose", "prune_related_conv_transpose",
    "prune_linear", "prune_related_linear", "prune_batchnorm", "prune_related_batchnorm",
    "prune_instancenorm", "prune_related_instancenorm", "prune_layernorm",
    "prune_related_layernorm", "prune_groupnorm", "prune_related_groupnorm", "prune_prelu",
    "prune_related_prelu", "prune_embedding", "prune_related_embedding",
    "prune_multihead_attention", "prune_related_multihead_attention",
    "prune_multihead_attention_heads", "prune_parameter",
]


def __getattr__(name):  # heavy or optional pieces load on first use
    if name == "prune_model":
        from .whole_model import prune_model
        return prune_model
    if name == "select_channels":
        from .select import select_channels
        return select_channels
    if name in ("save", "load"):
        from . import serialization
        return getattr(serialization, name)
    if name in ("plan_pretrained", "prune_pretrained"):
        from . import pretrained
        return getattr(pretrained, name)
    if name == "Explorer":
        from .widget import Explorer
        return Explorer
    raise AttributeError(f"module 'prune_explorer' has no attribute {name!r}")
