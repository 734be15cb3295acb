"""The correctness oracle: a pruned model must compute what its *masked twin* computes.

The masked twin is a copy of the original model in which every slice a plan would cut is
zeroed instead of removed (weight rows and columns, biases, norm scales, bare parameters).
Zeroed producer rows make a pruned channel carry nothing new, zeroed consumer columns make
sure nothing reads it: so, for models without channel-mixing norms, removing the channels
must leave the output unchanged (up to float error).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import prune_explorer as tp
import rule_coverage


def masked_twin(model: nn.Module, plan: tp.PruningPlan) -> nn.Module:
    twin = copy.deepcopy(model)
    params = dict(twin.named_parameters())
    with torch.no_grad():
        for name, dim, idxs in plan.actions.cuts:
            p = params.get(name)
            if p is not None:
                p.index_fill_(dim, torch.tensor(idxs, dtype=torch.long), 0.0)
        for mname, sets in plan.actions.opaque:
            m = twin.get_submodule(mname)
            if isinstance(m, nn.MultiheadAttention):
                _zero_mha(m, sets.get("embed", []))
    return twin


def _zero_mha(m: nn.MultiheadAttention, idxs) -> None:
    E = m.embed_dim
    idx = torch.tensor(idxs, dtype=torch.long)
    rows = torch.cat([idx, idx + E, idx + 2 * E])
    m.in_proj_weight.index_fill_(0, rows, 0.0)
    m.in_proj_weight.index_fill_(1, idx, 0.0)
    if m.in_proj_bias is not None:
        m.in_proj_bias.index_fill_(0, rows, 0.0)
    m.out_proj.weight.index_fill_(0, idx, 0.0)
    m.out_proj.weight.index_fill_(1, idx, 0.0)
    if m.out_proj.bias is not None:
        m.out_proj.bias.index_fill_(0, idx, 0.0)


def outputs(model: nn.Module, x):
    with torch.no_grad():
        if isinstance(x, dict):
            y = model(**x)
        elif isinstance(x, tuple):
            y = model(*x)
        else:
            y = model(x)
    return [t for t in tp.tracing.iter_tensors(y)]


def assert_matches_twin(model: nn.Module, plan: tp.PruningPlan, x, atol=1e-5, rtol=1e-4):
    """Execute ``plan`` on ``model`` and compare with the masked twin of the original."""
    model.eval()
    rule_coverage.record(plan)
    twin = masked_twin(model, plan).eval()
    expected = outputs(twin, x)
    before = tp.utils.count_params(model)
    plan.exec()
    got = outputs(model, x)
    assert before - tp.utils.count_params(model) == plan.params_removed
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        scale = max(1.0, float(e.abs().max())) if e.is_floating_point() and e.numel() else 1.0
        torch.testing.assert_close(g / scale, e / scale, atol=atol, rtol=rtol)
    return plan


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
