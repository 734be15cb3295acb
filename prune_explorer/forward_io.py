"""Around one forward of a model: its example inputs, the tensors in what it returns, the
fingerprint of its tensors, and the state a forward may change, kept and put back.

Tracing (``tracing.py``) and the check after exec (``verify.py``) both run the model on its
example inputs and must leave it as they found it; this is what they share.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import TracingError
from .module_state import restore_python_state, save_python_state


def normalize_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """A tensor, a tuple/list of positional args, or a dict of keyword args -> (args, kwargs)."""
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def iter_tensors(obj: Any, _depth: int = 0):
    """Tensors inside nested tuples/lists/dicts/dataclasses (HF ModelOutput is a dict)."""
    if _depth > 8:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_tensors(v, _depth + 1)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from iter_tensors(v, _depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from iter_tensors(getattr(obj, f.name, None), _depth + 1)


def describe_inputs(example_inputs: Any) -> str:
    args, kwargs = normalize_inputs(example_inputs)

    def one(x):
        if isinstance(x, torch.Tensor):
            return f"Tensor({str(x.dtype).replace('torch.', '')}, {list(x.shape)}, {x.device})"
        return type(x).__name__

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) or "nothing"


def model_fingerprint(model: nn.Module, modules=None) -> tuple:
    """Shapes of every parameter and buffer: cheap, and changes whenever a layer is resized."""
    seen: set[int] = set()
    out = []
    for mname, m in (modules if modules is not None else model.named_modules()):
        prefix = mname + "." if mname else ""
        for n, t in itertools.chain(m._parameters.items(), m._buffers.items()):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append((prefix + n, tuple(t.shape)))
    return tuple(out)


@contextmanager
def gc_paused():
    """Tracing, planning and exec allocate thousands of small acyclic records that die by
    reference counting: the cyclic collector would only scan them (and the whole graph)
    midway, so it waits until the work is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def without_gc(fn):
    """Decorator: run a public entry point with the cyclic collector paused."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with gc_paused():
            return fn(*args, **kwargs)
    return wrapped


class KeptState:
    """What ``kept_state`` found: ``python_changed`` says, after the forward, whether it wrote
    any module's Python state (None while it runs, and when that was not watched)."""

    python_changed: bool | None = None


class BufferGuard:
    """The buffers of the modules a forward runs, put back as they were after it: the same
    tensor objects in ``_buffers``, on their own storage, with their values. ``snapshot``
    copies the values; ``kept_state`` calls it before a real forward, and in a shape-only one
    only before an op that really writes (placeholders never do: ``Run.before_write``). Identity
    and storage are held from the start (a forward may assign ``self.buf = ...`` or
    ``buf.data = ...``)."""

    def __init__(self, modules):
        self.held = [(m._buffers, attr, b, b.data) for _name, m in modules
                     for attr, b in m._buffers.items() if b is not None]
        self.copies: list | None = None

    def snapshot(self) -> None:
        if self.copies is None:
            self.copies = [data.clone() for _d, _a, _b, data in self.held]

    def restore(self) -> None:
        copies = self.copies
        for i, (d, attr, b, data) in enumerate(self.held):
            if d.get(attr) is not b:
                d[attr] = b
            # back onto its own storage, shape and strides: a no-op unless the forward
            # assigned ``.data`` (cheaper than finding out, and no data pointer is read,
            # which a fake tensor of a weight-free trace refuses)
            b.data = data
            if copies is not None:
                data.copy_(copies[i])


@contextmanager
def kept_state(model: nn.Module, modules, python_state: bool = True, shape_only_run=None):
    """Whatever a forward changes is put back afterwards: buffers (BatchNorm statistics),
    the RNG state, and the modules' Python state (``module_state``: a cache with its key).
    ``python_state=False`` leaves the Python state alone: for a forward whose trace showed
    that the model's code writes none (the check after exec). ``shape_only_run``: the
    ``shape_only.Run`` of a shape-only forward, whose placeholders never write: the buffers
    are copied only before one of its ops that really writes (``Run.before_write``), not
    before the forward."""
    buffers = BufferGuard(modules)
    if shape_only_run is not None:
        shape_only_run.before_write = buffers.snapshot
    else:
        buffers.snapshot()
    saved_state = save_python_state(modules) if python_state else None
    rng = torch.get_rng_state()
    kept = KeptState()
    try:
        yield kept
    finally:
        torch.set_rng_state(rng)
        buffers.restore()
        if shape_only_run is not None:
            shape_only_run.before_write = None  # the guard (and its buffer aliases) can go
        if saved_state is not None:
            kept.python_changed = restore_python_state(saved_state)


def _check_devices(model, args, kwargs, example_inputs) -> None:
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    if p is None:
        return
    for t in iter_tensors((args, kwargs)):
        if t.device != p.device:
            raise TracingError(
                f"example inputs are on {t.device} but the model's parameters are on {p.device}; "
                f"move them with `example_inputs.to({str(p.device)!r})` "
                f"(got {describe_inputs(example_inputs)}).")


def tracing_message(model, where: str, exc: BaseException, example_inputs) -> str:
    hint = ""
    try:
        m = model.get_submodule(where) if where and where != "the model's forward" else None
    except AttributeError:
        m = None
    if m is not None:
        from .layers import REGISTRY  # local import: layers imports nothing from here
        expect = REGISTRY.describe_expected_input(m)
        if expect:
            hint = f" {where} ({type(m).__name__}) expects {expect}."
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"running the model on the example inputs failed in {where}: {first}.{hint} "
            f"The example inputs were {describe_inputs(example_inputs)}; pass inputs the model "
            f"accepts (the same you would give model(...)).")
