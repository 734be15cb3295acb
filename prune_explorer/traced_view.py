"""What the lower layers read from a traced model: the one contract between them and the facade.

``groups``, ``plan_builder``, ``plan`` and ``execution`` need the traced graph, its dim graph,
the layer registry, the model, and a few lookups over them. They take an object with exactly
these members (``DependencyGraph`` is one, ``PretrainedGraph`` another) instead of importing
``dependency`` back, so the layering is one-way:

    graph, dimgraph, layers, index_mapping, propagation      (data and rules)
      -> traced_view                                          (this contract)
      -> groups, plan_builder, plan, execution                (algorithms over it)
      -> dependency, whole_model, pretrained                  (facades that implement it)

``tests/test_layering.py`` checks that no lower module imports a facade, and that the
facades satisfy this protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn

    from .dimgraph import DimGraph
    from .graph import Graph
    from .layers import LayerRegistry
    from .plan import PruningPlan


@runtime_checkable
class TracedView(Protocol):
    """A traced model: the graph of one forward and the lookups plans are computed with."""

    model: "nn.Module"
    registry: "LayerRegistry"
    version: int  # bumped by every exec and re-trace: plans of an older version are stale

    @property
    def graph(self) -> "Graph": ...

    @property
    def dg(self) -> "DimGraph": ...

    def module_name(self, module: Any) -> str:
        """The qualified name of a module (or a name, checked)."""

    def submodule(self, name: str) -> "nn.Module":
        """The module called ``name`` ("" for the model)."""

    def tensor(self, name: str) -> "torch.Tensor":
        """The parameter or buffer called ``name``."""

    def owners_of(self, tensor_name: str) -> list[tuple[str, str]]:
        """Every (module, attribute) holding that tensor (tied weights have several)."""

    def prunes_itself(self, module: "nn.Module") -> bool:
        """A layer whose sizes exec re-derives from its tensors (conv, linear, norms)."""

    def owns_traced_params(self, module: "nn.Module") -> bool:
        """A registered layer whose own weights the trace read as ops (it roots groups)."""

    def root_vertex(self, module: Any, side: str = "out") -> int:
        """The dim-graph vertex of a layer's output (or input) channels."""

    def channel_scores(self, name: str, dim: int, strategy: str,
                       cache: dict | None = None) -> "np.ndarray | None":
        """Per-index importance of a tensor along ``dim`` (None: not scored)."""

    def execute(self, plan: "PruningPlan", verify: bool | str = "auto") -> int:
        """Apply ``plan`` to the model (all or nothing)."""
