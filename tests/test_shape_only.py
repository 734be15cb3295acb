"""Shape-only runs (prune_explorer/shape_only.py): heavy ops return placeholders of the exact
layout, and a trace made that way is the trace made with real values.

Each shape rule is compared with the real kernel over the configurations models use (strides,
padding, dilation, groups, transposed, ceil mode, train/eval); the trace of real models and of
the fuzzer's random ones must be identical either way; and a model whose control flow reads a
value must be traced with real values (the branch real values take, not the placeholder's).
"""

from __future__ import annotations

import random

import pytest
import torch
import torchvision
from torch import nn

import prune_explorer as tp
from prune_explorer import shape_only, tracing
from prune_explorer.layers import REGISTRY

aten = torch.ops.aten


def _layout(x):
    xs = x if isinstance(x, (tuple, list)) else (x,)
    return [None if t is None else (tuple(t.shape), t.stride(), t.dtype) for t in xs]


def _same_as_kernel(func, *args, **kwargs):
    rule = shape_only.RULES[func]
    predicted = rule(args, kwargs)
    assert predicted is not None, f"{func} rule declined {[getattr(a, 'shape', a) for a in args]}"
    assert _layout(predicted) == _layout(func(*args, **kwargs)), func


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_convolution_rule_matches_the_kernel(nd):
    rng = random.Random(nd)
    for _ in range(12):
        groups = rng.choice([1, 2, 4])
        cin, cout = 4 * rng.randint(1, 2), 4 * rng.randint(1, 3)
        k = [rng.randint(1, 3) for _ in range(nd)]
        stride = [rng.randint(1, 3) for _ in range(nd)]
        pad = [rng.randint(0, 2) for _ in range(nd)]
        dil = [rng.randint(1, 2) for _ in range(nd)]
        transposed = rng.random() < 0.3
        size = [rng.randint(7, 11) for _ in range(nd)]
        x = torch.randn(2, cin, *size)
        if transposed:
            w = torch.randn(cin, cout // groups, *k)
            out_pad = [rng.randint(0, min(s, d) - 1) for s, d in zip(stride, dil)]
        else:
            w = torch.randn(cout, cin // groups, *k)
            out_pad = [0] * nd
        b = torch.randn(cout) if rng.random() < 0.5 else None
        _same_as_kernel(aten.convolution.default, x, w, b, stride, pad, dil, transposed,
                        out_pad, groups)


def test_conv_rule_declines_channels_last_and_mismatches():
    rule = shape_only.RULES[aten.convolution.default]
    x = torch.randn(1, 4, 8, 8).to(memory_format=torch.channels_last)
    w = torch.randn(8, 4, 3, 3)
    assert rule((x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1), {}) is None
    # a channel mismatch is left to the real kernel, which raises its own message
    x = torch.randn(1, 5, 8, 8)
    assert rule((x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1), {}) is None


def test_matmul_and_norm_rules_match_the_kernels():
    _same_as_kernel(aten.mm.default, torch.randn(3, 5), torch.randn(4, 5).t())
    _same_as_kernel(aten.addmm.default, torch.randn(4), torch.randn(3, 5), torch.randn(5, 4))
    _same_as_kernel(aten.bmm.default, torch.randn(2, 3, 5), torch.randn(2, 5, 4))
    _same_as_kernel(aten.baddbmm.default, torch.randn(1, 3, 4), torch.randn(2, 3, 5),
                    torch.randn(2, 5, 4))
    x, c = torch.randn(2, 6, 5, 5), torch.randn(6)
    for training in (False, True):
        _same_as_kernel(aten.native_batch_norm.default, x, c, c, c.clone(), c.abs(),
                        training, 0.1, 1e-5)
    _same_as_kernel(aten._native_batch_norm_legit_no_training.default, x, c, c, c, c.abs(),
                    0.1, 1e-5)
    t = torch.randn(2, 7, 12)
    _same_as_kernel(aten.native_layer_norm.default, t, [12], torch.randn(12), None, 1e-5)
    _same_as_kernel(aten.native_layer_norm.default, t[:, 1:], [12], None, None, 1e-5)
    _same_as_kernel(aten.native_layer_norm.default, t, [7, 12], None, None, 1e-5)


def test_pooling_rules_match_the_kernels():
    rng = random.Random(0)
    for _ in range(20):
        k = rng.randint(1, 4)
        s = rng.randint(1, 3)
        p = rng.randint(0, k // 2)
        d = rng.randint(1, 2)
        ceil = rng.random() < 0.5
        x = torch.randn(1, 3, rng.randint(8, 13), rng.randint(8, 13))
        _same_as_kernel(aten.max_pool2d_with_indices.default, x, [k, k], [s, s], [p, p],
                        [d, d], ceil)
        _same_as_kernel(aten.avg_pool2d.default, x, [k, k], [s, s], [p, p], ceil)
    _same_as_kernel(aten._adaptive_avg_pool2d.default, torch.randn(2, 3, 9, 7), [1, 1])


def test_reduction_rules_match_the_kernels():
    x = torch.randn(2, 3, 5, 4)
    for op in (aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default):
        for dims in ([2, 3], [1], [-1], [0, 2], 3):
            for keep in (False, True):
                _same_as_kernel(op, x, dims, keep)
        _same_as_kernel(op, x, [1])  # keepdim left at its default
    assert shape_only.RULES[aten.mean.dim]((x.permute(0, 2, 3, 1), [1], True), {}) is None
    assert shape_only.RULES[aten.sum.dim_IntList]((x, [1]), {"dtype": torch.float64}) is None
    # on real data (an attention mask's sum, read later) the reduction really runs
    run = shape_only.Run()
    mask = torch.ones(2, 5)
    for _ in range(2):  # the second time too, once the signature is checked
        assert torch.equal(run.call(aten.sum.dim_IntList, (mask, [1]), {}),
                           torch.full((2,), 5.0))
        assert not run.is_tainted([run.call(aten.mean.dim, (mask, [1]), {})])
    placeholder = torch.full((2, 5), 3.0)
    run.mark(placeholder)
    again = run.call(aten.sum.dim_IntList, (placeholder, [1]), {})
    again = run.call(aten.sum.dim_IntList, (placeholder, [1]), {})  # checked: a placeholder
    assert run.is_tainted([again]) and again.shape == (2,)


def test_untagged_and_in_place_elementwise_ops_get_the_pointwise_rule():
    # hardswish carries no pointwise tag; gelu_ is the in-place form of a tagged op;
    # bernoulli_ is in place but random, and native_batch_norm is no elementwise op
    for func in (aten.hardswish.default, aten.hardswish_.default, aten.gelu_.default,
                 aten.threshold_.default):
        assert shape_only.op(func).pointwise, func
    # ``hardswish.out`` returns its ``out=`` tensor: the elementwise rule would return the input
    for func in (aten.bernoulli_.float, aten.native_batch_norm.default, aten.mean.dim,
                 aten.hardswish.out, aten.add.out):
        assert not shape_only.op(func).pointwise, func
    run = shape_only.Run()
    x = torch.empty(1, 4, 6, 6)
    run.mark(x)
    out = run.call(aten.hardswish_.default, (x,), {})  # first sight: checked against the kernel
    assert out is x
    again = torch.full((1, 4, 6, 6), -1.0)  # hardswish(-1) = -1/3
    run.mark(again)
    assert run.call(aten.hardswish_.default, (again,), {}) is again
    assert bool((again == -1.0).all()), "a placeholder was computed"


def test_attention_rules_match_the_kernels():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    sdpa = aten._scaled_dot_product_flash_attention_for_cpu.default
    _same_as_kernel(sdpa, q, k, v)
    # where the kernel refuses (another head size for v), the rule declines: the real kernel
    # then raises its own error
    assert shape_only.RULES[sdpa]((q, k, torch.randn(2, 3, 6, 8)), {}) is None
    m = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 8)
    args = (x, x, x, 8, 2, m.in_proj_weight, m.in_proj_bias, m.out_proj.weight,
            m.out_proj.bias)
    _same_as_kernel(aten._native_multi_head_attention.default, *args)
    _same_as_kernel(aten._native_multi_head_attention.default, *args, None, True, False)


def _same_trace(model, x):
    known = tp.DependencyGraph().prunes_itself
    a = tracing.trace(model, x, REGISTRY.is_opaque, shape_only=True, is_known=known)
    b = tracing.trace(model, x, REGISTRY.is_opaque, shape_only=False, is_known=known)
    assert a.nodes == b.nodes
    assert a.values == b.values
    assert (a.outputs, a.primary_outputs, a.shape_reads) == (
        b.outputs, b.primary_outputs, b.shape_reads)
    return a


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5",
                                  "squeezenet1_1"])
