"""Large language models past one machine's memory: plan a prune of a Hugging Face checkpoint
without loading it, then write the pruned checkpoint shard by shard.

    report = tp.plan_pretrained("llama-dir", amount=0.25, strategy="l2",
                                head_pruning="heads", prune_hidden=False, uniform=True)
    print(report)       # params and MACs before/after, per layer and in total
    tp.prune_pretrained("llama-dir", "llama-pruned", amount=0.25, strategy="l2",
                        head_pruning="heads", prune_hidden=False, uniform=True)
    AutoModelForCausalLM.from_pretrained("llama-pruned")       # transformers alone

The model is built from ``config.json`` under ``FakeTensorMode`` (shapes, no memory), traced
with fake token ids, and its groups found exactly as ``prune_model`` finds them on a real
model. Weight-based scores (L1, L2, LAMP) read each tensor from its shard in row blocks, and
``prune_model(..., dry_run=True)`` makes the plan: the same code, the same choices as on the
loaded model. ``uniform=True`` then finds the ``config.json`` that describes the pruned model
(``hf_config``), so any tool that reads Hugging Face checkpoints loads it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .dependency import DependencyGraph
from .errors import InvalidAmountError, PruningError, TracingError
from .hf_checkpoint import Checkpoint, CheckpointError
from .hf_config import ConfigError, solve_config
from .whole_model import PruneReport, prune_model

STRATEGIES = ("l1", "l2", "lamp", "random", "wanda")
_POWER = {"l1": 1, "l2": 2, "lamp": 2, "wanda": 1}


class UnsupportedModelError(PruningError, NotImplementedError):
    """The model's forward cannot run on fake (shape-only) tensors."""


# ---------------------------------------------------------------------------------------------
# building the model without weights
# ---------------------------------------------------------------------------------------------
def fake_mode():
    from torch._subclasses import FakeTensorMode
    return FakeTensorMode(allow_non_fake_inputs=True)


def load_config(source):
    """(config, Checkpoint or None) from a checkpoint directory or a config object."""
    from transformers import AutoConfig, PretrainedConfig
    if isinstance(source, PretrainedConfig):
        return source, None
    ck = Checkpoint(source)
    try:
        config = AutoConfig.from_pretrained(ck.path)
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"{ck.path}/config.json cannot be read by transformers: "
                              f"{str(exc).splitlines()[0]}") from None
    return config, ck


def model_class(config):
    """The class named in ``config.architectures`` (a causal LM otherwise, else the bare
    model), as ``from_pretrained`` would pick it."""
    import transformers
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    from transformers import AutoModel, AutoModelForCausalLM
    for auto in (AutoModelForCausalLM, AutoModel):
        try:
            return auto._model_mapping[type(config)]
        except KeyError:
            continue
    raise UnsupportedModelError(f"transformers has no model class for model_type "
                                f"{getattr(config, 'model_type', '?')!r}")


def build_model(config, mode) -> nn.Module:
    """The model of ``config`` with fake tensors; fused MoE experts use transformers'
    ``batched_mm`` path, whose forward does not depend on the routing's values."""
    cls = model_class(config)
    config = copy.deepcopy(config)
    with mode:
        model = cls(config).eval()
    if _has_experts(model):
        try:
            model.set_experts_implementation("batched_mm")
        except (ValueError, AttributeError, NotImplementedError):
            pass
    return model


def _has_experts(model) -> bool:
    return any(hasattr(m, "_is_expert_parallel") for m in model.modules())


