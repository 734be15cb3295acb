"""A Hugging Face checkpoint directory, read lazily: ``config.json``, the shard index and every
tensor's header (name, shape, dtype) without its data, then one tensor at a time through
safetensors' ``safe_open`` (memory-mapped; nothing else stays resident).

``Checkpoint.bind(model)`` maps checkpoint keys to the tensors of the model transformers builds
from the config: plain names, renamings, tied weights (``lm_head`` stored once as the
embedding) and conversions that build one module tensor from several stored ones (a Mixtral
checkpoint's per-expert ``w1``/``w3`` become one fused ``gate_up_proj``). The conversions are
transformers' own tables and operations, run forward to read and backward to write, so a
pruned checkpoint keeps the key names and layout it came with.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .errors import PruningError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_BLOCK_BYTES = 64 << 20  # scores are summed over row blocks of about this many fp32 bytes


class CheckpointError(PruningError, ValueError):
    """A checkpoint directory that cannot be read as the model its config describes."""


@dataclass
class Source:
    """Where one module tensor comes from: one stored key, or several joined by a converter."""

    keys: list[str]
    converter: object | None = None  # a transformers WeightConverter
    target: str = ""  # the converter's target name for these keys
    patterns: list[str] = field(default_factory=list)


class Checkpoint:
    """Headers and lazy tensors of a ``save_pretrained`` directory (safetensors, sharded or
    not). Raises ``CheckpointError`` naming the file when something is missing."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise CheckpointError(f"{self.path} is not a directory; pass a Hugging Face "
                                  f"checkpoint directory (config.json + *.safetensors)")
        cfg = os.path.join(self.path, CONFIG_FILE)
        if not os.path.isfile(cfg):
            raise CheckpointError(f"{self.path} has no {CONFIG_FILE}; a checkpoint written by "
                                  f"save_pretrained has one (the model cannot be built without it)")
        with open(cfg) as f:
            self.config_dict = json.load(f)
        self.index_metadata: dict = {}
        self.file_of: dict[str, str] = {}  # key -> shard file name
        self.shards: list[str] = []
        self.headers: dict[str, tuple[tuple[int, ...], str]] = {}  # key -> (shape, dtype)
        self.shard_metadata: dict[str, dict] = {}
        self._read_index()
        self.sources: dict[str, Source] = {}
        self.module_of: dict[str, str] = {}
        self.model = None

    # ---- layout -------------------------------------------------------------------------------
    def _read_index(self) -> None:
        index = os.path.join(self.path, INDEX_FILE)
        single = os.path.join(self.path, SINGLE_FILE)
        if os.path.isfile(index):
            with open(index) as f:
                doc = json.load(f)
            self.index_metadata = dict(doc.get("metadata") or {})
            self.file_of = dict(doc["weight_map"])
            self.shards = list(dict.fromkeys(self.file_of.values()))
        elif os.path.isfile(single):
            self.shards = [SINGLE_FILE]
        else:
            found = sorted(f for f in os.listdir(self.path) if f.endswith((".bin", ".pt", ".pth")))
            extra = (f" (it holds {', '.join(found[:3])}: convert them to safetensors first, "
                     f"e.g. load and save_pretrained once)") if found else ""
            raise CheckpointError(f"{self.path} has neither {INDEX_FILE} nor {SINGLE_FILE}: only "
                                  f"safetensors checkpoints can be read tensor by tensor{extra}")
        from safetensors import safe_open
        for shard in self.shards:
            file = os.path.join(self.path, shard)
            if not os.path.isfile(file):
                n = sum(1 for v in self.file_of.values() if v == shard)
                raise CheckpointError(f"shard {shard} is listed in {INDEX_FILE} ({n} tensors) but "
                                      f"is missing from {self.path}; the checkpoint is incomplete")
            try:
                with safe_open(file, framework="pt") as f:
                    keys = list(f.keys())
                    self.shard_metadata[shard] = dict(f.metadata() or {})
                    for k in keys:
                        sl = f.get_slice(k)
                        self.headers[k] = (tuple(int(s) for s in sl.get_shape()),
                                           str(sl.get_dtype()))
                        self.file_of.setdefault(k, shard)
            except (OSError, RuntimeError, ValueError) as exc:
                if isinstance(exc, CheckpointError):
                    raise
                raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None
        missing = [k for k in self.file_of if k not in self.headers]
        if missing:
            raise CheckpointError(f"{INDEX_FILE} says {missing[0]!r} is in "
                                  f"{self.file_of[missing[0]]}, which does not hold it "
                                  f"({len(missing)} such tensors); the checkpoint is damaged")

    def keys_of(self, shard: str) -> list[str]:
        return [k for k, s in self.file_of.items() if s == shard]

    @property
    def nbytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.path, s)) for s in self.shards)

    # ---- binding to a model -------------------------------------------------------------------
    def bind(self, model: nn.Module) -> "Checkpoint":
        """Map every checkpoint key to ``model``'s tensors (names as ``state_dict`` gives them;
        tied tensors under their first name) and check shapes against the config's."""
        self.model = model
        names = _canonical_names(model)
        shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
        renamings, converters = _transforms(model)
        by_pattern = {p: c for c in converters for p in c.source_patterns}
        prefix = getattr(model, "base_model_prefix", None)
        from transformers.core_model_loading import dot_natural_key, rename_source_key
        sources: dict[str, Source] = {}
        unknown = []
        for key in sorted(self.headers, key=dot_natural_key):
            new, pattern = rename_source_key(key, renamings, converters, prefix, shapes)
            if new not in shapes and key in shapes:
                new, pattern = key, None
            if new not in shapes:
                unknown.append(key)
                continue
            canon = names.get(new, new)
            if pattern is None:
                if canon in sources and sources[canon].converter is None:
                    sources[canon].keys.append(key)  # a tied copy stored twice
                else:
                    sources[canon] = Source([key])
                self.module_of[key] = canon
                continue
            src = sources.setdefault(canon, Source([], by_pattern[pattern], new))
            src.keys.append(key)
            src.patterns.append(pattern)
            self.module_of[key] = canon
        self.sources = sources
        if unknown:
            raise CheckpointError(
                f"{self.path}: tensor {unknown[0]!r} ({len(unknown)} in all) is not a tensor of "
                f"{type(model).__name__} built from config.json; the checkpoint and its config "
                f"disagree")
        persistent = set(shapes)
        missing = [n for n in dict.fromkeys(names.values()) if n in persistent
                   and n not in sources]
        if missing:
            raise CheckpointError(
                f"{self.path}: no shard holds {missing[0]!r} ({len(missing)} tensors of the model "
                f"missing); the checkpoint is incomplete or was saved from another model")
        for name, src in sources.items():
            if src.converter is None:
                for key in src.keys:
                    have = self.headers[key][0]
                    if have != shapes[name]:
                        raise CheckpointError(
                            f"{self.file_of[key]}: tensor {key!r} has shape {list(have)} but "
                            f"config.json makes it {list(shapes[name])}; the checkpoint does not "
                            f"match its config")
        return self

    # ---- reading ------------------------------------------------------------------------------
    def read_key(self, key: str) -> torch.Tensor:
        from safetensors import safe_open
        with safe_open(os.path.join(self.path, self.file_of[key]), framework="pt") as f:
            return f.get_tensor(key)

    def read(self, name: str) -> torch.Tensor:
        """One module tensor (joined from its stored pieces if a converter builds it)."""
        src = self.sources[name]
        if src.converter is None:
            return self.read_key(src.keys[0])
        conv = copy.deepcopy(src.converter)
        for key, pattern in zip(src.keys, src.patterns):
            conv.add_tensor(src.target, key, pattern, self.read_key(key))
        out = conv.convert(src.target, model=self.model, config=self.model.config)
        t = next(iter(out.values()))
        return t[0] if isinstance(t, list) else t

    def to_checkpoint(self, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored pieces of a (cut) module tensor, under the keys it was read from."""
        src = self.sources[name]
        if src.converter is None:
            return {key: tensor for key in src.keys}
        from transformers.core_model_loading import revert_weight_conversion
        out = revert_weight_conversion(self.model, {src.target: tensor})
        if set(out) != set(src.keys):
            raise CheckpointError(
                f"writing {name} back in the checkpoint's layout gave keys {sorted(out)[:3]}, not "
                f"the {len(src.keys)} it was read from ({src.keys[0]}, ...); this conversion "
                f"cannot be reversed")
        return out

    def scores(self, name: str, dim: int, power: int, col_weights: np.ndarray | None = None
               ) -> np.ndarray:
        """sum over every dim but ``dim`` of |t|^power (times ``col_weights`` along dim 1 when
        given: Wanda's |W_ij| * ||X_j||), read in row blocks so a big tensor never sits in
        memory as float32 at once."""
        src = self.sources[name]
        if src.converter is not None:
            return block_scores(iter([self.read(name)]), dim, power, col_weights)
        from safetensors import safe_open
        key = src.keys[0]
        shape = self.headers[key][0]
        with safe_open(os.path.join(self.path, self.file_of[key]), framework="pt") as f:
            sl = f.get_slice(key)
            if len(shape) < 2:
                return block_scores(iter([sl[:]]), dim, power, col_weights)
            row = max(int(np.prod(shape[1:])) * 4, 1)
            step = max(_BLOCK_BYTES // row, 1)
            blocks = (sl[i:i + step] for i in range(0, shape[0], step))
            out = block_scores(blocks, dim, power, col_weights)
        release_memory()
        return out


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).
    Tensors of 10-30 MB are carved from the heap, and a heap fragmented by a thousand of them
    would hold their memory: the resident size would grow with the number of layers."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def block_scores(blocks: Iterator[torch.Tensor], dim: int, power: int,
                 col_weights: np.ndarray | None = None) -> np.ndarray:
    """Per-index sum of |x|^power along ``dim`` over row blocks (dim 0 split in blocks)."""
    parts, total = [], None
    w = torch.as_tensor(col_weights, dtype=torch.float32) if col_weights is not None else None
    for b in blocks:
        if w is None and b.dim() > 1:
            # one fused reduction that upcasts on the fly: no float32 copy of the block
            dims = tuple(d for d in range(b.dim()) if d != (0 if dim == 0 else dim))
            s = torch.linalg.vector_norm(b, ord=power, dim=dims, dtype=torch.float32)
            s = s ** power if power != 1 else s
            if dim == 0:
                parts.append(s)
            else:
                s = s.sum(0) if s.dim() > 1 else s
                total = s if total is None else total + s
            continue
        a = b.float()
        a = a.abs() if power == 1 else a * a
        if w is not None:
            a = a * w.reshape([1, -1] + [1] * (a.dim() - 2))
        if dim == 0:
            parts.append(a.reshape(a.shape[0], -1).sum(1))
        else:
            s = a.sum(0)
            s = s.reshape(s.shape[0], -1).sum(1) if dim == 1 else s.transpose(0, dim - 1).reshape(
                s.shape[dim - 1], -1).sum(1)
            total = s if total is None else total + s
    out = torch.cat(parts) if dim == 0 else total
    return out.double().numpy()


def _canonical_names(model: nn.Module) -> dict[str, str]:
    """Every name of every parameter/buffer -> the first name of that tensor (tied weights)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        prefix = mname + "." if mname else ""
        for attr, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is None:
                continue
            name = prefix + attr
            out[name] = first.setdefault(id(t), name)
    return out


def _transforms(model: nn.Module):
    """transformers' renamings and converters for this model (empty for plain checkpoints)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming
    except ImportError:  # pragma: no cover - transformers without conversion tables
        return [], []
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    return renamings, converters
