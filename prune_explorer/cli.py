"""The ``prune-explorer`` command line.

    prune-explorer plan   torchvision:resnet50 --layer layer1.0.conv1 --idxs 2,6,9
    prune-explorer prune  torchvision:resnet50 --amount 0.5 --strategy l1 --out pruned/
    prune-explorer report torchvision:resnet50 --amount 0.5 --html report.html
    prune-explorer explore torchvision:resnet18        # the explorer in a window (Voilà)

Models: ``torchvision:NAME``, ``timm:NAME`` (``pretrained=False``), ``hf:NAME`` (a Hugging Face
model type or config name such as ``bert``, ``gpt2``, ``llama``, ``vit``, built offline from
its config with small sizes and random weights) or ``path/file.py:factory``. Weights are always
random: nothing is downloaded. Errors print one line and exit non-zero (``--traceback`` shows
the Python traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

EXIT_ERROR = 1
EXIT_USAGE = 2

# sizes for Hugging Face configs, applied where the config has the field
HF_SMALL = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000,
    "max_position_embeddings": 128, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
    "n_inner": 128, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128, "num_layers": 2, "num_heads": 4, "d_ff": 128, "d_kv": 16,
    "image_size": 32, "patch_size": 8, "type_vocab_size": 2,
}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


@dataclass
class Loaded:
    model: Any
    inputs: Any
    factory: Callable
    source: str
    describe: str


# ---------------------------------------------------------------------------------------------
# models and inputs
# ---------------------------------------------------------------------------------------------
def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(s) for s in re.split(r"[,x]", text.strip()))
    except ValueError:
        raise CLIError(f"--input-shape must be integers separated by commas (e.g. 1,3,224,224), "
                       f"got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise CLIError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CLIError(f"{module} is not installed; pip install {extra}") from None


def _torchvision_factory(name: str) -> Callable:
    tv = _require("torchvision", "torchvision")
    available = set(tv.models.list_models())
    if name not in available:
        close = sorted(n for n in available if name.lower() in n or n in name.lower())[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else \
            "; see torchvision.models.list_models()"
        raise CLIError(f"torchvision has no model {name!r}{hint}")

    def factory():
        kwargs = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
        return tv.models.get_model(name, weights=None, **kwargs)
    return factory


def _timm_factory(name: str) -> Callable:
    timm = _require("timm", "timm")
    if not timm.list_models(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CLIError(f"timm has no model {name!r}{hint}")
    return lambda: timm.create_model(name, pretrained=False)


def _hf_config(name: str):
    transformers = _require("transformers", "transformers")
    from transformers import AutoConfig, CONFIG_MAPPING
    config = None
    if name in CONFIG_MAPPING:
        config = AutoConfig.for_model(name)
    else:
        with contextlib.suppress(Exception):  # a config already in the local cache
            config = AutoConfig.from_pretrained(name, local_files_only=True)
        if config is None:
            base = name.split("/")[-1].lower()
            candidates = sorted((t for t in CONFIG_MAPPING.keys()
                                 if base.startswith(t) or base.replace("-", "_").startswith(t)),
                                key=len, reverse=True)
            if not candidates:
                raise CLIError(f"hf:{name} is neither a Hugging Face model type (e.g. bert, gpt2, "
                               f"llama, vit) nor a config in the local cache; no hub access is "
                               f"used")
            config = AutoConfig.for_model(candidates[0])
    for key, value in HF_SMALL.items():
        if hasattr(config, key) and isinstance(getattr(config, key), int):
            setattr(config, key, value)
    if getattr(config, "head_dim", None) is not None and hasattr(config, "hidden_size"):
        heads = getattr(config, "num_attention_heads", None)
        if heads:
            config.head_dim = config.hidden_size // heads
    del transformers
    return config


def _hf_factory(name: str) -> Callable:
    config = _hf_config(name)
    from transformers import AutoModel

    def factory():
        model = AutoModel.from_config(config)
        return model
    return factory


def _file_factory(spec: str) -> Callable:
    path, _, attr = spec.rpartition(":")
    if not os.path.isfile(path):
        raise CLIError(f"{path} does not exist (expected path/to/file.py:factory)")
    modname = "_prune_explorer_user_" + os.path.splitext(os.path.basename(path))[0]
    mspec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(mspec)
    sys.modules[modname] = module
    try:
        mspec.loader.exec_module(module)
    except Exception as exc:
        raise CLIError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = [n for n in vars(module) if callable(vars(module)[n]) and not n.startswith("_")]
        raise CLIError(f"{path} has no callable {attr!r}; it defines {', '.join(names[:8])}")
    return factory


def resolve_factory(spec: str) -> tuple[Callable, str]:
    """``source:name`` -> (factory, source)."""
    source, sep, name = spec.partition(":")
    if spec.endswith(".py") or (sep and spec.rpartition(":")[0].endswith(".py")):
        if not sep or spec.endswith(".py"):
            raise CLIError(f"{spec}: name the factory function too, e.g. {spec}:build_model")
        return _file_factory(spec), "file"
    if not sep or not name:
        raise CLIError(f"model {spec!r} must look like torchvision:NAME, timm:NAME, hf:NAME or "
                       f"path/file.py:factory")
    if source == "torchvision":
        return _torchvision_factory(name), source
    if source == "timm":
        return _timm_factory(name), source
    if source == "hf":
        return _hf_factory(name), source
    raise CLIError(f"unknown model source {source!r}; use torchvision:, timm:, hf: or "
                   f"path/file.py:factory")


def default_inputs(model, source: str, shape: tuple[int, ...] | None, spec: str):
    """Example inputs: a float image batch, or token ids for Hugging Face text models."""
    import torch
    name = spec.partition(":")[2]
    if source == "hf":
        main = getattr(model, "main_input_name", "input_ids")
        config = model.config
        if main == "input_ids":
            shape = shape or (1, 16)
            if len(shape) != 2:
                raise CLIError(f"--input-shape for a text model is batch,sequence (e.g. 1,16), "
                               f"got {','.join(map(str, shape))}")
            vocab = getattr(config, "vocab_size", 1000)
            g = torch.Generator().manual_seed(0)
            return {"input_ids": torch.randint(0, vocab, shape, generator=g)}
        if main == "pixel_values":
            size = getattr(config, "image_size", 224)
            size = size if isinstance(size, int) else size[0]
            shape = shape or (1, getattr(config, "num_channels", 3), size, size)
            return {"pixel_values": torch.randn(shape)}
        raise CLIError(f"hf:{name} takes {main!r} inputs, which the command line cannot make "
                       f"up; use a path/file.py:factory wrapper")
    if shape is None:
        size = 224
        if source == "timm":
            cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", {})
            input_size = (cfg or {}).get("input_size")
            if input_size:
                return torch.randn(1, *input_size)
        if source == "torchvision" and name == "inception_v3":
            size = 299
        shape = (1, 3, size, size)
    return torch.randn(shape)


def default_ignored(model, source: str = "") -> list:
    """The classifier: timm's get_classifier(); for Hugging Face models their head
    (``classifier``, ``score``, ``lm_head`` or the output embeddings; a bare encoder has none:
    its primary output keeps its hidden size anyway); else the last nn.Linear (or, without
    any, the last conv) in module order."""
    from torch import nn
    if source == "hf":
        for attr in ("classifier", "score", "lm_head"):
            head = getattr(model, attr, None)
            if isinstance(head, nn.Module):
                return [head]
        with contextlib.suppress(Exception):
            head = model.get_output_embeddings()
            if isinstance(head, nn.Module):
                return [head]
        return []
    get = getattr(model, "get_classifier", None)
    if callable(get):
        with contextlib.suppress(Exception):
            head = get()
            if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
                return [head]
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        for m in model.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                last = m
    return [last] if last is not None else []


def build_model(spec: str, input_shape: str | None = None, seed: int = 0) -> Loaded:
    """The model and example inputs a MODEL spec names (random weights, eval mode); the
    command line and the desktop explorer's kernel (``widget/app.py``) both build through
    this, so a spec means the same everywhere."""
    import torch
    torch.manual_seed(seed)
    factory, source = resolve_factory(spec)
    try:
        model = factory()
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(f"building {spec} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    model.eval()
    inputs = default_inputs(model, source, _parse_shape(input_shape), spec)
    return Loaded(model, inputs, factory, source, spec)


def load(args, progress) -> Loaded:
    progress.stage(f"building {args.model}")
    return build_model(args.model, args.input_shape, args.seed)


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------
class Progress:
    """Stage-by-stage progress on stderr (a tqdm bar when available)."""

    def __init__(self, stages: int, quiet: bool):
        self.quiet = quiet
        self.bar = None
        if not quiet:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=stages, file=sys.stderr, leave=False, dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]")
            except ImportError:  # pragma: no cover
                self.bar = None
        self.started = False

    def stage(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            if self.started:
                self.bar.update(1)
            self.started = True
            self.bar.set_description_str(text)
        else:  # pragma: no cover
            print(f"... {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            if self.started:
                self.bar.update(1)
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
def _idxs(text: str) -> list[int]:
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            out.extend(range(int(m.group(1)), int(m.group(2)) + 1))
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise CLIError(f"--idxs must be integers separated by commas (ranges like 4-7 "
                           f"allowed), got {part!r}") from None
    return out


def _build_graph(loaded: Loaded, progress):
    import prune_explorer as tp
    progress.stage("tracing the model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DG = tp.DependencyGraph().build_dependency(loaded.model, loaded.inputs)
    for w in caught:
        text = str(w.message)
        if text.startswith(("prune_explorer", "these layers were not called")):
            print(f"prune-explorer: warning: {text}", file=sys.stderr)
    return DG


def _ignored(loaded: Loaded, names: list[str] | None):
    if names:
        out = []
        for n in names:
            try:
                out.append(loaded.model.get_submodule(n))
            except AttributeError:
                raise CLIError(f"--ignore {n}: no such layer in {loaded.describe}") from None
        return out
    return default_ignored(loaded.model, loaded.source)


def _prune_kwargs(args, loaded: Loaded) -> dict:
    return dict(amount=args.amount, strategy=args.strategy,
                ignored_layers=_ignored(loaded, args.ignore), round_to=args.round_to,
                global_pruning=args.global_pruning, head_pruning=args.head_pruning,
                prune_hidden=not args.keep_hidden)


def cmd_plan(args) -> int:
    progress = Progress(3, args.quiet)
    try:
        loaded = load(args, progress)
        DG = _build_graph(loaded, progress)
        progress.stage(f"planning {args.layer}")
        plan = DG.get_pruning_plan(args.layer, args.side, _idxs(args.idxs), policy=args.policy)
    finally:
        progress.close()
    if args.json:
        print(plan.to_json(indent=1))
        return 0
    print(plan)
    print(f"{plan.macs_removed} MACs will be removed, {len(plan.layer_steps)} layers touched")
    return 0


def cmd_prune(args) -> int:
    import prune_explorer as tp
    progress = Progress(5 if args.out else 4, args.quiet)
    try:
        loaded = load(args, progress)
        DG = _build_graph(loaded, progress)
        progress.stage(f"pruning every group by {args.amount} ({args.strategy})")
        report = tp.prune_model(loaded.model, loaded.inputs, DG=DG, **_prune_kwargs(args, loaded))
        progress.stage("checking the pruned model")
        import torch
        with torch.no_grad():
            if isinstance(loaded.inputs, dict):
                loaded.model(**loaded.inputs)
            else:
                loaded.model(loaded.inputs)
        if args.out:
            progress.stage(f"saving to {args.out}")
            tp.save(loaded.model, args.out)
    finally:
        progress.close()
    print(report)
    if args.out:
        print(f"saved to {args.out} (weights: safetensors, pruning history: JSON); load with "
              f"tp.load({args.out!r}, model_factory)")
    return 0


def cmd_report(args) -> int:
    import prune_explorer as tp
    try:
        from prune_explorer.viz.report import write_report
    except ImportError as exc:
        raise CLIError(f"the HTML report is not available in this installation "
                       f"(prune_explorer.viz.report: {exc}); install prune_explorer[explorer]") \
            from None
    progress = Progress(4, args.quiet)
    try:
        loaded = load(args, progress)
        DG = _build_graph(loaded, progress)
        plan = report = None
        if args.layer:
            progress.stage(f"planning {args.layer}")
            if not args.idxs:
                raise CLIError("--layer needs --idxs (e.g. --idxs 2,6,9)")
            plan = DG.get_pruning_plan(args.layer, args.side, _idxs(args.idxs),
                                       policy=args.policy)
        else:
            progress.stage(f"planning every group by {args.amount} ({args.strategy}), dry run")
            report = tp.prune_model(loaded.model, loaded.inputs, DG=DG, dry_run=True,
                                    **_prune_kwargs(args, loaded))
        progress.stage(f"writing {args.html}")
        path = write_report(args.html, DG, plan=plan, report=report, title=args.title,
                            strategy=args.strategy, amount=args.amount, round_to=args.round_to)
    finally:
        progress.close()
    if report is not None:
        print(report)
    elif plan is not None:
        print(f"plan rooted at {plan.root}: {plan.params_removed} parameters, "
              f"{plan.macs_removed} MACs, {len(plan.layer_steps)} layers")
    print(f"report written to {path}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_explore(args) -> int:
    from .widget import app
    try:
        app.require_voila()
    except app.AppError as exc:
        raise CLIError(str(exc)) from None
    # ``kill`` (SIGTERM) stops it as Ctrl-C does: Voilà runs in a session of its own and
    # would outlive a CLI that just died. The handler goes in before the server starts: a
    # kill that lands right after the URL is printed must not find the default handler.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with app.Server(args.model, args.input_shape, args.seed, port=args.port) as server:
            try:
                # check the spec here (one line, like every command) while Voilà starts; the
                # model itself is built in the served kernel when the page opens
                resolve_factory(args.model)
                _parse_shape(args.input_shape)
                server.wait_ready()
            except app.AppError as exc:
                raise CLIError(str(exc)) from None
            how = None if args.no_browser else app.open_window(server.url)
            where = f"opened in {how}" if how else "open it in a browser"
            try:  # a kill from whoever read the URL may land at once: it stops cleanly too
                print(f"prune-explorer: the explorer on {args.model} is at {server.url} "
                      f"({where}; the page builds the model, then shows it). Ctrl-C stops it.",
                      flush=True)
                while server.proc.poll() is None:
                    time.sleep(0.3)
            except KeyboardInterrupt:
                print("prune-explorer: stopping", file=sys.stderr, flush=True)
                return 0
            raise CLIError(f"Voilà stopped unexpectedly: {server.log_tail(1)}")
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------
MODEL_HELP = ("torchvision:NAME, timm:NAME, hf:NAME (a Hugging Face model type such as bert, "
              "gpt2, llama, vit: small sizes, random weights, offline) or path/file.py:factory")


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .whole_model import STRATEGY_NAMES
    parser = _Parser(
        prog="prune-explorer",
        description="Structured pruning with automatic layer-dependency tracking: preview a "
                    "plan, prune a whole model and save it (safetensors + JSON history), or "
                    "write an HTML audit report. Models are built with random weights; nothing "
                    "is downloaded.",
        epilog="examples:\n"
               "  prune-explorer plan torchvision:resnet50 --layer layer1.0.conv1 --idxs 2,6,9\n"
               "  prune-explorer prune torchvision:resnet50 --amount 0.5 --strategy l1 "
               "--out pruned/\n"
               "  prune-explorer report torchvision:resnet50 --amount 0.5 --html report.html\n"
               "  prune-explorer explore torchvision:resnet18\n"
               "  prune-explorer prune hf:bert --amount 0.3 --input-shape 1,32 --keep-hidden\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"prune_explorer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p):
        p.add_argument("model", help=MODEL_HELP)
        p.add_argument("--input-shape", metavar="SHAPE",
                       help="example input shape, comma separated (default: 1,3,224,224 for "
                            "images, timm's input size, 1,3,299,299 for inception_v3; 1,16 "
                            "token ids for Hugging Face text models)")
        p.add_argument("--seed", type=int, default=0,
                       help="random seed for the weights and inputs (default: 0)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
        p.add_argument("--traceback", action="store_true",
                       help="show the Python traceback on errors")

    def plan_args(p, required: bool):
        p.add_argument("--layer", required=required, metavar="NAME",
                       help="root layer, as named by model.named_modules() (e.g. layer1.0.conv1)")
        p.add_argument("--idxs", required=required, metavar="I,J,...",
                       help="channels to remove, e.g. 2,6,9 or 0-7")
        p.add_argument("--side", choices=("out", "in"), default="out",
                       help="prune the layer's output channels (default) or its input channels")
        p.add_argument("--policy", choices=("cheapest", "heads", "dims"), default="cheapest",
                       help="how a request that splits attention heads or groups is widened "
                            "(default: cheapest)")

    def prune_args(p):
        p.add_argument("--amount", type=_amount, default=0.5,
                       help="fraction of each group's channels to remove (default: 0.5)")
        p.add_argument("--strategy", choices=[s for s in STRATEGY_NAMES if s != "taylor"],
                       default="l1", help="channel importance (default: l1)")
        p.add_argument("--round-to", type=_positive_int, metavar="N",
                       help="keep every group's channel count a multiple of N")
        p.add_argument("--global", dest="global_pruning", action="store_true",
                       help="rank channels across groups instead of per group")
        p.add_argument("--ignore", action="append", metavar="LAYER",
                       help="layer whose output channels are kept (repeatable; default: the "
                            "classifier, i.e. the last Linear)")
        p.add_argument("--head-pruning", choices=("heads", "dims"), default="heads",
                       help="attention: remove whole heads (default) or head dims")
        p.add_argument("--keep-hidden", action="store_true",
                       help="keep the residual stream (hidden size); prune heads and MLPs only")

    p = sub.add_parser("plan", help="print the pruning plan for some channels of one layer",
                       description="Trace the model and print the plan that removes channels "
                                   "--idxs of --layer: every coupled layer with its indices "
                                   "and the parameters and MACs removed. Nothing is changed.")
    common(p)
    plan_args(p, required=True)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("prune", help="prune every group of the model and save it",
                       description="Prune every prunable group of the model by --amount of its "
                                   "channels (tp.prune_model), print the report, and save the "
                                   "result with tp.save to --out.")
    common(p)
    prune_args(p)
    p.add_argument("--out", metavar="DIR",
                   help="directory (or file.safetensors) to save the pruned model to")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("report", help="write an HTML audit report of a prune",
                       description="Write a one-file interactive HTML report (graph, plan "
                                   "table, charts) of a whole-model prune (dry run: --amount, "
                                   "--strategy, ...) or of one plan (--layer and --idxs). In "
                                   "the page, a click on any layer shows the plan for the "
                                   "channels --strategy picks at --amount, or for channels the "
                                   "reader types. It opens offline. Nothing is changed.")
    common(p)
    prune_args(p)
    plan_args(p, required=False)
    p.add_argument("--html", required=True, metavar="FILE", help="where to write the report")
    p.add_argument("--title", help="report title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("explore", help="open the explorer on a model in a browser window",
                       description="Open the interactive explorer (graph, click a layer to "
                                   "preview its plan, charts, commit / undo / export) on a "
                                   "model, as a page of its own served by Voilà on 127.0.0.1: "
                                   "no notebook to run. Ctrl-C stops the server.")
    common(p)
    p.add_argument("--port", type=int, default=0,
                   help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true",
                   help="print the URL instead of opening a window")
    p.set_defaults(func=cmd_explore)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("prune-explorer: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is one line unless --traceback
        if args.traceback:
            raise
        print(f"prune-explorer: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    from .errors import PruningError
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    if not isinstance(exc, (CLIError, PruningError, FileNotFoundError, FileExistsError)):
        text = f"{type(exc).__name__}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
