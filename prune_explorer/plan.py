"""PruningPlan: the ordered steps of one prune, what each removes, and why it is there.

A plan is computed entirely before anything changes: it lists every coupled layer with its
mapped indices, the parameters and MACs each step removes, and the path (in words) that
couples it to the root. ``exec()`` then performs exactly that, transactionally.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .traced_view import TracedView

# roles, as the explorer colours them
ROLE_ROOT = "root"
ROLE_OUT = "out"  # output channels pruned (weight rows)
ROLE_IN = "in"  # input channels pruned (weight columns)
ROLE_PASS = "pass"  # an op the channels flow through


class _Deferred:
    """A Step field that may be given as a function, called on first read: a whole-model
    plan has hundreds of steps whose explanations nobody may read."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return ""  # the dataclass default
        value = obj.__dict__[self.slot]
        if callable(value):
            value = obj.__dict__[self.slot] = value()
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


@dataclass
class Step:
    target: str  # module name, parameter name, or op node id
    kind: str  # "out" | "in" | "param" | "opaque" | "pass"
    fn: str  # classic function name (prune_conv, prune_batchnorm, ...)
    idxs: list[int]
    params: int = 0  # parameters this step removes
    macs: int = 0  # MACs this step removes
    trigger: str = _Deferred()  # fn of the step that led here
    why: str = _Deferred()  # in words, how this step is coupled to the root
    module_repr: str = _Deferred()
    nodes: tuple[str, ...] = ()  # graph nodes this step highlights
    role: str = ROLE_PASS

    def dep_str(self) -> str:
        name = f"{self.target} ({self.module_repr})" if self.module_repr else self.target
        return f"<DEP: {self.trigger or self.fn} => {self.fn} on {name}>"

    def __str__(self) -> str:
        return f"[ {self.dep_str()}, Index={self.idxs}, NumPruned={self.params}]"

    # the classic ``Dependency`` view: ``for dep, idxs in plan.plan: dep.handler(...)``
    @property
    def handler(self):
        """The classic function that prunes this step's layer (``tp.prune_conv``, ...)."""
        from .classic import classic_function
        return classic_function(self.fn)

    @property
    def broken_node(self):
        """A classic ``Node`` with this step's ``module`` (a tensor for bare parameters, None
        for ops)."""
        from .classic import Node
        plan = getattr(self, "_plan", None)
        module = None
        if plan is not None and self.kind != "pass":
            G = plan._dg
            module = G.tensor(self.target) if self.kind == "param" else (
                G.submodule(self.target))
        return Node(module, name=self.target)

    def __call__(self, idxs, dry_run: bool = False):
        """Run this step's classic function alone on its layer, as 0.2.x's ``dep(idxs)``."""
        handler, node = self.handler, self.broken_node
        if handler is None or node.module is None:
            return node.module, 0
        return handler(node.module, idxs, dry_run=dry_run)


@dataclass
class Actions:
    """Exactly what exec changes (also what the history records and replays)."""

    cuts: list[tuple[str, int, list[int]]] = field(default_factory=list)  # tensor, dim, idxs
    counts: list[tuple[str, str, int]] = field(default_factory=list)  # module, attr, removed
    opaque: list[tuple[str, dict[str, list[int]]]] = field(default_factory=list)
    ints: list[tuple[str, str, Any, Any]] = field(default_factory=list)  # module, attr, old, new
    sync: list[str] = field(default_factory=list)  # modules whose size attributes to refresh

    def to_dict(self) -> dict:
        return {"cuts": [list(c) for c in self.cuts], "counts": [list(c) for c in self.counts],
                "opaque": [[m, {k: list(v) for k, v in s.items()}] for m, s in self.opaque],
                "ints": [[m, a, _jsonable(o), _jsonable(n)] for m, a, o, n in self.ints],
                "sync": list(self.sync)}

    @classmethod
    def from_dict(cls, d: dict) -> "Actions":
        return cls(cuts=[(t, int(dim), [int(i) for i in idxs]) for t, dim, idxs in d["cuts"]],
                   counts=[(m, a, int(n)) for m, a, n in d["counts"]],
                   opaque=[(m, {k: [int(i) for i in v] for k, v in s.items()})
                           for m, s in d["opaque"]],
                   ints=[(m, a, _unjson(o), _unjson(n)) for m, a, o, n in d["ints"]],
                   sync=list(d["sync"]))


