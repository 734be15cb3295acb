"""Save and load a pruned model without pickle: weights in safetensors, the pruning history
in JSON, and the architecture rebuilt by replaying that history on a fresh original model.

    tp.save(model, "pruned/")                       # whichever way it was pruned
    model = tp.load("pruned/", torchvision.models.resnet18)

``load`` calls ``model_factory()`` to build the original (unpruned) model, replays every
recorded plan on it (the exact tensor cuts and attribute updates each plan made: no tracing,
no example inputs), then loads the weights. The result has bit-identical tensors, the same
size attributes (``out_channels``, ``num_heads``, split sizes, ...) and computes the same
output. Nothing is unpickled, so a file from a stranger cannot run code.

Format
------
A directory (any ``path`` not ending in ``.safetensors``) holding two files:

``model.safetensors``
    Every entry of ``model.state_dict()`` (parameters and persistent buffers), by name. A
    tensor reachable under several names (tied weights, a module registered twice) is stored
    once, under its first name; the other names are listed in ``aliases``.
``history.json``
    ``{"format": "prune_explorer.history", "version": 1, "model_class": "pkg.mod.Class",
    "prune_explorer_version": ..., "torch_version": ..., "aliases": {name: stored_name},
    "history": [entry, ...]}``. Each entry is one executed plan, oldest first, as
    ``tp.history_of(model)`` returns it: ``kind`` ("plan" or "prune_model"), ``root``,
    ``side``, ``idxs``, ``params_removed``, ``macs_removed`` and ``actions``::

        {"cuts":   [[tensor_name, dim, [idx, ...]], ...],   # slices removed from a tensor
         "counts": [[module, attr, removed], ...],          # int attributes decreased
         "opaque": [[module, {name: [idx, ...]}], ...],     # black-box layers (MHA, custom)
         "ints":   [[module, attr, old, new], ...],         # Python ints a forward reads
         "sync":   [module, ...]}                           # layers whose sizes to re-derive

A Hugging Face checkpoint directory written by ``prune_pretrained`` (``config.json``,
safetensors shards and their index, in the checkpoint's own key names) loads the same way: its
``history.json`` says ``"weights": "huggingface"``, and the shards are read through the
checkpoint's key mapping (renamings, tied and fused tensors) once the history is replayed.

A path ending in ``.safetensors`` is a single file instead: the same JSON document is stored
in the safetensors header metadata under the key ``prune_explorer``.

Before anything is applied, every action of every entry is checked against the fresh model
(tensor exists, dim in range, indices in range and unique, attributes hold the recorded old
values); after replay every tensor's shape must equal the saved one. Any misfit raises
``HistoryMismatchError`` naming the tensor or module.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Callable

import torch
from torch import nn

from .errors import HistoryMismatchError
from .execution import HISTORY_ATTR, apply_actions, history_of
from .layers import REGISTRY
from .plan import Actions

FORMAT = "prune_explorer.history"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.json"
METADATA_KEY = "prune_explorer"

__all__ = ["save", "load", "replay_history", "validate_history"]


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:  # pragma: no cover - safetensors is a dependency of the cli/test extras
        raise ImportError("tp.save/tp.load need the safetensors package: "
                          "pip install safetensors") from None
    return st


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------------
def _unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """state_dict with every shared tensor stored once, plus alias -> stored name."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_of: dict[int, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if t is None:
            continue
        key = id(t)
        if key in first_of:
            aliases[name] = first_of[key]
            continue
        first_of[key] = name
        tensors[name] = t.detach()
    # distinct tensors that share memory (views of one another) cannot be stored side by side
    # in safetensors: store them as independent copies
    seen_storage: dict[tuple, str] = {}
    for name, t in list(tensors.items()):
        if t.device.type == "meta" or not t.numel():
            tensors[name] = t.contiguous()
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key in seen_storage:
            tensors[name] = t.clone().contiguous()
        else:
            seen_storage[key] = name
            tensors[name] = t.contiguous()
    return tensors, aliases


def _document(model: nn.Module, aliases: dict[str, str]) -> dict:
    from . import __version__
    return {"format": FORMAT, "version": VERSION, "model_class": _qualname(model),
            "prune_explorer_version": __version__, "torch_version": torch.__version__,
            "aliases": aliases, "history": history_of(model)}


