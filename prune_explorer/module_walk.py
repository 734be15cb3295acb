"""``named_modules`` without a generator per module.

``nn.Module.named_modules`` recurses through one generator per module, and every name it
yields climbs back through all of them: on a 255-module network a walk costs more than the
rest of a module table. Every build walks the model several times (tracing, the owners
table), so this walk is iterative and yields the same pairs in the same order.
"""

from __future__ import annotations

from torch import nn


def named_modules(model: nn.Module, remove_duplicate: bool = True) -> list[tuple[str, nn.Module]]:
    """What ``list(model.named_modules(remove_duplicate=...))`` returns, in the same order
    (pre-order; a module reached twice is listed once unless ``remove_duplicate`` is False)."""
    out: list[tuple[str, nn.Module]] = []
    memo: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        prefix, m = stack.pop()
        if remove_duplicate:
            if id(m) in memo:
                continue
            memo.add(id(m))
        out.append((prefix, m))
        children = m._modules
        if children:
            dot = prefix + "." if prefix else ""
            stack.extend([(dot + name, c) for name, c in reversed(children.items())
                          if c is not None])
    return out
