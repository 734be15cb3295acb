"""The rest of the classic Torch-Pruning 0.2.x vocabulary, for scripts that reach past the
prune functions: layer-type constants, ``OPTYPE``, ``Node`` and ``Dependency`` views of a plan
step (``for dep, idxs in plan.plan: dep.handler, dep.broken_node.module``), the pass-through
functions printed in plans (``_prune_elementwise_op``), ``count_prunable_channels`` and
``flatten_as_list``. Nothing here computes a plan: these are read-only views of the engine's
steps, and helpers that answer from a layer's own attributes.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Callable

import torch
from torch import nn

from . import pruners as P

TORCH_CONV = nn.modules.conv._ConvNd
TORCH_BATCHNORM = nn.modules.batchnorm._BatchNorm
TORCH_PRELU = nn.PReLU
TORCH_LINEAR = nn.Linear
TORCH_LAYERNORM = nn.LayerNorm
TORCH_EMBED = nn.Embedding
TORCH_MHA = nn.MultiheadAttention


class OPTYPE(IntEnum):
    """The classic layer kinds (0.2.8 numbering, a superset of 0.2.7's)."""

    CONV = 0
    BN = 1
    LINEAR = 2
    PRELU = 3
    GROUP_CONV = 4
    CONCAT = 5
    SPLIT = 6
    CUSTOMIZED = 7
    ELEMENTWISE = 8
    LN = 9
    EMBED = 10
    PARAMETER = 11
    MHA = 12


_TYPES: tuple[tuple[type, OPTYPE], ...] = (
    (TORCH_BATCHNORM, OPTYPE.BN), (TORCH_PRELU, OPTYPE.PRELU), (TORCH_LINEAR, OPTYPE.LINEAR),
    (TORCH_LAYERNORM, OPTYPE.LN), (TORCH_EMBED, OPTYPE.EMBED), (TORCH_MHA, OPTYPE.MHA),
    (nn.Parameter, OPTYPE.PARAMETER))


def module_type(module: Any) -> OPTYPE:
    """The classic OPTYPE of a module (anything unknown is ``ELEMENTWISE``, as in 0.2.x)."""
    if isinstance(module, TORCH_CONV):
        return OPTYPE.GROUP_CONV if module.groups > 1 else OPTYPE.CONV
    for cls, kind in _TYPES:
        if isinstance(module, cls):
            return kind
    return OPTYPE.ELEMENTWISE


# the pass-through "pruning functions" printed for ops in a plan: they change nothing
def _prune_concat(layer, *args, **kwargs):
    return layer, 0


def _prune_split(layer, *args, **kwargs):
    return layer, 0


def _prune_elementwise_op(layer, *args, **kwargs):
    return layer, 0


def _prune_reshape(layer, *args, **kwargs):
    return layer, 0


_DUMMIES = {f.__name__: f for f in (_prune_concat, _prune_split, _prune_elementwise_op,
                                    _prune_reshape)}


def classic_function(name: str) -> Callable | None:
    """The function a plan step's ``fn`` names (``prune_conv``, ``_prune_concat``)."""
    fn = _DUMMIES.get(name) or getattr(P, name, None)
    return fn if callable(fn) else None


def count_prunable_channels(module: nn.Module) -> int:
    """Output channels of a conv (``out_channels``), linear, BatchNorm or per-channel PReLU;
    0 for anything else, as in 0.2.x."""
    if isinstance(module, TORCH_CONV):
        return module.out_channels
    if isinstance(module, TORCH_LINEAR):
        return module.out_features
    if isinstance(module, TORCH_BATCHNORM):
        return module.num_features
    if isinstance(module, TORCH_PRELU):
        return 0 if module.num_parameters == 1 else module.num_parameters
    return 0


def count_prunable_params(module: nn.Module) -> int:
    """Parameters (and BatchNorm statistics) of the layer kinds 0.2.x could prune; 0 else."""
    if isinstance(module, (TORCH_CONV, TORCH_LINEAR)):
        return module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
    if isinstance(module, TORCH_BATCHNORM):
        n = sum(t.numel() for t in (module.running_mean, module.running_var) if t is not None)
        return n + sum(t.numel() for t in (module.weight, module.bias) if t is not None)
    if isinstance(module, TORCH_PRELU):
        return 0 if module.num_parameters == 1 else module.weight.numel()
    return 0


def flatten_as_list(obj) -> list[torch.Tensor]:
    """Every tensor in a nest of lists, tuples and dicts, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(
        obj, (list, tuple)) else ()
    return [t for item in items for t in flatten_as_list(item)]


class Node:
    """A classic graph node: a layer (or op, or bare parameter) and its name."""

    def __init__(self, module, grad_fn=None, node_name: str | None = None, *,
                 name: str | None = None):
        self.module = module
        self.grad_fn = grad_fn
        self._name = node_name if node_name is not None else name
        self.inputs: list[Node] = []
        self.outputs: list[Node] = []
        self.dependencies: list[Dependency] = []
        self.type = module_type(module)

    @property
    def name(self) -> str:
        return self.node_name

    @property
    def node_name(self) -> str:
        return f"{self._name} ({self.module})" if self._name is not None else str(self.module)

    def details(self) -> str:
        lines = [f"<Node: ({self.node_name}, {self.grad_fn})>", "    IN:"]
        lines += [f"        {n}" for n in self.inputs] + ["    OUT:"]
        lines += [f"        {n}" for n in self.outputs] + ["    DEP:"]
        lines += [f"        {d}" for d in self.dependencies]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<Node: ({self.node_name}, {self.grad_fn})>"


class Dependency:
    """A classic dependency: ``handler`` prunes ``broken_node`` when ``trigger`` prunes the
    layer before it. ``dep(idxs, dry_run=True)`` returns ``(layer, num_pruned)``."""

    def __init__(self, trigger, handler, broken_node: Node, index_transform=None,
                 source: Node | None = None):
        self.trigger = trigger
        self.handler = handler
        self.broken_node = broken_node
        self.source = source
        self.index_transform = index_transform

    @property
    def target(self) -> Node:  # 0.2.8's name
        return self.broken_node

    def __call__(self, idxs, dry_run: bool = False):
        return self.handler(self.broken_node.module, idxs, dry_run=dry_run)

    def is_triggered_by(self, pruning_fn) -> bool:
        return pruning_fn == self.trigger

    def __eq__(self, other) -> bool:
        return isinstance(other, Dependency) and (self.trigger, self.handler) == (
            other.trigger, other.handler) and self.broken_node.module is other.broken_node.module

    __hash__ = object.__hash__

    def __str__(self) -> str:
        name = getattr(self.trigger, "__name__", "None")
        return f"<DEP: {name} => {self.handler.__name__} on {self.broken_node.node_name}>"

    __repr__ = __str__


class ClassicGraphAPI:
    """Methods 0.2.x scripts call on a DependencyGraph besides building and planning."""

    def update_index(self) -> None:
        """Kept for scripts that call it: indices are mapped afresh for every plan."""

    def check_pruning_plan(self, plan) -> bool:
        """False if the plan cannot run (e.g. it would remove every channel of a layer)."""
        return not plan.problems

    @property
    def module_to_node(self) -> dict:
        """``{module: Node}`` for every traced layer (0.2.x's ``DG.module_to_node``)."""
        nodes = {}
        for name in self.graph.module_nodes:
            m = self.model.get_submodule(name) if name else self.model
            nodes.setdefault(m, Node(m, name=name))
        return nodes

    module2node = module_to_node  # 0.2.8's name

    @property
    def _module_to_name(self) -> dict:
        return {m: n for n, m in self.model.named_modules()}
