"""The package is layered one way: algorithms take a ``TracedView`` and never import a facade.

A lower module that imports ``dependency`` back (even under TYPE_CHECKING, "just for the
annotation") couples its reading and testing to the whole facade; this test fails on the first
such import, and on a facade that stops satisfying the contract the algorithms are written
against.
"""

from __future__ import annotations

import ast
import pathlib

import torch
from torch import nn

import prune_explorer as tp
from prune_explorer.traced_view import TracedView

PKG = pathlib.Path(tp.__file__).parent

# modules that implement the facade (or sit above it): nothing below may import them
FACADES = {"dependency", "whole_model", "pretrained", "cli", "widget", "viz"}
# the algorithms and data below the facade
LOWER = ["graph", "dimgraph", "index_mapping", "propagation", "op_rules", "layers", "pruners",
         "traced_view", "groups", "plan", "plan_builder", "execution", "explain", "metrics",
         "graph_update", "verify", "request", "select", "strategy", "cost_data", "group_data",
         "attributes", "couplings", "module_state", "outputs", "shape_only", "tracing",
         "leaf_shapes", "module_walk", "recorder", "forward_io", "op_rules_shapes",
         "op_rules_layers"]


def _imports(path: pathlib.Path) -> set[str]:
    """Every package module ``path`` imports (relative or absolute), at any depth."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and not mod.startswith("prune_explorer"):
                continue
            mod = mod.removeprefix("prune_explorer").lstrip(".")
            if mod:
                out.add(mod.split(".")[0])
            else:  # from . import x, y
                out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names
                       if a.name.startswith("prune_explorer."))
            if any(a.name == "prune_explorer" for a in node.names):
                out.add("__init__")
    return out


def test_lower_modules_never_import_a_facade():
    bad = {}
    for name in LOWER:
        path = PKG / f"{name}.py"
        assert path.exists(), f"{name}.py moved: update LOWER"
        hits = _imports(path) & (FACADES | {"__init__"})
        if hits:
            bad[name] = sorted(hits)
    assert not bad, f"lower modules import a facade (take a TracedView instead): {bad}"


def test_the_import_scan_sees_type_checking_imports(tmp_path):
    # the scan itself: an annotation-only import of the facade counts
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from .dependency import DependencyGraph\nfrom . import plan, viz\n")
    assert _imports(f) == {"dependency", "plan", "viz"}


def test_facades_satisfy_the_contract():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    assert isinstance(DG, TracedView)
    members = {m for m in vars(TracedView) if not m.startswith("_")}
    missing = {m for m in members if not hasattr(DG, m)}
    assert not missing
    # the lookups the algorithms rely on, on a model where the answers are known
    assert DG.owners_of("0.weight") == [("0", "weight")]
    assert DG.prunes_itself(model[0]) and not DG.prunes_itself(model[1])
    assert DG.submodule("2") is model[2] and DG.submodule("") is model


def test_tied_weights_have_every_owner():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    m = Tied().eval()
    DG = tp.DependencyGraph().build_dependency(m, torch.randn(2, 4))
    assert DG.owners_of("a.weight") == [("a", "weight"), ("b", "weight")]
    assert DG.owners_of("nope.weight") == []
