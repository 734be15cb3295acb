"""Which op rules a masked-twin check actually exercised.

``install()`` wraps every rule of ``op_rules`` so that the relations it declares in a dim graph
are tagged with the rule's name; ``record(plan)`` then adds the rules whose relations touch a
pruned dim of the plan (so the channels really flowed through them). ``tests/oracle.py`` and
the fuzzer record every plan they check (into ``$PE_RULE_COVERAGE_OUT`` when set);
``tests/test_rule_coverage.py`` compares the result with the rule table. A rule is a distinct behaviour of the table (aliases such as ``view`` and
``reshape`` share one function, the 2-d pooling ops one ``_leading(2)``), named by its first
key.
"""

from __future__ import annotations

import json
import os

from prune_explorer import op_rules
from prune_explorer.dimgraph import AbsorbRel, BlockRel, MapRel

EXERCISED: set[str] = set()
_INSTALLED = False


def _identity(fn):
    """Rules made by one factory call (``_leading(2)`` for every 2-d pooling op) behave alike:
    they are one rule, told apart by their code and the values they close over."""
    fn = getattr(fn, "_pe_inner", fn)
    cells = tuple(c.cell_contents for c in (fn.__closure__ or ()))
    try:
        hash(cells)
    except TypeError:
        cells = id(fn)
    return (fn.__code__, cells)


def rule_names() -> dict:
    """rule identity -> name (its first key in the table; the pointwise fallback)."""
    names = {_identity(op_rules._elementwise): "_elementwise (pointwise ops)"}
    for key, fn in op_rules.RULES.items():
        names.setdefault(_identity(fn), key)
    return names


# rules of ops this PyTorch never dispatches on CPU (the Python call decomposes before the
# dispatch mode sees it); tests/test_ops_rules.py checks that this is still true
NEVER_DISPATCHED = {"prelu", "repeat_interleave"}


def all_rules() -> set[str]:
    """Every rule that some model can exercise."""
    return set(rule_names().values()) - NEVER_DISPATCHED


def _tagged(fn, name: str):
    def rule(ctx):
        dg = ctx.b
        start = len(dg.rels)
        try:
            fn(ctx)
        finally:
            tags = dg.__dict__.setdefault("_rule_of", {})
            for i in range(start, len(dg.rels)):
                tags.setdefault(i, name)
    rule._pe_inner = fn
    return rule


def install() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    names = rule_names()
    for key, fn in list(op_rules.RULES.items()):
        op_rules.RULES[key] = _tagged(fn, names[_identity(fn)])
    op_rules._elementwise = _tagged(op_rules._elementwise,
                                    names[_identity(op_rules._elementwise)])
    _INSTALLED = True


def record(plan) -> None:
    cl = getattr(plan, "_closure", None)
    if cl is None:
        return
    dg = cl.dg
    tags = dg.__dict__.get("_rule_of")
    if not tags:
        return
    touched = {v for v in cl.order if cl.count(v)}
    for ri, rel in enumerate(dg.rels):
        if isinstance(rel, MapRel):
            ends = (rel.a, rel.b)
        elif isinstance(rel, BlockRel):
            ends = (*rel.left, *rel.right)
        elif isinstance(rel, AbsorbRel):
            ends = (rel.v,)
        else:
            continue
        if any(v in touched for v in ends) and ri in tags:
            EXERCISED.add(tags[ri])
    out = os.environ.get("PE_RULE_COVERAGE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(sorted(EXERCISED), f)
