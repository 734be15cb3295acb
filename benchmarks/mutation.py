"""Mutation testing of the engine's core: how many small bugs do the fast tests catch?

    python benchmarks/mutation.py                    # 30 sampled mutants per module
    python benchmarks/mutation.py --per-module 0     # every mutant (hours)
    python benchmarks/mutation.py --modules strategy groups --per-module 10

For each module (index_mapping, propagation, op_rules, pruners, groups, strategy, execution)
the script lists every mutation site of one of these kinds, samples ``--per-module`` of them
with a fixed seed, and for each mutant runs that module's *targeted subset* of the fast
tests (the files that exercise it, below) with ``pytest -x``, in a copy of the repository (the
worktree is never touched), under ``nice -n 19``:

    comparison   <  <=  >  >=  ==  !=  is  is not  in  not in   (swapped with its neighbour)
    arithmetic   +  -  *  /  //  %                               (+ <-> -, * <-> /, // <-> /)
    boolean      and <-> or;  ``not x`` -> ``x``;  True <-> False
    constant     an int n -> n + 1 (0 -> 1, 1 -> 2, ...; -1 -> 0)
    return       ``return x`` -> ``return None`` (for non-trivial x)

A mutant is *killed* when the subset fails (or exceeds three times its unmutated run time),
*survived* otherwise. The kill rate is killed / mutants; survivors are listed with their line
so they can be read, judged equivalent or not, and given a test. Raw output goes to
``benchmarks/results/mutation.txt``.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PY = sys.executable

# module -> the fast tests that exercise it (pytest arguments)
SUBSETS = {
    "index_mapping": ["tests/test_index_mapping.py", "tests/test_ops.py", "tests/test_ops_rules.py",
                      "tests/test_group_data.py"],
    "propagation": ["tests/test_propagation.py", "tests/test_ops.py", "tests/test_ops_rules.py",
                    "tests/test_bad_inputs.py", "tests/test_group_data.py"],
    "op_rules": ["tests/test_ops.py", "tests/test_ops_rules.py", "tests/test_layers.py",
                 "tests/test_graph_update.py::test_outputs_nobody_reads_follow_in_the_projected_graph"],
    "op_rules_shapes": ["tests/test_ops.py", "tests/test_ops_rules.py", "tests/test_layers.py"],
    "op_rules_layers": ["tests/test_ops.py", "tests/test_ops_rules.py", "tests/test_layers.py"],
    "pruners": ["tests/test_layers.py", "tests/test_bad_inputs.py", "tests/test_classic.py", "-k",
                "not torchvision and not readme and not counts_every and not follows and "
                "not loop_over and not bert"],
    "groups": ["tests/test_groups.py", "tests/test_selection.py", "tests/test_prune_model.py",
               "tests/test_group_data.py",
               "tests/test_realworld_ops.py::test_a_layer_with_a_child_module_of_its_own_roots_a_group"],
    "strategy": ["tests/test_selection.py", "tests/test_classic.py", "tests/test_errors.py",
                 "tests/test_bad_inputs.py", "-k", "strategy or select or amount or round or random"],
    "execution": ["tests/test_errors.py", "tests/test_serialization.py", "tests/test_safe_exec.py",
                  "tests/test_graph_update.py"],
}

_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
             ast.In: ast.NotIn, ast.NotIn: ast.In}
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
             ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv}


class Sites(ast.NodeVisitor):
    """Every mutation site: (kind, node id in walk order, line, description)."""

    def __init__(self):
        self.sites = []
        self._skip = set()

    def visit_FunctionDef(self, node):
        self._skip_docstring(node)
        for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
            if a.annotation is not None:
                self._skip.update(id(n) for n in ast.walk(a.annotation))
        if node.returns is not None:
            self._skip.update(id(n) for n in ast.walk(node.returns))
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._skip_docstring(node)
        self.generic_visit(node)

    def visit_Module(self, node):
        self._skip_docstring(node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        self._skip.update(id(n) for n in ast.walk(node.annotation))
        self.generic_visit(node)

    def _skip_docstring(self, node):
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self._skip.add(id(body[0].value))

    def generic_visit(self, node):
        if id(node) not in self._skip:
            self._sites_of(node)
        super().generic_visit(node)

    def _sites_of(self, node):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    self.sites.append(("cmp", node, i, line,
                                       f"{type(op).__name__} -> {_CMP_SWAP[type(op)].__name__}"))
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
            self.sites.append(("bin", node, 0, line,
                               f"{type(node.op).__name__} -> {_BIN_SWAP[type(node.op)].__name__}"))
        elif isinstance(node, ast.BoolOp):
            self.sites.append(("bool", node, 0, line,
                               f"{type(node.op).__name__} -> "
                               f"{'Or' if isinstance(node.op, ast.And) else 'And'}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self.sites.append(("not", node, 0, line, "not x -> x"))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            self.sites.append(("const", node, 0, line, f"{node.value} -> {not node.value}"))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            self.sites.append(("const", node, 0, line, f"{node.value} -> {node.value + 1}"))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            self.sites.append(("return", node, 0, line, "return x -> return None"))


def mutate(source: str, index: int) -> tuple[str, str]:
    """The source with mutation site ``index`` applied, and its description."""
    tree = ast.parse(source)
    finder = Sites()
    finder.visit(tree)
    kind, node, i, line, what = finder.sites[index]
    code = ast.unparse(node) if kind != "return" else f"return {ast.unparse(node.value)}"
    what = f"{what} in `{code if len(code) <= 60 else code[:57] + '...'}`"
    if kind == "cmp":
        node.ops[i] = _CMP_SWAP[type(node.ops[i])]()
    elif kind == "bin":
        node.op = _BIN_SWAP[type(node.op)]()
    elif kind == "bool":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "not":
        _replace(tree, node, node.operand)
    elif kind == "const":
        node.value = (not node.value) if type(node.value) is bool else node.value + 1
    elif kind == "return":
        node.value = ast.Constant(None)
    return ast.unparse(tree), f"line {line}: {what}"


def _replace(tree, old, new) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for k, item in enumerate(value):
                    if item is old:
                        value[k] = new
                        return


def count_sites(source: str) -> int:
    finder = Sites()
    finder.visit(ast.parse(source))
    return len(finder.sites)


def run_subset(copy_root: str, args: list[str], timeout: float) -> tuple[bool, float]:
    """(passed, seconds) of the subset in the copy."""
    env = dict(os.environ, PYTHONPATH=copy_root, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PE_RULE_COVERAGE_OUT", None)
    cmd = ["nice", "-n", "19", PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "--no-header", *args]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=copy_root, env=env, capture_output=True, timeout=timeout)
        ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return ok, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modules", nargs="+", default=list(SUBSETS))
    p.add_argument("--per-module", type=int, default=30, help="0: every mutant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sites", nargs="+", type=int, default=None,
                   help="only these site indexes (with a single --modules): re-check survivors")
    p.add_argument("--out", default=os.path.join(RESULTS, "mutation.txt"))
    args = p.parse_args()
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    tmp = tempfile.mkdtemp(prefix="pe_mutation_")
    try:
        for part in ("prune_explorer", "tests", "benchmarks", "pyproject.toml"):
            src = os.path.join(ROOT, part)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(
                src, os.path.join(tmp, part),
                **({"ignore": shutil.ignore_patterns("__pycache__", "results")}
                   if os.path.isdir(src) else {}))
        total_killed = total = 0
        log(f"# python benchmarks/mutation.py {' '.join(sys.argv[1:])}")
        for module in args.modules:
            path = os.path.join(tmp, "prune_explorer", f"{module}.py")
            with open(path) as f:
                original = f.read()
            subset = SUBSETS[module]
            ok, base = run_subset(tmp, subset, timeout=3600)
            if not ok:
                log(f"{module}: the unmutated subset fails; skipped")
                continue
            n = count_sites(original)
            picks = list(range(n))
            random.Random(f"{args.seed}:{module}").shuffle(picks)
            if args.sites is not None:
                picks = list(args.sites)
            elif args.per_module:
                picks = sorted(picks[:args.per_module])
            killed, survivors = 0, []
            t0 = time.perf_counter()
            for idx in picks:
                mutated, what = mutate(original, idx)
                with open(path, "w") as f:
                    f.write(mutated)
                try:
                    passed, _secs = run_subset(tmp, subset, timeout=max(60, 3 * base))
                finally:
                    with open(path, "w") as f:
                        f.write(original)
                if passed:
                    survivors.append(what)
                else:
                    killed += 1
                print(f"  {module} #{idx} {'SURVIVED' if passed else 'killed'} {what}",
                      flush=True)
            total += len(picks)
            total_killed += killed
            log(f"{module}: {killed}/{len(picks)} killed ({100 * killed / max(len(picks), 1):.0f}"
                f"%) of {n} sites, subset {base:.0f} s, {time.perf_counter() - t0:.0f} s "
                f"[{' '.join(subset)}]")
            for s in survivors:
                log(f"    survived {module}.py {s}")
            log(f"    (sites: {' '.join(map(str, picks))})")
        log(f"TOTAL: {total_killed}/{total} killed ({100 * total_killed / max(total, 1):.1f}%)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
