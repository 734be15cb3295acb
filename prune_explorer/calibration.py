"""Data-aware importance for checkpoints larger than memory: the activation norms Wanda-sp
and FLAP score with, from forward passes over calibration tokens.

The forward runs through transformers + accelerate's big-model dispatch (``device_map``,
``max_memory``, disk offload): layers that do not fit stay on disk (or on the CPU) and are
brought to the execution device one at a time, so the model never needs to fit. Where a GPU
is available ``device_map="auto"`` uses it; on a CPU-only machine the same code runs on the
CPU. Each ``nn.Linear`` gets a forward pre-hook that sums the squares of its input features
over every calibration token; ``sqrt`` of that is Wanda's ``||X_j||``, and
``strategy="wanda"`` scores each weight ``|W_ij| * ||X_j||`` (summed over what a channel
removes). Tensors that are not the weight of a hooked Linear (fused MoE experts, norms)
are scored by ``|W|`` alone.
"""

from __future__ import annotations

import tempfile
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .errors import InvalidAmountError


def _batches(calibration) -> list[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        calibration = [calibration]
    out = []
    for b in calibration:
        b = torch.as_tensor(b)
        if b.dtype not in (torch.int64, torch.int32) or b.dim() not in (1, 2):
            raise InvalidAmountError("calibration must be token id batches: LongTensor [B, T] "
                                     "(or a list of them)")
        out.append(b.reshape(1, -1) if b.dim() == 1 else b)
    if not out:
        raise InvalidAmountError("calibration is empty: pass at least one batch of token ids")
    return out


def activation_norms(source, calibration: Iterable, *, device_map: str | dict = "auto",
                     max_memory: dict | None = None, offload_folder: str | None = None,
                     dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """``{linear module name: ||X_j|| per input feature}`` over the calibration tokens.

    ``source`` is a checkpoint directory. ``max_memory`` (e.g. ``{"cpu": "8GiB"}`` or
    ``{0: "20GiB", "cpu": "60GiB"}``) caps what accelerate keeps resident; the rest is
    offloaded to ``offload_folder`` (a temporary directory by default) and streamed
    layer by layer during each forward.
    """
    from .pretrained import load_config, model_class
    batches = _batches(calibration)
    config, ck = load_config(source)
    if ck is None:
        raise InvalidAmountError("strategy='wanda' runs the model: pass a checkpoint directory")
    cls = model_class(config)
    sums: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory(prefix="pe-offload-") as tmp:
        model = cls.from_pretrained(ck.path, device_map=device_map, max_memory=max_memory,
                                    offload_folder=offload_folder or tmp,
                                    dtype=dtype or "auto").eval()
        handles = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                handles.append(m.register_forward_pre_hook(_accumulate(name, sums)))
        try:
            device = _input_device(model)
            with torch.no_grad():
                for b in batches:
                    model(input_ids=b.to(device))
        finally:
            for h in handles:
                h.remove()
        del model
    return {n: s.sqrt().numpy() for n, s in sums.items()}


def _accumulate(name: str, sums: dict):
    def hook(module, args):
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return
        sq = x.detach().double().pow(2).reshape(-1, x.shape[-1]).sum(0).cpu()
        sums[name] = sums[name] + sq if name in sums else sq
    return hook


def _input_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings()
    hook = getattr(emb, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev) if not isinstance(dev, torch.device) else dev
    p = next(emb.parameters(), None)
    return p.device if p is not None and p.device.type != "meta" else torch.device("cpu")