def save(model: nn.Module, path: str | os.PathLike) -> str:
    """Write ``model``'s weights (safetensors) and its pruning history (JSON) to ``path``.

    ``path`` is a directory (created if needed; ``model.safetensors`` and ``history.json``
    are written into it), or a file name ending in ``.safetensors`` (one file, the history in
    its header metadata). Returns the path written. The history is the one recorded on the
    model by every executed plan (``DG`` plans, ``prune_model``, the explorer), so nothing
    else is needed. Tensors are copied to the CPU for writing; the model is not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"tp.save expects an nn.Module, got {type(model).__name__}")
    st = _safetensors()
    path = os.fspath(path)
    tensors, aliases = _unique_state(model)
    tensors = {k: v.to("cpu") for k, v in tensors.items()}
    doc = _document(model, aliases)
    text = json.dumps(doc)
    if path.endswith(".safetensors"):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        st.save_file(tensors, path, metadata={METADATA_KEY: text})
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory; tp.save writes a "
                              f"directory (or pass a path ending in .safetensors)")
    os.makedirs(path, exist_ok=True)
    st.save_file(tensors, os.path.join(path, WEIGHTS_FILE),
                 metadata={"format": FORMAT, "history_file": HISTORY_FILE})
    with open(os.path.join(path, HISTORY_FILE), "w") as f:
        json.dump(doc, f, indent=1)
    return path


# ---------------------------------------------------------------------------------------------
# validation and replay
# ---------------------------------------------------------------------------------------------
def _lookup_tensor(model: nn.Module, name: str, where: str) -> torch.Tensor:
    owner, _, attr = name.rpartition(".")
    try:
        m = model.get_submodule(owner) if owner else model
    except AttributeError:
        raise HistoryMismatchError(
            f"{where}: tensor {name!r} does not exist in this model (no module {owner!r}); the "
            f"history was saved from a different architecture — pass the factory of the "
            f"original model") from None
    t = m._parameters.get(attr)
    if t is None:
        t = m._buffers.get(attr)
    if t is None:
        raise HistoryMismatchError(
            f"{where}: tensor {name!r} does not exist in this model ({owner or 'the model'} "
            f"has no parameter or buffer {attr!r}); pass the factory of the original model")
    return t


def _lookup_module(model: nn.Module, name: str, where: str) -> nn.Module:
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        raise HistoryMismatchError(
            f"{where}: module {name!r} does not exist in this model; pass the factory of the "
            f"original model") from None


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _meta_shadow(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors live on the meta device (shapes only, no memory):
    tied tensors stay tied, Python attributes are copied."""
    memo: dict = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) \
            if isinstance(t, nn.Parameter) else meta
    history = model.__dict__.pop(HISTORY_ATTR, None)
    try:
        return copy.deepcopy(model, memo)
    finally:
        if history is not None:
            model.__dict__[HISTORY_ATTR] = history


def _check_entry(shadow: nn.Module, actions: Actions, where: str, registry) -> None:
    """Every action of one entry fits the (shadow) model as it is now."""
    for name, dim, idxs in actions.cuts:
        t = _lookup_tensor(shadow, name, where)
        shape = list(t.shape)
        if not 0 <= dim < len(shape):
            raise HistoryMismatchError(
                f"{where}: tensor {name!r} has shape {shape} here, so it has no dim {dim} "
                f"to cut; the history does not fit this model")
        size = shape[dim]
        bad = [i for i in idxs if not 0 <= i < size]
        if bad:
            raise HistoryMismatchError(
                f"{where}: tensor {name!r} has {size} entries along dim {dim} here, but the "
                f"history removes index {bad[0]}; the history does not fit this model "
                f"(was it saved from a wider variant?)")
        if len(set(idxs)) != len(idxs):
            raise HistoryMismatchError(f"{where}: indices for {name!r} repeat; the file is "
                                       f"damaged")
        if size and len(idxs) >= size:
            raise HistoryMismatchError(
                f"{where}: the history removes all {size} entries of {name!r} along dim "
                f"{dim}; it does not fit this model")
    for mname, attr, removed in actions.counts:
        m = _lookup_module(shadow, mname, where)
        value = getattr(m, attr, None)
        if not isinstance(value, int) or isinstance(value, bool):
            raise HistoryMismatchError(f"{where}: module {mname!r} ({type(m).__name__}) has no "
                                       f"integer attribute {attr!r}; the history does not fit "
                                       f"this model")
        if value - removed < 0:
            raise HistoryMismatchError(f"{where}: {mname}.{attr} is {value} here, the history "
                                       f"removes {removed}")
    for mname, _sets in actions.opaque:
        m = _lookup_module(shadow, mname, where)
        spec = registry.lookup(m)
        if spec is None or spec.prune is None:
            raise HistoryMismatchError(
                f"{where}: module {mname!r} is a {type(m).__name__}, which has no registered "
                f"black-box prune function; the history was saved from a different model, or "
                f"register the custom layer before tp.load")
    for mname, attr, old, _new in actions.ints:
        m = _lookup_module(shadow, mname, where)
        current = getattr(m, attr, _MISSING)
        if current is _MISSING:
            raise HistoryMismatchError(f"{where}: module {mname!r} ({type(m).__name__}) has no "
                                       f"attribute {attr!r}; the history does not fit this "
                                       f"model")
        if not _same(current, old):
            raise HistoryMismatchError(
                f"{where}: {mname or 'the model'}.{attr} is {current!r} here but was {old!r} "
                f"when the history was recorded; the history does not fit this model")
    for mname in actions.sync:
        _lookup_module(shadow, mname, where)