def _jsonable(x):
    return list(x) if isinstance(x, tuple) else x


def _unjson(x):
    return tuple(x) if isinstance(x, list) else x


class PruningPlan:
    """The previewed prune. Iterate ``steps``; ``params_removed`` and ``macs_removed`` are
    exact predictions that ``exec()`` then realises."""

    def __init__(self, dg: "TracedView", root: str, side: str, idxs: list[int],
                 steps: "list[Step] | Callable[[], tuple[list[Step], dict]]", actions: Actions,
                 params_removed: int, macs_removed: int, problems: list,
                 highlighted: dict[str, dict] | None, groups: int = 1):
        """``steps`` may be a function returning ``(steps, highlighted)``, called when the
        steps are first read: a whole-model plan is executed at once, and its hundreds of
        steps are only worked out if somebody looks (from facts taken before exec)."""
        self._dg = dg
        self.root = root
        self.side = side
        self.idxs = idxs
        self._steps: list[Step] | None = None
        self._make_steps = None
        if callable(steps):
            self._make_steps = steps
        else:
            self.steps = steps
        self.actions = actions
        self.params_removed = params_removed
        self.macs_removed = macs_removed
        self.problems = problems
        self._highlighted = highlighted
        self.groups = groups
        self.executed = False

    @property
    def steps(self) -> list[Step]:
        """Every layer and op the plan touches, root first, in the order exec handles them."""
        if self._steps is None:
            self.steps, self._highlighted = self._make_steps()
            self._make_steps = None
        return self._steps

    @steps.setter
    def steps(self, steps: list[Step]) -> None:
        self._steps = steps
        for s in steps:
            s._plan = self  # for the classic view of a step (dep.broken_node.module)

    @property
    def highlighted(self) -> dict[str, dict]:
        """Graph node -> {"role", "idxs", "why", "fn", "step"} of the step it is shown with
        (the step whose role ranks first: root, out, in, pass)."""
        self.steps  # noqa: B018 - worked out together with the steps
        h = self._highlighted
        if h and isinstance(next(iter(h.values())), int):
            h = self._highlighted = {
                n: {"role": s.role, "idxs": s.idxs, "why": s.why, "fn": s.fn, "step": i}
                for n, i in h.items() for s in (self.steps[i],)}
        return h

    # classic API ------------------------------------------------------------------------------
    @property
    def plan(self) -> list[tuple[Step, list[int]]]:
        return [(s, s.idxs) for s in self.steps]

    def exec(self, dry_run: bool = False, verify: bool | str = "auto") -> int:
        """Prune the model. Returns the number of parameters removed. After the surgery one
        forward on the example inputs (heavy ops shape-only) checks that the model runs and
        that its outputs have the predicted shapes; on any failure the model is restored
        exactly and ``PlanExecutionError`` names the layer. ``verify=False`` skips the check
        (at the caller's risk); ``"auto"`` and ``True`` check."""
        if dry_run:
            return self.params_removed
        if self.is_noop and not self.problems:  # idxs=[]: nothing to change, nothing to record
            self.executed = True
            return 0
        return self._dg.execute(self, verify=verify)

    @property
    def is_noop(self) -> bool:
        a = self.actions
        return not (a.cuts or a.counts or a.opaque or a.ints)

    def __str__(self) -> str:
        lines = ["", "-------------"]
        for s in self.steps:
            lines.append(str(s))
        lines.append(f"{self.params_removed} parameters will be pruned")
        lines.append("-------------")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (f"<PruningPlan root={self.root} ({self.side}) idxs={len(self.idxs)} "
                f"steps={len(self.steps)} params=-{self.params_removed} macs=-{self.macs_removed}>")

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.plan)

    @property
    def is_valid(self) -> bool:
        return not self.problems

    @property
    def layer_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind != "pass"]

    def to_dict(self) -> dict:
        return {
            "root": self.root, "side": self.side, "idxs": list(self.idxs),
            "params_removed": self.params_removed, "macs_removed": self.macs_removed,
            "steps": [asdict(s) | {"nodes": list(s.nodes)} for s in self.steps],
            "actions": self.actions.to_dict(),
            "problems": [p.message for p in self.problems],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)
