"""The edited ``config.json`` of a pruned Hugging Face model, found by asking transformers.

Which config fields size which tensors differs between families (``intermediate_size``,
``n_inner``, ``moe_intermediate_size``; ``head_dim`` stored, ``None`` or derived). Instead of a
table per family, each integer field is *probed*: the model is built on fake tensors (no
memory) with that field doubled, and the tensor dims that change, and by what power, are
recorded. The pruned shapes then give a small log-linear system whose solution is the new
value of every field; ``head_pruning`` says whether heads or head_dim absorb an attention
change. The answer is accepted only if a model built from the edited config has exactly the
pruned shapes (and the Python sizes the plan updated); otherwise the error names the first
tensor no config can describe (BERT and GPT-2 derive the attention width from the hidden
size, so whole-head pruning there needs ``uniform=False`` and ``tp.load``).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Callable

import numpy as np

from .errors import PruningError

Shapes = dict[str, tuple[int, ...]]
_SIZE_NAME = re.compile(r"size|dim|head|hidden|inner|embd|embed|ff|width|channels|^n_|num_|"
                        r"intermediate|d_model|d_kv", re.I)
_HEAD_DIM = re.compile(r"head_dim|head_size|d_kv|kv_channels|attention_head_size", re.I)
_HEAD_COUNT = re.compile(r"heads|n_head", re.I)
_OPTIONAL = ("head_dim",)  # read by most decoder families when present, derived otherwise


class ConfigError(PruningError, ValueError):
    """No edit of config.json describes the pruned model."""


def _fields(config) -> dict[str, int | None]:
    d = config.to_dict()
    out = {}
    for k, v in d.items():
        if k.startswith("_") or isinstance(v, bool) or not _SIZE_NAME.search(k):
            continue
        if (isinstance(v, int) and v > 0) or v is None:
            out[k] = v
    for k in _OPTIONAL:
        out.setdefault(k, None)
    return out


def _with(config, **values):
    c = copy.deepcopy(config)
    for k, v in values.items():
        setattr(c, k, v)
    return c


def solve_config(config, target: Shapes, policy: str, build: Callable[[object], Shapes]
                 ) -> dict[str, int]:
    """The config fields to change (name -> new value) so that ``build(config)`` gives
    ``target``; raises ConfigError with the first tensor that cannot be described.

    The probes build a two-layer copy of the config (an 80-layer model takes seconds to
    build even on fake tensors); the answer is then checked on the full config."""
    shallow = _shallow(config)
    if shallow is not None:
        try:
            base = build(shallow)
        except Exception:
            base = None
        if base is not None and all(n in target for n in base):
            edits = _solve(shallow, {n: target[n] for n in base}, policy, build)
            _verify(config, edits, target, build)
            return edits
    return _solve(config, target, policy, build)


def _shallow(config):
    """``config`` with two hidden layers (per-layer lists cut to match), or None."""
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 2:
        return None
    c = copy.deepcopy(config)
    for k, v in list(vars(c).items()):
        if isinstance(v, list) and len(v) == n:
            setattr(c, k, v[:2])
    c.num_hidden_layers = 2
    return c


def _first_mismatch(got: Shapes, target: Shapes):
    """(name, target shape, built shape or None) of the first tensor the build got wrong."""
    return next(((n, s, got.get(n)) for n, s in target.items() if got.get(n) != s), None)


def _verify(config, edits: dict, target: Shapes, build) -> None:
    """The full model built from the edited config has exactly the pruned shapes."""
    got = build(_validated(config, edits))
    bad = _first_mismatch(got, target)
    if bad:
        n, s, have = bad
        raise ConfigError(
            f"the edited config.json ({_describe(edits)}) gives {n} the shape "
            f"{list(have) if have else '(none)'}, the pruned model has {list(s)}: the "
            f"layers are not pruned alike; prune with uniform=False and rebuild with tp.load")


def _solve(config, target: Shapes, policy: str, build) -> dict[str, int]:
    base = build(config)
    changed = {(n, d) for n, s in target.items() for d in range(len(s)) if s[d] != base[n][d]}
    if not changed:
        return {}
    fields = _fields(config)
    values: dict[str, int] = {}
    for name, v in fields.items():
        if v is not None:
            values[name] = v
            continue
        found = _effective_value(config, name, base, changed, values, build)
        if found is not None:
            values[name] = found
    config = _with(config, **{k: v for k, v in values.items() if fields[k] is None})
    effects: dict[str, dict[tuple[str, int], float]] = {}
    for name, v in values.items():
        try:
            probe = build(_with(config, **{name: 2 * v}))
        except Exception:
            continue
        if probe.keys() != base.keys() or any(len(probe[n]) != len(base[n]) for n in base):
            continue  # a structural field (number of layers or experts)
        eff = {(n, d): math.log2(probe[n][d] / base[n][d]) for n in base
               for d in range(len(base[n])) if probe[n][d] != base[n][d] and base[n][d]}
        if eff:
            effects[name] = eff
    frozen = _HEAD_DIM if policy == "heads" else _HEAD_COUNT
    free = [f for f in effects if not frozen.search(f)]
    rows = sorted(changed | {r for e in effects.values() for r in e})
    A = np.array([[effects[f].get(r, 0.0) for f in free] for r in rows]) if free else None
    b = np.array([math.log2(target[n][d] / base[n][d]) for n, d in rows])
    edits: dict[str, int] = {}
    y = np.linalg.lstsq(A, b, rcond=None)[0] if A is not None and A.size else np.zeros(0)
    residual = (A @ y - b) if A is not None and A.size else b
    worst = int(np.argmax(np.abs(residual))) if len(residual) else 0
    if len(residual) and abs(residual[worst]) > 1e-6:
        n, d = rows[worst]
        raise ConfigError(f"no edit of config.json gives the pruned {n} (dim {d}: "
                          f"{base[n][d]} -> {target[n][d]}): "
                          f"{_why(n, target[n], base[n], changed, effects)}")
    for f, yf in zip(free, y):
        exact = values[f] * 2.0 ** yf
        new = int(round(exact))
        if abs(exact - new) > 1e-6:
            raise ConfigError(f"the pruned sizes need {f} = {exact:g}, not a whole number; "
                              f"prune with uniform=False and rebuild with tp.load")
        if new != values[f]:
            edits[f] = new
    for name in values:
        if fields[name] is None and name not in edits:
            edits[name] = values[name]  # derived before; stated explicitly from now on
    edited = _validated(config, edits)
    try:
        got = build(edited)
    except Exception as exc:
        raise ConfigError(f"config.json edited as {edits} does not build: {exc}") from None
    bad = _first_mismatch(got, target)
    if bad:
        n, s, have = bad
        raise ConfigError(
            f"no edit of config.json gives the pruned {n} shape {list(s)} (the closest, "
            f"{_describe(edits)}, gives {list(have) if have else 'no such tensor'}): "
            f"{_why(n, s, base[n], changed, effects)}")
    # fields that were None and are still derivable to the same value need not be written
    return {k: v for k, v in edits.items() if fields[k] is not None or v != values[k]
            or _matters(config, k, v, build, got)}


def _validated(config, edits: dict):
    """The edited config as ``from_pretrained`` would make it (with transformers' checks)."""
    try:
        return type(config).from_dict({**config.to_dict(), **edits})
    except Exception as exc:
        cause = exc.__cause__ or exc
        msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        raise ConfigError(
            f"the pruned sizes need {_describe(edits)}, which transformers' "
            f"{type(config).__name__} refuses ({msg}); pick an amount that keeps it valid "
            f"(e.g. a number of heads that divides hidden_size), or prune with uniform=False "
            f"and rebuild with tp.load") from None


def _matters(config, name, value, build, expected) -> bool:
    """Keep a formerly derived field (head_dim) only if dropping it changes the model."""
    try:
        return build(_with(config, **{name: None})) != expected
    except Exception:
        return True


def _effective_value(config, name, base, changed, values, build) -> int | None:
    """The value a None/absent size field takes by default, found among the sizes and size
    ratios of the dims the plan changes (``head_dim`` = q width / number of heads)."""
    sizes = sorted({base[n][d] for n, d in changed})
    cands = list(sizes)
    for s in sizes:
        cands += [s // v for v in values.values() if v and s % v == 0 and v > 1]
    seen = set()
    for c in cands:
        if c in seen or c < 1:
            continue
        seen.add(c)
        if len(seen) > 24:
            break
        try:
            if build(_with(config, **{name: c})) == base:
                return c
        except Exception:
            continue
    return None


def _describe(edits: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in edits.items()) or "no change"


def _why(name, want, have, changed, effects) -> str:
    dims = [d for d in range(len(want)) if want[d] != have[d]]
    movers = [f for f, e in effects.items() if any((name, d) in e for d in dims)]
    if not movers:
        return (f"no config field sizes dim {dims[0] if dims else '?'} of {name} on its own "
                f"(this model derives it from other sizes); prune with uniform=False and "
                f"rebuild with tp.load, or keep those channels")
    kept = [f for f in movers if any(r not in changed for r in effects[f])]
    if len(kept) == len(movers):
        also = "they also size" if len(movers) > 1 else "it also sizes"
        return (f"only {', '.join(movers)} sizes it, and {also} tensors the plan keeps "
                f"(this architecture derives the width from it); "
                f"prune with uniform=False and rebuild with tp.load")
    return (f"the fields that size it ({', '.join(movers)}) are shared with tensors pruned "
            f"differently (layers pruned unevenly, or heads and head_dim both cut); prune with "
            f"uniform=False and rebuild with tp.load")