def validate_history(model: nn.Module, history: list[dict], registry=None) -> list[Actions]:
    """Check every entry's actions against ``model`` without changing it: the history is
    replayed on a shadow copy whose tensors live on the meta device (shapes, no data), each
    entry checked before it is applied (tensor exists, dim in range, indices in range and
    unique, attributes hold the recorded old values). Returns the parsed actions; raises
    ``HistoryMismatchError`` naming the first tensor or module that does not fit."""
    registry = registry or REGISTRY
    if not isinstance(history, list):
        raise HistoryMismatchError("the history is not a list of entries; the file is damaged")
    parsed = []
    for k, entry in enumerate(history):
        where = f"history entry {k} (plan rooted at {_root(entry)})"
        try:
            parsed.append(Actions.from_dict(entry["actions"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HistoryMismatchError(f"{where} is malformed ({exc!r}); the file is damaged or "
                                       f"was not written by tp.save") from None
    if not parsed:
        return parsed
    shadow = _meta_shadow(model)
    for k, (entry, actions) in enumerate(zip(history, parsed)):
        where = f"history entry {k} (plan rooted at {_root(entry)})"
        _check_entry(shadow, actions, where, registry)
        try:
            apply_actions(shadow, _typed(shadow, actions), registry)
        except HistoryMismatchError:
            raise
        except Exception as exc:
            raise HistoryMismatchError(f"{where} could not be applied to this model: "
                                       f"{exc}") from exc
    return parsed


def _root(entry) -> str:
    return entry.get("root", "?") if isinstance(entry, dict) else "?"


_MISSING = object()


def replay_history(model: nn.Module, history: list[dict], registry=None) -> nn.Module:
    """Apply a recorded history to an unpruned ``model`` (validated first; see module doc).
    The entries are appended to the model's own history, so it can be saved again."""
    registry = registry or REGISTRY
    if history_of(model):
        raise HistoryMismatchError(
            "the model given to replay already has a pruning history of its own; pass a fresh, "
            "unpruned model (model_factory() must build the original architecture)")
    parsed = validate_history(model, history, registry)
    for k, (entry, actions) in enumerate(zip(history, parsed)):
        try:
            apply_actions(model, _typed(model, actions), registry)
        except Exception as exc:
            raise HistoryMismatchError(
                f"history entry {k} (plan rooted at {entry.get('root', '?')}) could not be "
                f"applied: {exc}") from exc
        model.__dict__.setdefault(HISTORY_ATTR, []).append(json.loads(json.dumps(entry)))
    return model


def _typed(model: nn.Module, actions: Actions) -> Actions:
    """JSON has no tuples: give a recorded list/tuple attribute the type it has on the model."""
    fixed = []
    for mname, attr, old, new in actions.ints:
        current = getattr(_lookup_module(model, mname, "replay"), attr, None)
        if isinstance(new, (list, tuple)) and isinstance(current, (list, tuple)):
            new = type(current)(new)
        fixed.append((mname, attr, old, new))
    return Actions(cuts=actions.cuts, counts=actions.counts, opaque=actions.opaque, ints=fixed,
                   sync=actions.sync)


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
def _read(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    st = _safetensors()
    if path.endswith(".safetensors") and os.path.isfile(path):
        from safetensors import safe_open
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        if METADATA_KEY not in meta:
            raise HistoryMismatchError(f"{path} has no prune_explorer history in its metadata; "
                                       f"it was not written by tp.save")
        doc = json.loads(meta[METADATA_KEY])
        weights = st.load_file(path)
    elif os.path.isdir(path) and _is_pretrained_dir(path):
        with open(os.path.join(path, HISTORY_FILE)) as f:
            doc = json.load(f)
        weights = None  # read after replay, through the checkpoint's key mapping
    elif os.path.isdir(path):
        hist, wts = os.path.join(path, HISTORY_FILE), os.path.join(path, WEIGHTS_FILE)
        for f in (hist, wts):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{f} is missing; tp.load expects a directory written "
                                        f"by tp.save ({WEIGHTS_FILE} and {HISTORY_FILE})")
        with open(hist) as f:
            doc = json.load(f)
        weights = st.load_file(wts)
    else:
        raise FileNotFoundError(f"{path} does not exist (tp.load expects a directory or a "
                                f".safetensors file written by tp.save)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HistoryMismatchError(f"{path}: the history is not a prune_explorer history "
                                   f"(format {doc.get('format') if isinstance(doc, dict) else doc!r})")
    if int(doc.get("version", 0)) > VERSION:
        raise HistoryMismatchError(f"{path} was written by a newer prune_explorer (format "
                                   f"version {doc['version']}); upgrade to load it")
    return doc, weights


def _tied_names(model: nn.Module) -> dict[str, str]:
    from .hf_checkpoint import _canonical_names
    return {n: c for n, c in _canonical_names(model).items() if n != c}


def _is_pretrained_dir(path: str) -> bool:
    """A Hugging Face checkpoint written by ``prune_pretrained`` (its history says so)."""
    hist = os.path.join(path, HISTORY_FILE)
    if not os.path.isfile(hist) or not os.path.isfile(os.path.join(path, "config.json")):
        return False
    try:
        with open(hist) as f:
            return json.load(f).get("weights") == "huggingface"
    except (OSError, ValueError, AttributeError):
        return False


def _pretrained_weights(path: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The module tensors of a pruned Hugging Face checkpoint, for a replayed model."""
    from .hf_checkpoint import Checkpoint
    ck = Checkpoint(path).bind(model)
    return {name: ck.read(name) for name in ck.sources}


def load(path: str | os.PathLike, model_factory: Callable[[], nn.Module] | nn.Module,
         strict: bool = True, registry=None) -> nn.Module:
    """Rebuild a model saved with ``tp.save``.

    ``model_factory()`` must build the original, unpruned model (e.g.
    ``torchvision.models.resnet18``; an unpruned module instance is accepted too). Its
    history is validated against that model, replayed, and the weights are loaded into it;
    the model is returned with its history, so it can be pruned further and saved again.
    Raises ``HistoryMismatchError`` (naming the tensor or module) if the history or the
    weights do not fit the model.
    """
    path = os.fspath(path)
    doc, weights = _read(path)
    model = model_factory if isinstance(model_factory, nn.Module) else model_factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_factory must return an nn.Module, got {type(model).__name__}")
    saved_class = doc.get("model_class")
    try:
        replay_history(model, doc.get("history", []), registry)
    except HistoryMismatchError as exc:
        if saved_class and saved_class != _qualname(model):
            raise HistoryMismatchError(f"{exc} (the file was saved from a {saved_class}; "
                                       f"model_factory built a {_qualname(model)})") from None
        raise
    if weights is None:
        weights = _pretrained_weights(path, model)
        tied = {n: m for n, m in _tied_names(model).items() if m in weights}
        weights.update({n: weights[m] for n, m in tied.items()})
    for alias, stored in doc.get("aliases", {}).items():
        if stored in weights:
            weights[alias] = weights[stored]
    expected = model.state_dict()
    if strict:
        missing = [k for k in expected if k not in weights]
        extra = [k for k in weights if k not in expected]
        if missing or extra:
            what = (f"tensor {missing[0]!r} of the model is not in the file" if missing else
                    f"tensor {extra[0]!r} in the file is not in the model")
            raise HistoryMismatchError(
                f"{path}: {what} ({len(missing)} missing, {len(extra)} unexpected); pass the "
                f"factory of the original model, or strict=False")
    for name, t in weights.items():
        if name in expected and tuple(expected[name].shape) != tuple(t.shape):
            raise HistoryMismatchError(
                f"{path}: after replaying the history, tensor {name!r} has shape "
                f"{list(expected[name].shape)} but the file holds {list(t.shape)}; the history "
                f"does not fit this model")
    model.load_state_dict({k: v for k, v in weights.items() if k in expected}, strict=strict)
    return model
