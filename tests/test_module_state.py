"""Tracing leaves a module's Python state as it found it, consistently: caches with their keys.

Each model caches something by input shape the way detection and diffusion libraries do, and
is traced in three states: never run, run at another input size, run at the example's size.
After a trace (a prune that removes nothing) the model computes exactly what it computed
before, at both sizes, and every attribute is the object it was; after a real prune it equals
its masked twin at the example's size.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin, outputs

SIZE, OTHER = 8, 6


class AnchorsKeyedByShape(nn.Module):
    """Ultralytics' Detect: anchors in a tensor attribute, keyed by a Python ``self.shape``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 2, 1)
        self.shape = None
        self.anchors = torch.empty(0)

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        if self.shape != y.shape:
            h, w = y.shape[2:]
            gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            self.anchors = torch.stack((gx, gy)).flatten(1).float() + 0.5
            self.shape = y.shape
        return y.flatten(2) + self.anchors


class GridDictCache(nn.Module):
    """A private dict of grids keyed by (H, W), not named like a cache."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)
        self._grids = {}

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        key = tuple(y.shape[2:])
        if key not in self._grids:
            self._grids[key] = torch.linspace(-1, 1, key[1]).expand(key)
        return y * self._grids[key]


class LazyChannelBuffer(nn.Module):
    """A buffer created on first use, sized by the channels and keyed by the width only: if
    the trace left it behind, the pruned model would reuse one of the old channel count."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.register_buffer("pos", None, persistent=False)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        c, w = h.shape[1], h.shape[3]
        if self.pos is None or self.pos.shape[-1] != w:
            self.pos = torch.ones(c, 1, 1) * torch.sin(0.1 * torch.arange(w, dtype=h.dtype))
        return self.conv2(h + self.pos)


MODELS = [AnchorsKeyedByShape, GridDictCache, LazyChannelBuffer]


def _state(model):
    """Every module's Python attributes and buffer slots, by identity."""
    internals = set(vars(nn.Module()))
    out = {}
    for name, m in model.named_modules():
        for k, v in m.__dict__.items():
            if k not in internals:
                out[(name, k)] = (v, tuple(v.items()) if isinstance(v, dict) else None)
        for k, v in m._buffers.items():
            out[(name, "buffer", k)] = (v, None)
    return out


def _same_state(a, b):
    return a.keys() == b.keys() and all(
        a[k][0] is b[k][0] and (a[k][1] is None or len(a[k][1]) == len(b[k][1]) and all(
            x[0] == y[0] and x[1] is y[1] for x, y in zip(a[k][1], b[k][1]))) for k in a)


def _model(cls, ran):
    torch.manual_seed(0)
    model = cls().eval()
    if ran is not None:
        with torch.no_grad():
            model(torch.randn(1, 3, ran, ran))
    return model


@pytest.mark.parametrize("ran", [None, OTHER, SIZE], ids=["never-ran", "ran-other", "ran-same"])
@pytest.mark.parametrize("cls", MODELS)
def test_a_trace_leaves_the_model_as_it_found_it(cls, ran):
    model = _model(cls, ran)
    x, other = torch.randn(1, 3, SIZE, SIZE), torch.randn(1, 3, OTHER, OTHER)
    before = _state(model)
    reference = copy.deepcopy(model)
    report = tp.prune_model(model, x, amount=0.01)  # traces; no group loses a channel
    assert report.params_after == report.params_before and report.plan is None
    assert _same_state(_state(model), before)
    for inp in (x, other, x):
        for got, want in zip(outputs(model, inp), outputs(reference, inp)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("ran", [None, OTHER, SIZE], ids=["never-ran", "ran-other", "ran-same"])
@pytest.mark.parametrize("cls", MODELS)
def test_a_real_prune_runs_and_matches_its_masked_twin(cls, ran):
    model = _model(cls, ran)
    x = torch.randn(1, 3, SIZE, SIZE)
    report = tp.prune_model(model, x, amount=0.5, dry_run=True)
    assert report.plan is not None and model.conv1.out_channels == 8
    assert_matches_twin(model, report.plan, x)
    assert model.conv1.out_channels == 4
    if cls is not LazyChannelBuffer or ran is None:
        # the model's own cache, made at another size before pruning, is the model's business
        y = outputs(model, torch.randn(1, 3, OTHER, OTHER))
        assert y[0].shape[-1] in (OTHER, OTHER * OTHER)


def test_the_detect_pattern_after_prune_model_without_a_prior_forward():
    """The issue's repro, on the hand-made Detect: prune straight after building, then run."""
    model = AnchorsKeyedByShape().eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    tp.prune_model(model, x, amount=0.5)
    assert model.shape is None and model.anchors.numel() == 0  # as built
    with torch.no_grad():
        assert model(x).shape == (1, 2, SIZE * SIZE)


@pytest.mark.parametrize("cls", MODELS)
def test_the_graph_says_whether_the_forward_writes_python_state(cls):
    """The check after exec saves and restores the modules' Python state only when the
    traced forward wrote some: a fresh model fills its cache (it writes), one that already
    ran at this size finds it (it does not), and a plain network never writes."""
    x = torch.randn(1, 3, SIZE, SIZE)
    assert tp.DependencyGraph().build_dependency(_model(cls, None), x).graph.writes_state
    assert not tp.DependencyGraph().build_dependency(_model(cls, SIZE), x).graph.writes_state
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    assert not tp.DependencyGraph().build_dependency(plain, x).graph.writes_state


def test_a_check_that_writes_state_leaves_it_as_it_was(monkeypatch):
    """A model that counts its calls in a Python int: the trace sees the write, so the check
    after exec restores the count (the model never ran, as far as its own state goes)."""

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.conv2(F.relu(self.conv1(x)))

    model = Counting().eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    DG = tp.DependencyGraph().build_dependency(model, x)
    assert DG.graph.writes_state and model.calls == 0
    DG.get_pruning_plan(model.conv1, tp.prune_conv, [0, 3]).exec()
    assert model.calls == 0 and model.conv1.out_channels == 6


def test_a_plain_layer_written_by_its_parent_is_put_back():
    """A plain torch layer's state is snapshotted whole and compared by identity: an
    attribute its parent adds to it, or replaces on it, during the forward is undone."""

    class Writer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)

        def forward(self, x):
            self.conv.last_input = x  # added on a plain child
            self.bn.eps = 0.5  # replaced on a plain child
            return self.bn(self.conv(x))

    model = Writer().eval()
    eps = model.bn.eps
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, SIZE, SIZE))
    assert not hasattr(model.conv, "last_input") and model.bn.eps is eps
    assert DG.graph.writes_state


def test_module_walk_lists_what_named_modules_lists():
    """The iterative walk: same names, same order, a shared module once (or every time it is
    reached, with remove_duplicate=False), None children skipped."""
    from prune_explorer.module_walk import named_modules
    shared = nn.Linear(2, 2)
    inner = nn.Sequential(shared, nn.ReLU(), nn.Sequential(nn.Tanh(), shared))
    model = nn.Sequential(inner, nn.Identity(), shared, inner)
    model.add_module("gone", None)
    for dedup in (True, False):
        ours = [(n, id(m)) for n, m in named_modules(model, remove_duplicate=dedup)]
        assert ours == [(n, id(m)) for n, m in model.named_modules(remove_duplicate=dedup)]
    assert tp.utils.count_params(model) == sum(p.numel() for p in model.parameters()) == 6
