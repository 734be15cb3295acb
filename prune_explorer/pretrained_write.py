"""Writing a pruned checkpoint shard by shard: read a shard's tensors one at a time, cut each
by the plan's exact tensor cuts (the ones ``exec`` makes), write the new shard, free it; then
the index, config.json, the other files and the history. All of it goes to a temporary
directory beside the target, renamed at the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from .hf_checkpoint import (CONFIG_FILE, INDEX_FILE, SINGLE_FILE, CheckpointError,
                            release_memory)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf",
                    ".index.json")


def cut(t: torch.Tensor, cuts: list[tuple[int, list[int]]]) -> torch.Tensor:
    """``t`` without the given indices along each dim (index_select of the kept ones)."""
    for dim, idxs in cuts:
        if not idxs:
            continue
        keep = torch.ones(t.shape[dim], dtype=torch.bool)
        keep[torch.as_tensor(idxs, dtype=torch.long)] = False
        t = torch.index_select(t, dim, keep.nonzero().reshape(-1))
    return t.contiguous()


def write_checkpoint(plan, out: str) -> None:
    ck = plan.checkpoint
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=parent)
    try:
        _write_all(plan, tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_all(plan, tmp: str) -> None:
    from safetensors.torch import save_file
    ck = plan.checkpoint
    cuts: dict[str, list[tuple[int, list[int]]]] = {}
    if plan.plan is not None:
        for name, dim, idxs in plan.plan.actions.cuts:
            cuts.setdefault(name, []).append((dim, idxs))
    target = plan.target_shapes
    stash: dict[str, torch.Tensor] = {}  # converted pieces that belong to a later shard
    total_size, total_params = 0, 0
    weight_map: dict[str, str] = {}
    for shard in ck.shards:
        tensors: dict[str, torch.Tensor] = {}
        for key in ck.keys_of(shard):
            if key in stash:
                tensors[key] = stash.pop(key)
                continue
            name = ck.module_of[key]
            src = ck.sources[name]
            if src.converter is None:
                t = cut(ck.read_key(key), cuts.get(name, []))
                _check(t, name, target, key)
                tensors[key] = t
                continue
            t = cut(ck.read(name), cuts.get(name, []))
            _check(t, name, target, key)
            for k, piece in ck.to_checkpoint(name, t).items():
                piece = piece.contiguous()
                if ck.file_of[k] == shard:
                    tensors[k] = piece
                else:
                    stash[k] = piece
            del t
        for k, t in tensors.items():
            weight_map[k] = shard
            total_size += t.numel() * t.element_size()
            total_params += t.numel()
        save_file(tensors, os.path.join(tmp, shard),
                  metadata=ck.shard_metadata.get(shard) or {"format": "pt"})
        del tensors
        release_memory()
    if stash:
        raise CheckpointError(f"{len(stash)} converted tensors ({next(iter(stash))}) belong to no "
                              f"shard; the checkpoint's index is inconsistent")
    if ck.shards != [SINGLE_FILE] or os.path.isfile(os.path.join(ck.path, INDEX_FILE)):
        meta = dict(ck.index_metadata)
        meta["total_size"] = total_size
        if "total_parameters" in meta:
            meta["total_parameters"] = total_params
        with open(os.path.join(tmp, INDEX_FILE), "w") as f:
            json.dump({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, f,
                      indent=2)
    config = dict(ck.config_dict)
    if plan.config_edits:
        config.update(plan.config_edits)
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    _copy_others(ck.path, tmp)
    _write_history(plan, tmp)


def _check(t: torch.Tensor, name: str, target, key: str) -> None:
    want = target.get(name)
    if want is not None and tuple(t.shape) != tuple(want):
        raise CheckpointError(f"{key}: after the cuts it has shape {list(t.shape)}, the plan "
                              f"predicts {list(want)}; nothing was written")


def _copy_others(src: str, dst: str) -> None:
    """Tokenizer, generation config, README...: every file that is not a weight or index."""
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, src)
        for f in files:
            if f == CONFIG_FILE and rel == "." or f.endswith(_WEIGHT_SUFFIXES) or \
                    f.startswith("."):
                continue
            target_dir = dst if rel == "." else os.path.join(dst, rel)
            os.makedirs(target_dir, exist_ok=True)
            shutil.copy2(os.path.join(root, f), os.path.join(target_dir, f))


def _write_history(plan, tmp: str) -> None:
    from . import __version__
    from .serialization import FORMAT, HISTORY_FILE, VERSION
    history = []
    p = plan.plan
    if p is not None:
        history.append({"kind": "prune_model", "root": p.root, "side": p.side,
                        "idxs": [int(i) for i in p.idxs][:4096],
                        "params_removed": int(p.params_removed),
                        "macs_removed": int(p.macs_removed), "actions": p.actions.to_dict(),
                        "settings": plan.settings})
    model = plan.DG.model
    cls = type(model)
    doc = {"format": FORMAT, "version": VERSION,
           "model_class": f"{cls.__module__}.{cls.__qualname__}",
           "prune_explorer_version": __version__, "torch_version": torch.__version__,
           "weights": "huggingface", "aliases": {}, "history": history,
           "config_edits": plan.config_edits or {}}
    with open(os.path.join(tmp, HISTORY_FILE), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