def test_shape_only_trace_equals_the_real_trace_on_torchvision(name):
    # (the whole torchvision zoo was compared the same way, all 76 identical:
    # benchmarks/results/shape_only_zoo.txt)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    _same_trace(model, torch.randn(1, 3, 64, 64))


def test_shape_only_trace_equals_the_real_trace_on_random_models():
    from fuzz_models import RandomDraw, random_model
    for seed in range(6):
        model, x = random_model(RandomDraw(seed))
        _same_trace(model.eval(), x)
        _same_trace(model.train(), x)


@pytest.mark.slow
def test_shape_only_trace_equals_the_real_trace_on_a_transformer():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, vocab_size=100)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 100, (1, 9))
    _same_trace(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})


class Branchy(nn.Module):
    """Takes the branch its values choose: the conv's output is positive by construction."""

    def __init__(self, swallow: bool = False, how: str = "bool"):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.yes = nn.Conv2d(4, 5, 1)
        self.no = nn.Conv2d(4, 6, 1)
        self.swallow, self.how = swallow, how
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(1.0)

    def forward(self, x):
        h = self.conv(x)
        if self.swallow:
            try:
                positive = bool(h.mean() > 0)
            except BaseException:  # model code that swallows everything
                positive = False
        elif self.how == "tolist":
            positive = h.mean().tolist() > 0
        else:
            positive = bool(h.mean() > 0)
        return (self.yes if positive else self.no)(h)


