"""Executing a plan: cut tensors, update size attributes, and undo everything on failure.

``Snapshot`` keeps the old tensors (exec swaps ``.data``, never copies the model), so restoring
is exact and cheap. The executed plan's actions are appended to the model's history, which
travels with the model (``tp.save`` writes it; ``tp.load`` replays it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .plan import Actions, PruningPlan
from .pruners import keep_index, prune_tensor, sync_layer
from .module_state import cache_dicts
from .module_walk import named_modules

if TYPE_CHECKING:  # pragma: no cover
    from .traced_view import TracedView
    from .layers import LayerRegistry

HISTORY_ATTR = "_prune_explorer_history"


class _Modules:
    """name -> module of one model, built once (``get_submodule`` walks the path each call)."""

    def __init__(self, model: nn.Module, by_name: dict[str, nn.Module] | None = None):
        self.model = model
        self._by_name = by_name

    def module(self, name: str) -> nn.Module:
        if self._by_name is None:
            self._by_name = dict(named_modules(self.model, remove_duplicate=False))
        m = self._by_name.get(name)
        return m if m is not None else self.model.get_submodule(name)

    def tensor(self, name: str) -> torch.Tensor:
        owner, _, attr = name.rpartition(".")
        m = self.module(owner)
        t = m._parameters.get(attr)
        if t is None:
            t = m._buffers.get(attr)
        if t is None:
            raise KeyError(f"{name} is not a parameter or buffer of the model")
        return t


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    return _Modules(model).tensor(name)


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def _owner_of(obj, attr: str):
    """``("config.hidden_size")`` -> (module.config, "hidden_size")."""
    *path, name = attr.split(".")
    for p in path:
        obj = getattr(obj, p)
    return obj, name


class Snapshot:
    """Everything ``apply_actions`` may change, kept so that ``restore`` undoes it exactly."""

    def __init__(self, model: nn.Module, actions: Actions, dgraph: "TracedView | None" = None,
                 modules: dict[str, nn.Module] | None = None):
        self.model = model
        self.tensors = []
        seen = set()
        mods = _Modules(model, modules)
        for name, _dim, _idx in actions.cuts:
            t = mods.tensor(name)
            if id(t) not in seen:
                seen.add(id(t))
                self.tensors.append((t, t.data, t.grad if isinstance(t, nn.Parameter) else None))
        for mname, _s in actions.opaque:
            m = mods.module(mname)
            for t in list(m.parameters()) + list(m.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    self.tensors.append((t, t.data, t.grad if isinstance(t, nn.Parameter) else None))
        self.dotted = []  # (object, attr, value) for updates reaching past a module (config.x)
        for mname, attr, _old, _new in actions.ints:
            obj, name = _owner_of(mods.module(mname), attr)
            self.dotted.append((obj, name, getattr(obj, name)))
        # sync and counts set size attributes of the layer itself; an opaque layer's own prune
        # code may touch anything below it
        own = set(actions.sync) | {m for m, _a, _n in actions.counts}
        whole = {m for m, _s in actions.opaque}
        self.attrs = []
        done = set()
        for mname in list(own) + list(whole):
            m = mods.module(mname)
            for sub in (m.modules() if mname in whole else (m,)):
                if id(sub) in done:
                    continue
                done.add(id(sub))
                state = {k: v for k, v in sub.__dict__.items() if k[0] != "_"}
                self.attrs.append((sub, state, dict(sub._parameters), dict(sub._buffers)))

    def restore(self) -> None:
        for obj, name, value in self.dotted:
            setattr(obj, name, value)
        for t, data, grad in self.tensors:
            t.data = data
            if isinstance(t, nn.Parameter):
                t.grad = grad
        for sub, state, params, buffers in self.attrs:
            for k in [k for k in sub.__dict__ if not k.startswith("_") and k not in state]:
                del sub.__dict__[k]
            sub.__dict__.update(state)
            sub._parameters.clear()
            sub._parameters.update(params)
            sub._buffers.clear()
            sub._buffers.update(buffers)


def apply_actions(model: nn.Module, actions: Actions, registry: "LayerRegistry",
                  modules: dict[str, nn.Module] | None = None) -> None:
    """Perform a plan's actions on ``model`` (no validation, no rollback: see ``execute``).
    ``modules``: name -> module of ``model`` when the caller has that table."""
    mods = _Modules(model, modules)
    kept: dict[tuple, torch.Tensor] = {}  # a conv's rows, its norm's four vectors: one index
    for name, dim, idxs in actions.cuts:
        t = mods.tensor(name)
        key = (t.shape[dim], t.device, tuple(idxs))
        keep = kept.get(key)
        if keep is None:
            keep = kept[key] = keep_index(t.shape[dim], idxs, t.device)
        prune_tensor(t, dim, idxs, keep)
    for mname, attr, removed in actions.counts:
        m = mods.module(mname)
        setattr(m, attr, getattr(m, attr) - removed)
    for mname, sets in actions.opaque:
        m = mods.module(mname)
        spec = registry.lookup(m)
        spec.prune(m, sets, False)
    for mname, attr, _old, new in actions.ints:
        obj, name = _owner_of(mods.module(mname), attr)
        setattr(obj, name, new)
    for mname in actions.sync:
        sync_layer(mods.module(mname))
    for cache in cache_dicts(model if modules is None else modules.items()):
        # cached tensors have the old shapes
        cache.clear()


def record_history(model: nn.Module, plan: PruningPlan, kind: str = "plan") -> None:
    history = model.__dict__.setdefault(HISTORY_ATTR, [])
    history.append({"kind": kind, "root": plan.root, "side": plan.side,
                    "idxs": [int(i) for i in plan.idxs][:4096],
                    "params_removed": int(plan.params_removed),
                    "macs_removed": int(plan.macs_removed),
                    "actions": plan.actions.to_dict()})


def history_of(model: nn.Module) -> list[dict]:
    """The executed plans of this model, oldest first (plain JSON-able dicts)."""
    return list(model.__dict__.get(HISTORY_ATTR, []))