def fake_inputs(model: nn.Module, seq_len: int, mode) -> dict:
    name = getattr(model, "main_input_name", "input_ids")
    if name != "input_ids":
        raise UnsupportedModelError(f"{type(model).__name__} takes {name!r}; plan_pretrained "
                                    f"plans text models (input_ids)")
    with mode:
        return {"input_ids": torch.zeros(1, seq_len, dtype=torch.long)}


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# the dependency graph of a model that was never loaded
# ---------------------------------------------------------------------------------------------
class PretrainedGraph(DependencyGraph):
    """A DependencyGraph of a fake-tensor model whose scores read weights from disk: only the
    tensors of the groups being scored, in row blocks."""

    extra_strategies = ("wanda",)

    def __init__(self, mode, checkpoint: Checkpoint | None = None,
                 activation_norms: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.mode = mode
        self.checkpoint = checkpoint
        self.activation_norms = activation_norms or {}
        self.bytes_read = 0

    def _trace(self) -> None:
        with self.mode:
            super()._trace()

    def execute(self, plan, verify="auto") -> int:
        with self.mode:
            return super().execute(plan, verify)

    def channel_scores(self, name: str, dim: int, strategy: str, cache: dict | None = None):
        if strategy == "taylor":
            raise InvalidAmountError("strategy='taylor' needs gradients of the loaded model; "
                                     "use 'wanda' (activations from calibration batches) or a "
                                     "weight strategy")
        if self.checkpoint is None:
            raise InvalidAmountError(
                f"strategy {strategy!r} reads weights, and this model was built from a config "
                f"alone; plan from a checkpoint directory, or use strategy='random' (the "
                f"parameter and MAC counts do not depend on which channels go)")
        owner = name.rpartition(".")[0]
        module = self.model.get_submodule(owner) if owner else self.model
        if strategy == "bn_scale":
            if isinstance(module, (nn.LayerNorm,)) or "norm" in type(module).__name__.lower():
                return self.checkpoint.read(name).float().abs().reshape(-1).numpy()
            return None
        cols = None
        if strategy == "wanda":
            norms = self.activation_norms.get(owner)
            if norms is not None and name.endswith("weight") and len(self.tensor(name).shape) \
                    == 2 and self.tensor(name).shape[1] == len(norms):
                cols = norms
        self.bytes_read += _nbytes(self.tensor(name))
        return self.checkpoint.scores(name, dim, _POWER.get(strategy, 1), cols)


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerRow:
    name: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    count: int = 1  # identical consecutive layers folded into one row


@dataclass
class PretrainedPlan:
    """What ``plan_pretrained`` found: the combined plan (``report.plan``), its counts per
    layer, and the config.json edits (or why no edit describes the model)."""

    source: str
    config: Any
    report: PruneReport
    rows: list[LayerRow]
    settings: dict
    target_shapes: dict[str, tuple[int, ...]]
    config_edits: dict[str, int] | None = None
    config_error: str | None = None
    seq_len: int = 32
    DG: PretrainedGraph | None = field(default=None, repr=False)
    checkpoint: Checkpoint | None = field(default=None, repr=False)

    @property
    def plan(self):
        return self.report.plan

    @property
    def params_before(self) -> int:
        return self.report.params_before

    @property
    def params_after(self) -> int:
        return self.report.params_after

    @property
    def macs_before(self) -> int:
        return self.report.macs_before

    @property
    def macs_after(self) -> int:
        return self.report.macs_after

    def __str__(self) -> str:
        s = self.settings
        head = (f"{type(self.config).__name__} from {self.source}: {s['strategy']} "
                f"{s['amount']:.0%}, head_pruning={s['head_pruning']}, "
                f"prune_hidden={s['prune_hidden']}, uniform={s['uniform']}")
        w = max([len(_row_name(r)) for r in self.rows] + [24])
        lines = [head, f"{'':{w}}  {'params before -> after':>34}  "
                       f"{f'MACs ({self.seq_len} tokens) before -> after':>40}"]
        for r in self.rows:
            lines.append(f"{_row_name(r):{w}}  {_pair(r.params_before, r.params_after):>34}  "
                         f"{_pair(r.macs_before, r.macs_after):>40}")
        lines.append(f"{'total':{w}}  {_pair(self.params_before, self.params_after):>34}  "
                     f"{_pair(self.macs_before, self.macs_after):>40}")
        rep = self.report
        lines.append(f"{len(rep.groups)} groups pruned, {len(rep.skipped)} skipped")
        for root, why in rep.skipped[:6]:
            lines.append(f"  skipped {root}: {why}")
        if self.config_edits is not None:
            edits = ", ".join(f"{k} {_old(self.config, k)} -> {v}"
                              for k, v in self.config_edits.items()) or "unchanged"
            lines.append(f"config.json: {edits}")
        if self.config_error:
            lines.append(f"config.json cannot describe it: {self.config_error}")
        read = self.DG.bytes_read if self.DG is not None else 0
        lines.append(f"no weights loaded; {_human(read)} of weights read for scores, tensor by "
                     f"tensor")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def _old(config, k):
    return getattr(config, k, None)


def _row_name(r: LayerRow) -> str:
    if r.count == 1:
        return r.name
    base, _, first = r.name.rpartition(".")
    return f"{base}.{first}-{int(first) + r.count - 1} (each)"


def _pair(a: int, b: int) -> str:
    pct = 100 * (1 - b / a) if a else 0.0
    return f"{a:,} -> {b:,} (-{pct:.1f}%)"


def plan_pretrained(source, amount: float = 0.25, strategy: str = "l2",
                    head_pruning: str = "heads", prune_hidden: bool = False,
                    uniform: bool = True, *, ignored_layers: Iterable | None = None,
                    round_to: int | None = None, global_pruning: bool = False,
                    seq_len: int = 32, calibration=None, max_memory: dict | None = None,
                    param_roots: bool = True, seed: int = 0) -> PretrainedPlan:
    """Plan ``prune_model(amount, strategy, ...)`` on a Hugging Face checkpoint directory (or
    a ``PretrainedConfig``) without loading it. Returns a ``PretrainedPlan``; printing it
    shows parameters and MACs (for ``seq_len`` tokens) before/after, per layer and in total,
    and the config.json edits.

    The settings mean what they mean for ``prune_model`` (``param_roots=True`` also prunes
    fused MoE experts' intermediate size). ``ignored_layers`` defaults to the output layer
    (``lm_head``, a classifier, BERT's pooler). ``strategy="wanda"`` scores |W| times the norm
    of each layer's input over ``calibration`` token batches, run through accelerate's
    big-model dispatch within ``max_memory`` (see ``calibration.py``).
    ``uniform=True`` keeps every layer the same size and requires a config.json that
    describes the result; ``global_pruning`` ranks across layers and needs ``uniform=False``.
    """
    if strategy not in STRATEGIES:
        raise InvalidAmountError(f"unknown strategy {strategy!r} for a checkpoint; use one of "
                                 f"{STRATEGIES}")
    if uniform and global_pruning:
        raise InvalidAmountError("global_pruning ranks channels across layers, so layers end "
                                 "up different sizes; pass uniform=False with it")
    if strategy == "wanda" and calibration is None:
        raise InvalidAmountError("strategy='wanda' needs calibration=<token id batches>")
    norms = None
    if strategy == "wanda":
        from .calibration import activation_norms
        norms = activation_norms(source, calibration, max_memory=max_memory)
    DG = pretrained_graph(source, seq_len, norms)
    model, config, ck, inputs = DG.model, DG.config, DG.checkpoint, DG.example_inputs
    mode = DG.mode
    ignored = list(ignored_layers) if ignored_layers is not None else default_ignored(model, DG)
    report = prune_model(model, inputs, amount=amount, strategy=strategy,
                         ignored_layers=ignored, round_to=round_to,
                         global_pruning=global_pruning, head_pruning=head_pruning,
                         prune_hidden=prune_hidden, DG=DG, dry_run=True, seed=seed,
                         param_roots=param_roots)
    target = target_shapes(model, report.plan)
    settings = {"amount": amount, "strategy": strategy, "head_pruning": head_pruning,
                "prune_hidden": prune_hidden, "uniform": uniform, "round_to": round_to,
                "global_pruning": global_pruning, "param_roots": param_roots,
                "ignored_layers": [DG.module_name(m) for m in ignored], "seed": seed}
    label = ck.path if ck is not None else f"a {type(config).__name__} (no weights)"
    out = PretrainedPlan(label, config, report,
                         layer_rows(model, DG, report.plan, target), settings, target,
                         seq_len=seq_len, DG=DG, checkpoint=ck)
    if uniform:
        try:
            out.config_edits = config_for(config, model, report.plan, target, head_pruning,
                                          mode, ck)
        except ConfigError as exc:
            out.config_error = str(exc)
    return out


def pretrained_graph(source, seq_len: int = 32, activation_norms=None) -> PretrainedGraph:
    """The traced dependency graph of a checkpoint directory's (or config's) model, built
    on fake tensors; ``DG.model`` is that fake model, ``DG.checkpoint`` its weights on disk."""
    config, ck = load_config(source)
    mode = fake_mode()
    model = build_model(config, mode)
    if ck is not None:
        ck.bind(model)
    DG = PretrainedGraph(mode, ck, activation_norms)
    DG.config = config
    inputs = fake_inputs(model, seq_len, mode)
    try:
        DG.build_dependency(model, inputs, verbose=False)
    except TracingError as exc:
        raise UnsupportedModelError(
            f"{type(model).__name__} (model_type {config.model_type!r}) does not run on fake "
            f"tensors, so it cannot be planned without its weights: {exc}") from exc
    return DG


def default_ignored(model: nn.Module, DG: DependencyGraph) -> list[str]:
    """The output layer: the output embedding if the model has one, else the last layer."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        return [DG.module_name(out)]
    layers = [n for n in DG.graph.nodes.values() if n.kind == "layer" and n.module]
    return [layers[-1].module] if layers else []


def target_shapes(model: nn.Module, plan) -> dict[str, tuple[int, ...]]:
    """Every state tensor's shape once ``plan`` is executed (tied names included)."""
    from .hf_checkpoint import _canonical_names
    canon = _canonical_names(model)
    shapes = state_shapes(model)
    cut: dict[str, list[int]] = {}
    if plan is not None:
        for name, dim, idxs in plan.actions.cuts:
            s = cut.setdefault(name, list(shapes.get(name) or model.get_parameter(name).shape))
            s[dim] -= len(idxs)
    return {n: tuple(cut.get(canon.get(n, n), s)) for n, s in shapes.items()}


def config_for(config, model, plan, target, policy, mode, ck) -> dict[str, int]:
    """config.json edits that describe the pruned model exactly, or ConfigError."""
    if plan is not None:
        persistent = set(state_shapes(model))
        for name, _dim, _idxs in plan.actions.cuts:
            if name not in persistent:
                raise ConfigError(
                    f"the plan cuts {name}, which the checkpoint does not store (the model "
                    f"computes it from config.json at load), so no config reproduces the cut "
                    f"values; use head_pruning='heads' (whole heads keep rotary frequencies), "
                    f"or uniform=False and tp.load")

    def build(cfg):
        return state_shapes(build_model(cfg, mode))

    edits = solve_config(config, target, policy, build)
    if plan is not None and plan.actions.ints:
        built = build_model(_edited(config, edits), mode)
        for mname, attr, _old_v, new in plan.actions.ints:
            from .execution import _owner_of
            try:
                obj, a = _owner_of(built.get_submodule(mname) if mname else built, attr)
                have = getattr(obj, a)
            except AttributeError:
                continue
            if have != new:
                raise ConfigError(f"{mname}.{attr} must become {new} but the edited config "
                                  f"gives {have}; prune with uniform=False and rebuild with "
                                  f"tp.load")
    return edits


def _edited(config, edits: dict):
    c = copy.deepcopy(config)
    for k, v in edits.items():
        setattr(c, k, v)
    return c


def layer_rows(model: nn.Module, DG: DependencyGraph, plan, target) -> list[LayerRow]:
    """Parameters and MACs before/after per repeated block (decoder layer), identical
    consecutive blocks folded, then everything else in one row."""
    from .hf_checkpoint import _canonical_names
    from .metrics import node_macs
    blocks = _blocks(model)
    canon = _canonical_names(model)
    names = {c for c in canon.values()}
    params = {n: t for n, t in model.named_parameters()}

    def block_of(name: str) -> str | None:
        for b in blocks:
            if name == b or name.startswith(b + "."):
                return b
        return None

    rows = {b: [0, 0, 0, 0] for b in blocks + ["other"]}
    for n in names:
        if n not in params:
            continue
        b = block_of(n) or "other"
        before = int(np.prod(params[n].shape))
        after = int(np.prod(target.get(n, params[n].shape)))
        rows[b][0] += before
        rows[b][1] += after
    macs = node_macs(DG.graph)
    for nid, m in macs.items():
        node = DG.graph.nodes[nid]
        b = block_of(node.module or node.scope or "") or "other"
        rows[b][2] += m
        rows[b][3] += m
    if plan is not None:
        for step in plan.steps:
            if not step.macs:
                continue
            node = DG.graph.nodes.get(step.nodes[0]) if step.nodes else None
            where = (node.module or node.scope) if node is not None else step.target
            rows[block_of(where or "") or "other"][3] -= step.macs
    out: list[LayerRow] = []
    for b in blocks:
        r = LayerRow(b, *rows[b])
        last = out[-1] if out else None
        if last is not None and (last.params_before, last.params_after, last.macs_before,
                                 last.macs_after) == tuple(rows[b]) and \
                last.name.rpartition(".")[0] == b.rpartition(".")[0]:
            last.count += 1
            continue
        out.append(r)
    out.append(LayerRow("other (embeddings, norms, output)", *rows["other"]))
    return out


def _blocks(model: nn.Module) -> list[str]:
    out: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(c) for c in m}) == 1 \
                and not any(name.startswith(b + ".") for b in out):
            out.extend(f"{name}.{i}" for i in range(len(m)))
    return out


