"""The output shape PyTorch's own layers give an input, read from the layer as it is now.

The check after exec (``verify.py``) runs the pruned model once, shape-only. A layer the plan
changed has to show that it still accepts what now reaches it: its weight against the input
channels, its ``groups`` against both, its bias and norm vectors against its width. For
torch's own convolutions, linear layers and norms those are the only things their forward
checks, and they can be checked from the layer's tensors and attributes in a few
microseconds, where running the layer's Python, the functional call and the shape-only
kernel costs tens. A layer whose configuration is not one of those below (a padding mode,
``padding="same"``, a training-mode norm) gets no rule and runs as before.

Each rule returns the output shape, or None where the real forward would raise (or where the
rule is not sure): the caller then runs the layer for real. Tests compare every rule with the
real layer over many configurations, broken ones included (``tests/test_leaf_shapes.py``).
"""

from __future__ import annotations

from math import prod
from typing import Callable

from torch import nn

from .module_state import runs_torch_forward

Shape = tuple[int, ...]


# tensors are read from ``_parameters`` / ``_buffers`` (``Module.__getattr__`` costs more
# than a rule); a torch.Size compares equal to a tuple of the same ints


def _conv(m: nn.Module, x: Shape) -> Shape | None:
    p = m._parameters
    w, b = p.get("weight"), p.get("bias")
    if w is None:  # the weight kept elsewhere (old-style weight_norm): let it run
        return None
    ws = w.shape
    nd = len(ws) - 2
    if len(x) != nd + 2 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    g = m.groups
    if g < 1 or x[1] != ws[1] * g or ws[0] % g:
        return None
    if b is not None and b.shape != (ws[0],):
        return None
    spatial = []
    for i in range(nd):
        k, s, pad, d = ws[2 + i], m.stride[i], m.padding[i], m.dilation[i]
        n = (x[2 + i] + 2 * pad - d * (k - 1) - 1) // s + 1
        if n <= 0:
            return None
        spatial.append(n)
    return (x[0], ws[0], *spatial)


def _linear(m: nn.Module, x: Shape) -> Shape | None:
    p = m._parameters
    w, b = p.get("weight"), p.get("bias")
    if w is None or not x or x[-1] != w.shape[1]:
        return None
    if b is not None and b.shape != (w.shape[0],):
        return None
    return (*x[:-1], w.shape[0])


def _batch_norm(ranks: tuple[int, ...]) -> Callable:
    def rule(m: nn.Module, x: Shape) -> Shape | None:
        if m.training or len(x) not in ranks:
            return None  # training: batch statistics, and a batch of one raises
        c = (x[1],)
        p, b = m._parameters, m._buffers
        for t in (p.get("weight"), p.get("bias"), b.get("running_mean"), b.get("running_var")):
            if t is not None and t.shape != c:
                return None
        if b.get("running_mean") is None and prod(x) // x[1] <= 1:
            return None  # batch statistics of one value per channel: the layer raises
        return tuple(x)
    return rule


def _layer_norm(m: nn.Module, x: Shape) -> Shape | None:
    shape = tuple(m.normalized_shape)
    if len(x) < len(shape) or tuple(x[len(x) - len(shape):]) != shape:
        return None
    p = m._parameters
    if any(t is not None and t.shape != shape for t in (p.get("weight"), p.get("bias"))):
        return None
    return tuple(x)


def _group_norm(m: nn.Module, x: Shape) -> Shape | None:
    if len(x) < 2 or m.num_groups < 1 or x[1] % m.num_groups:
        return None
    p = m._parameters
    if any(t is not None and t.shape != (x[1],) for t in (p.get("weight"), p.get("bias"))):
        return None
    return tuple(x)


def _same(m: nn.Module, x: Shape) -> Shape | None:
    """Elementwise layers: any input, the same shape out."""
    return tuple(x)


# torch's elementwise layers: any input, the same shape out, and a forward that is one
# functional call with float, bool or str settings (the tracer's function mode steps aside
# inside them too: ``recorder``). Exact types only: a subclass may have forward code of its own
ELEMENTWISE_LAYERS = frozenset({
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU,
    nn.Sigmoid, nn.Tanh, nn.Mish, nn.ELU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d,
})

RULES: dict[type, Callable[[nn.Module, Shape], Shape | None]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm((2, 3)), nn.BatchNorm2d: _batch_norm((4,)),
    nn.BatchNorm3d: _batch_norm((5,)),
    nn.LayerNorm: _layer_norm, nn.GroupNorm: _group_norm,
    **{t: _same for t in ELEMENTWISE_LAYERS},
}


def rule_for(m: nn.Module) -> Callable[[nn.Module, Shape], Shape | None] | None:
    """The shape rule of ``m``'s exact type, if its forward is torch's own."""
    rule = RULES.get(type(m))
    return rule if rule is not None and runs_torch_forward(m) else None
