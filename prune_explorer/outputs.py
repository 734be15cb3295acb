"""Which of a model's outputs must keep their shape, and how each one is named.

A model often returns more than its answer: a YOLO head in eval mode returns its predictions
*and* the raw pyramid features its loss reads, a Hugging Face model its hidden states. An
output whose shape is kept pins every channel coupled to it, so the user says which outputs
are the answer with ``fixed_outputs``:

- ``"primary"`` (default): every tensor of a tensor / tuple / list output; of a dict or
  dataclass output (a ``ModelOutput``) only the first entry holding tensors (``logits``);
- ``"all"``: every tensor the model returns;
- a callable, ``output -> the part to keep`` (``lambda out: out[0]``), like Torch-Pruning's
  ``output_transform``: it must return tensors the model returned, as they are.

Each output tensor is named by its path (``output[1]['feats'][0]``), so a group an output pins
says which one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import torch

FixedOutputs = str | Callable[[Any], Any]


def tensor_paths(obj: Any, path: str = "output", _depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor inside nested tuples/lists/dicts/dataclasses."""
    if _depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensor_paths(v, f"{path}[{k!r}]", _depth + 1)
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            yield from tensor_paths(v, f"{path}[{i}]", _depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from tensor_paths(getattr(obj, f.name, None), f"{path}.{f.name}", _depth + 1)


def _primary(output: Any) -> list[torch.Tensor]:
    if isinstance(output, dict):
        entries = list(output.values())
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        entries = [getattr(output, f.name, None) for f in dataclasses.fields(output)]
    else:
        return [t for _p, t in tensor_paths(output)]
    for v in entries:
        found = [t for _p, t in tensor_paths(v)]
        if found:
            return found
    return []


def fixed_tensors(output: Any, fixed_outputs: FixedOutputs) -> list[torch.Tensor]:
    """The output tensors whose shape a pruned model must keep (see the module docstring)."""
    if callable(fixed_outputs):
        kept = [t for _p, t in tensor_paths(fixed_outputs(output))]
        returned = {id(t) for _p, t in tensor_paths(output)}
        strays = [t for t in kept if id(t) not in returned]
        if strays:
            raise TypeError(
                f"fixed_outputs returned a tensor of shape {list(strays[0].shape)} that is not "
                f"one of the model's outputs; return parts of the output as they are "
                f"(e.g. lambda out: out[0] or lambda out: out['logits']), not new tensors")
        return kept
    if fixed_outputs == "all":
        return [t for _p, t in tensor_paths(output)]
    if fixed_outputs == "primary":
        return _primary(output)
    raise TypeError(f"fixed_outputs must be 'primary', 'all' or a callable output -> the "
                    f"outputs to keep, got {fixed_outputs!r}")
