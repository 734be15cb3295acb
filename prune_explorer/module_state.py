"""The Python state of a model's modules, saved before a trace and put back after it.

A forward may write Python state as well as tensors: Ultralytics' ``Detect`` keeps its anchors
in ``self.anchors``, keyed by ``self.shape``; TinyViT a dict of bias tensors; other layers
create a buffer on first use or remember ``self.last_attn``. A trace must leave all of it as it
found it, *consistently*: a cache together with its key. Saving only the tensors and not the
key would leave a model that never ran with the key of the traced input and the empty anchors
of a fresh one, and its next forward fails.

So every module attribute outside ``nn.Module``'s own bookkeeping is saved by identity (the
contents of plain dicts, lists and sets too, shallowly), and so are the buffer slots; the
restore puts every changed attribute back, removes the attributes and buffers the trace added,
and refills containers it changed. Dicts named like a cache (``attention_bias_cache``) are
emptied while tracing, so the trace records how their tensors are computed (their key is the
dict itself, emptied with them); ``cache_dicts`` lets exec empty them again, so a pruned model
never reuses a tensor of the old shape.
"""

from __future__ import annotations

from operator import is_

from torch import nn

from .module_walk import named_modules

_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # _parameters, _buffers, hooks, training
_CONTAINERS = (dict, list, set)


def is_cache(attr: str, val) -> bool:
    return isinstance(val, dict) and "cache" in attr.lower()


def cache_dicts(model_or_modules) -> list[dict]:
    """Dict attributes named like a cache (TinyViT's ``attention_bias_cache``, filled by the
    first eval forward with tensors derived from parameters). Tracing empties them, so it
    records how their tensors are computed; exec empties them, so a pruned model never
    reuses a tensor of the old shape."""
    modules = named_modules(model_or_modules) if isinstance(model_or_modules, nn.Module) \
        else model_or_modules
    found = []
    for _name, m in modules:
        d = m.__dict__
        try:
            if "cache" not in "|".join(d).lower():  # one C search over the names
                continue
        except TypeError:  # a name that is not a string: look at each
            pass
        found.extend(val for attr, val in d.items() if isinstance(val, dict) and val and
                     "cache" in attr.lower() and attr not in _MODULE_INTERNALS)
    return found


def _copy(val):
    t = type(val)
    return dict(val) if t is dict else list(val) if t is list else set(val)


def _same(val, content) -> bool:
    t = type(val)
    if t is set:
        return val == content
    if len(val) != len(content):
        return False
    if t is dict:
        return val.keys() == content.keys() and all(val[k] is content[k] for k in content)
    return all(a is b for a, b in zip(val, content))


def runs_torch_forward(module: nn.Module) -> bool:
    """Does the layer run a forward defined by torch itself (not a subclass's, nor one set
    on the instance)?"""
    return "forward" not in module.__dict__ and getattr(
        type(module).forward, "__module__", "").startswith("torch.nn.")


def _plain(m: nn.Module) -> bool:
    """A torch layer with torch's own forward, no children and no hooks of its own: its
    forward writes no Python state (a hook, ``self.last = out``, would)."""
    return not m._modules and runs_torch_forward(m) and not (
        m._forward_hooks or m._forward_pre_hooks)


def save_python_state(modules) -> list:
    """Snapshot every module's Python attributes and buffer slots; empty cache dicts.

    Each module's ``__dict__`` is copied whole (in C) and compared by identity on restore,
    so an unchanged module costs two C calls. Container attributes (dicts, lists, sets)
    also get their contents copied, except in a plain torch layer (``_plain``), whose
    forward never fills one."""
    saved = []
    caches = []
    internals = _MODULE_INTERNALS
    for _name, m in modules:
        d = m.__dict__
        if _plain(m):
            saved.append((m, d.copy(), None, dict(m._buffers), None))
            continue
        contents = {}
        for k in d.keys() - internals:  # one C set operation: most keys are nn.Module's own
            v = d[k]
            if type(v) in _CONTAINERS:
                contents[k] = _copy(v)
                if type(v) is dict and v and is_cache(k, v):
                    caches.append(v)
        saved.append((m, d.copy(), contents, dict(m._buffers),
                      set(m._non_persistent_buffers_set)))
    for cache in caches:
        cache.clear()
    return saved


def _equal(now: dict, before: dict) -> bool:
    try:
        return bool(now == before)
    except Exception:  # a value whose == gives no bool (a tensor put in place of another)
        return False


def _identical(now: dict, before: dict) -> bool:
    """Same keys holding the same objects (buffer slots: a new tensor of equal values is a
    change; ``==`` only where all are identical, which never calls a tensor's ``__eq__``)."""
    return len(now) == len(before) and all(map(is_, now.values(), before.values())) and \
        now.keys() == before.keys()


def restore_python_state(saved) -> bool:
    """Put back what ``save_python_state`` saw: changed attributes, added attributes and
    buffers removed, container contents refilled (buffer *values* are restored separately).
    Returns whether the forward had changed any of it.

    An attribute replaced by an *equal* value (``self.shape = x.shape`` of the same input)
    counts as unchanged: the dicts are compared with ``==``, which is one C call that takes
    identical values as equal without calling their ``__eq__`` (5-8x cheaper than comparing
    keys and identities, and most modules are unchanged)."""
    internals = _MODULE_INTERNALS
    changed = False
    for m, attrs, contents, buffers, non_persistent in saved:
        d = m.__dict__
        if not _equal(d, attrs):
            changed = True
            for k in [k for k in d if k not in attrs and k not in internals]:
                del d[k]  # added by the trace (``self.last_attn = attn``)
            for k, v in attrs.items():
                if k not in internals and d.get(k, d) is not v:
                    d[k] = v
        for k, content in (contents or {}).items():
            val = attrs[k]
            if not _same(val, content):
                changed = True
                val.clear()
                if type(val) is list:
                    val.extend(content)
                else:
                    val.update(content)
        b = m._buffers
        if not _identical(b, buffers):
            changed = True
            b.clear()
            b.update(buffers)
        if non_persistent is not None and m._non_persistent_buffers_set != non_persistent:
            changed = True
            m._non_persistent_buffers_set.clear()
            m._non_persistent_buffers_set.update(non_persistent)
    return changed