@pytest.mark.parametrize("kind", [{}, {"swallow": True}, {"how": "tolist"}])
def test_values_that_steer_the_code_are_real(kind):
    model = Branchy(**kind).eval()
    graph = _same_trace(model, torch.randn(1, 3, 4, 4))
    assert "yes" in graph.module_nodes and "no" not in graph.module_nodes


def test_values_of_inputs_and_parameters_stay_usable():
    """Reading an input-derived value (a mask check) needs no real compute: the run stays
    shape-only, and still records what the real run records."""

    class MaskCheck(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, mask):
            h = self.fc(x)
            if bool(mask.all()) and self.fc.weight.abs().sum() > 0:
                h = h * 2
            return h

    model = MaskCheck().eval()
    x, mask = torch.randn(2, 4), torch.ones(2, dtype=torch.bool)
    args, kwargs = tracing.normalize_inputs((x, mask))
    modules = list(model.named_modules())
    _graph, rec = tracing._trace_once(model, (x, mask), args, kwargs, modules,
                                      REGISTRY.is_opaque, "primary", True)
    assert rec.so.needs_values is None
    _same_trace(model, (x, mask))


def test_a_data_dependent_shape_is_traced_for_real():
    class Nonzero(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return h[h > 0].sum() + h.sum(0)

    model = Nonzero().eval()
    x = torch.randn(3, 4)
    args, kwargs = tracing.normalize_inputs(x)
    modules = list(model.named_modules())
    try:  # the first run may compute the matmul for real (its rule's check on the kernel)
        tracing._trace_once(model, x, args, kwargs, modules, REGISTRY.is_opaque, "primary", True)
    except shape_only.NeedsValues:
        pass
    with pytest.raises(shape_only.NeedsValues, match="index"):
        tracing._trace_once(model, x, args, kwargs, modules, REGISTRY.is_opaque, "primary", True)
    _same_trace(model, x)


def test_tracing_errors_come_from_the_real_run():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(5, 2, 1))
    with pytest.raises(tp.TracingError, match=r"in 1: .*expected input\[1, 4, 6, 6\] to have 5"):
        tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