# ---------------------------------------------------------------------------------------------
# pruning the checkpoint
# ---------------------------------------------------------------------------------------------
def prune_pretrained(source, out, amount: float = 0.25, strategy: str = "l2",
                     head_pruning: str = "heads", prune_hidden: bool = False,
                     uniform: bool = True, *, plan: PretrainedPlan | None = None,
                     **options) -> PretrainedPlan:
    """Prune the checkpoint in ``source`` into a new directory ``out``, shard by shard (one
    shard's tensors in memory at a time), and return the plan it executed.

    ``out`` gets the pruned shards (same file names and keys), their index, ``config.json``
    (edited when ``uniform=True``: ``AutoModelForCausalLM.from_pretrained(out)`` loads it
    with transformers alone), every other file of ``source`` (tokenizer, generation config)
    and ``history.json`` (the executed plan, so ``tp.load(out, factory)`` rebuilds it from
    the original architecture: the way to read a ``uniform=False`` result, which no
    config.json describes). Everything is written to a temporary directory beside ``out``
    and renamed at the end: on any error nothing is left. ``plan``: a ``PretrainedPlan`` from
    ``plan_pretrained`` on the same directory, to skip planning again.
    """
    out = os.fspath(out)
    if os.path.exists(out):
        raise FileExistsError(f"{out} already exists; prune_pretrained writes a new directory "
                              f"(remove it or pick another name)")
    if plan is None:
        plan = plan_pretrained(source, amount, strategy, head_pruning, prune_hidden, uniform,
                               **options)
    elif plan.checkpoint is None or os.path.abspath(plan.checkpoint.path) != \
            os.path.abspath(os.fspath(source)):
        raise PruningError("plan= was made for another source; plan this directory again")
    if plan.checkpoint is None:
        raise CheckpointError("prune_pretrained needs a checkpoint directory, not a config")
    if plan.settings["uniform"] and plan.config_error:
        raise ConfigError(f"uniform=True, but config.json cannot describe the pruned model: "
                          f"{plan.config_error}")
    from .pretrained_write import write_checkpoint
    write_checkpoint(plan, out)
    return plan
