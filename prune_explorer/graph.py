"""The traced graph: plain, frozen data that every later stage reads.

A ``Graph`` has *values* (tensors, with their shapes) and *nodes* (layers and ops). Each node
keeps the ATen calls it was made of, with tensor arguments replaced by ``Ref`` (a value id), so
index mapping, metrics and rendering never need the model or autograd again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator

# Value kinds
ACTIVATION = "activation"
INPUT = "input"
PARAM = "param"
BUFFER = "buffer"
CONSTANT = "constant"

# Node kinds
NODE_INPUT = "input"
NODE_LAYER = "layer"  # a module that owns parameters (conv1, bn1, ...)
NODE_OP = "op"  # an op or a parameter-free module (relu, add, flatten, ...)
NODE_OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class Ref:
    """A tensor argument of a recorded call: the id of the value it was."""

    value: int


@dataclass(frozen=True, slots=True)
class Value:
    id: int
    shape: tuple[int, ...]
    dtype: str
    kind: str = ACTIVATION
    name: str | None = None  # qualified name for params, buffers and inputs
    producer: str | None = None  # node id of the producer (activations)

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True, slots=True)
class Call:
    """One ATen op as it ran: ``op`` is e.g. ``"aten.view.default"``."""

    op: str
    args: tuple
    kwargs: dict
    outputs: tuple  # value ids (or None for non-tensor outputs), flattened
    macs: int = 0
    # the Python-level torch call this op ran under: its name, the int arguments it was given
    # (view(B, -1, 64) -> (B, -1, 64)) and, per int, (value, dim, num, den) when the int was
    # read from a tensor's shape. None: no Python call recorded it (internal to a kernel).
    py: tuple | None = None

    @property
    def py_fn(self) -> str | None:
        return self.py[0] if self.py else None

    @property
    def py_ints(self) -> tuple:
        return self.py[1] if self.py else ()

    @property
    def int_sources(self) -> tuple:
        return self.py[2] if self.py else ()

    @property
    def packet(self) -> str:
        """``aten.view.default`` -> ``view`` (read for every call by every stage: each op
        name is split once per process)."""
        packet = _PACKETS.get(self.op)
        if packet is None:
            parts = self.op.split(".")
            packet = _PACKETS[self.op] = parts[1] if len(parts) > 1 else parts[0]
        return packet

    def tensor_args(self) -> Iterator[int]:
        yield from _refs(self.args)
        yield from _refs(tuple(self.kwargs.values()))


_PACKETS: dict[str, str] = {}


def _refs(obj: Any) -> Iterator[int]:
    if isinstance(obj, Ref):
        yield obj.value
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _refs(item)


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    kind: str
    type: str  # "Conv2d", "add", "ReLU", ...
    scope: str  # qualified name of the enclosing module ("" for the model itself)
    module: str | None = None  # qualified module name, for module nodes
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    calls: tuple[Call, ...] = ()
    opaque: bool = False  # relations come from the layer registry, not from ATen calls
    call_index: int = 0  # > 0 when a module is called more than once
    arg_names: tuple[str, ...] = ()  # opaque nodes: the argument each input was ("arg0", "key")
    py_ints: tuple = ()  # op nodes: the int arguments of the Python call (view(B, -1, 64))
    int_sources: tuple = ()  # per py_int: (value, dim, num, den) when read from a tensor shape

    @property
    def label(self) -> str:
        return self.id


def positional_maker(cls):
    """``make(*every_field)``: an instance of the frozen, slotted dataclass ``cls``, every
    field given in order. A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; setting the slots directly costs half as much, which counts for
    the records a trace makes per op. Generated once per class, as dataclasses generate
    ``__init__``."""
    names = [f.name for f in fields(cls)]
    env = {"new": object.__new__, "cls": cls}
    env.update({f"set_{n}": getattr(cls, n).__set__ for n in names})
    body = "".join(f"    set_{n}(o, {n})\n" for n in names)
    exec(f"def make({', '.join(names)}):\n    o = new(cls)\n{body}    return o\n", env)
    return env["make"]


new_value = positional_maker(Value)
new_call = positional_maker(Call)
new_node = positional_maker(Node)


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: dict[str, Node]
    values: dict[int, Value]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    module_nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # module -> node ids
    param_values: dict[str, int] = field(default_factory=dict)  # param/buffer name -> value id
    uncalled_modules: tuple[str, ...] = ()
    fingerprint: tuple = ()
    primary_outputs: tuple[int, ...] | None = None  # outputs whose shape must be kept
    shape_reads: frozenset = frozenset()  # (value, dim) whose size the Python code read
    output_paths: dict[int, str] = field(default_factory=dict)  # output value -> "output[1]"
    # (module, value, dim, num, den): the module's code found size(value, dim) * num / den
    # equal to a plain int (``assert x.shape[1] == self.channels``)
    shape_checks: tuple = ()
    # the traced forward wrote modules' Python state (a cache and its key, ``self.last_x``):
    # a later forward (the check after exec) must save and restore it too
    writes_state: bool = True
    # derived data computed on first use (value shapes, MACs per node); never compared
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def shapes(self) -> dict[int, tuple[int, ...]]:
        """value id -> shape (computed once)."""
        out = self.memo.get("shapes")
        if out is None:
            out = self.memo["shapes"] = {vid: v.shape for vid, v in self.values.items()}
        return out

    @property
    def fixed_outputs(self) -> tuple[int, ...]:
        return self.outputs if self.primary_outputs is None else self.primary_outputs

    def consumers(self) -> dict[int, list[str]]:
        """value id -> node ids that read it (computed on demand)."""
        out: dict[int, list[str]] = {}
        for node in self.nodes.values():
            for v in node.inputs:
                out.setdefault(v, []).append(node.id)
        return out

    def layer_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == NODE_LAYER]

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for n in self.nodes.values():
            kinds[n.kind] = kinds.get(n.kind, 0) + 1
        parts = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
        return f"Graph({parts}, values={len(self.values)})"
