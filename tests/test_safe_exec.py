"""Exec never leaves a broken model: after the surgery one forward on the example inputs
(heavy ops shape-only) checks that the model runs and that its outputs have the predicted
shapes; a plan that is wrong somewhere fails at exec, names the layer, and leaves the model
bit for bit as it was. The check itself changes nothing (norm statistics, RNG, attributes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from prune_explorer import op_rules
from oracle import assert_matches_twin, snapshot, state_equal


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.up = nn.PixelShuffle(2)
        self.head = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return self.head(self.up(self.conv(x)))


def _wrong_pixel_shuffle(ctx) -> None:
    """A broken rule: pixel_shuffle taken for an elementwise op (channel i -> channel i)."""
    src, dst = ctx.arg(0), ctx.out(0)
    ctx.map(src, 1, dst, 1, None, "wrong")
    ctx.same(src, 0, dst, 0, "batch")


def test_a_wrong_rule_fails_at_exec_and_restores_the_model(monkeypatch):
    monkeypatch.setitem(op_rules.RULES, "pixel_shuffle", _wrong_pixel_shuffle)
    model = Shuffle().eval()
    x = torch.randn(1, 3, 6, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = snapshot(model)
    plan = DG.get_pruning_plan(model.conv, tp.prune_conv, idxs=[0])
    with pytest.raises(tp.PlanExecutionError, match=r"restored unchanged.*\bup\b"):
        plan.exec()
    assert state_equal(snapshot(model), before)
    assert model.conv.out_channels == 16 and model.head.in_channels == 4
    assert not plan.executed


def test_the_right_rule_executes_and_matches_the_twin():
    model = Shuffle().eval()
    x = torch.randn(1, 3, 6, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(model.conv, tp.prune_conv, idxs=[0])
    assert_matches_twin(model, plan, x)  # executes it
    assert model.conv.out_channels == 12 and model.head.in_channels == 3


class Literal(nn.Module):
    """Code that reads a size from a literal: after pruning, its reshape breaks."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x).reshape(x.shape[0], 2, 4)
        return self.b(h.reshape(x.shape[0], 8))


def test_code_reading_a_size_we_do_not_update_fails_at_exec():
    model = Literal().eval()
    x = torch.randn(2, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = snapshot(model)
    plan = DG.get_pruning_plan(model.a, "out", idxs=[1, 2])
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged.*shape '\\[2, 2, 4\\]'"):
        plan.exec()
    assert state_equal(snapshot(model), before)
    plan = DG.get_pruning_plan(model.a, "out", idxs=[1, 2])  # the graph was kept: plan again
    with pytest.raises(tp.PlanExecutionError):
        plan.exec()


def _wrong_slice(ctx) -> None:
    """A broken rule: x[:, :k] taken for the identity (pruned channels pass through)."""
    src, dst = ctx.arg(0), ctx.out(0)
    for i in range(len(ctx.shape(src))):
        if ctx.shape(src)[i] == ctx.shape(dst)[i]:
            ctx.same(src, i, dst, i, "slice")
        else:
            ctx.map(src, i, dst, i, None, "wrong slice")


class Crop(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.conv(x)[:, :6]


def test_an_output_of_another_shape_than_predicted_fails_at_exec(monkeypatch):
    monkeypatch.setitem(op_rules.RULES, "slice", _wrong_slice)
    model = Crop().eval()
    x = torch.randn(1, 3, 4, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = snapshot(model)
    plan = DG.get_pruning_plan(model.conv, tp.prune_conv, idxs=[0], allow_output_change=True)
    with pytest.raises(tp.PlanExecutionError, match=r"output 0 .* \[1, 6, 4, 4\] where the plan "
                                                    r"predicted \[1, 5, 4, 4\]"):
        plan.exec()
    assert state_equal(snapshot(model), before)


class Stateful(nn.Module):
    """Training mode: batch norm statistics, dropout's RNG and an attribute set in forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        h = self.drop(F.relu(self.bn(self.conv(x))))
        self.last_hidden = h
        return self.head(h)


def test_the_check_changes_no_statistics_rng_or_attributes():
    model = Stateful().train()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    DG = tp.DependencyGraph().build_dependency(model, x)
    mean, var = model.bn.running_mean.clone(), model.bn.running_var.clone()
    batches = int(model.bn.num_batches_tracked)
    rng = torch.get_rng_state()
    DG.get_pruning_plan(model.conv, tp.prune_conv, idxs=[1, 4]).exec()
    keep = [0, 2, 3, 5]
    assert torch.equal(model.bn.running_mean, mean[keep])
    assert torch.equal(model.bn.running_var, var[keep])
    assert int(model.bn.num_batches_tracked) == batches
    assert torch.equal(torch.get_rng_state(), rng)
    assert "last_hidden" not in vars(model)
    assert model.training
    assert model(x).shape == (2, 2, 6, 6)


def test_verify_false_skips_the_check(monkeypatch):
    monkeypatch.setitem(op_rules.RULES, "pixel_shuffle", _wrong_pixel_shuffle)
    model = Shuffle().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 6, 6))
    plan = DG.get_pruning_plan(model.conv, tp.prune_conv, idxs=[0])
    plan.exec(verify=False)  # the caller's risk: this model no longer runs
    assert plan.executed
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 6, 6))



class Thresholded(nn.Module):
    """Returns the values whose score is positive (a detector's boxes after thresholding),
    a tensor made with their count (read from ``shape``), and one stacked from per-box tensors written through a
    view (torchvision's paste_masks_in_image): sizes the values decide. Pruning channel 0 of
    ``a`` turns every score negative (score = 1 - 0.5 = 0.5 before, -0.5 after)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.a.weight.zero_()
            self.a.bias.fill_(1.0)
            self.b.weight.zero_()
            self.b.bias.zero_()
            self.b.weight[0, :, 0, 0] = torch.tensor([1.0, -0.5])

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        keep = torch.where(y[:, 0].flatten() > 0)[0]
        kept = y[:, 1].flatten()[keep]
        rows = []
        for i in range(len(keep)):
            row = torch.zeros(3)
            row[:1] = kept[i]
            rows.append(row)
        pasted = torch.stack(rows) if rows else x.new_zeros(0, 3)
        return kept, y, torch.zeros(keep.shape[0], 2), pasted  # (len() drops the source)


@pytest.mark.filterwarnings("ignore:prune_explorer does not know")
def test_outputs_whose_size_values_decide_are_not_held_to_the_traced_size():
    from prune_explorer.verify import value_sized
    model = Thresholded().eval()
    x = torch.randn(1, 3, 6, 6)
    assert [t.shape[0] for t in model(x)] == [36, 1, 36, 36]
    DG = tp.DependencyGraph().build_dependency(model, x)
    graph = DG.graph
    sized = value_sized(graph)
    assert [v in sized for v in graph.outputs] == [True, False, True, True]
    DG.get_pruning_plan(model.a, tp.prune_conv, idxs=[0]).exec()  # 36 kept before, 0 after
    assert [tuple(t.shape) for t in model(x)] == [(0,), (1, 2, 6, 6), (0, 2), (0, 3)]
    assert model.a.out_channels == 1


class InsistsAfterAttention(nn.Module):
    """nn.MultiheadAttention is pruned by its registry entry (an opaque layer, not tensor
    cuts); the code after it refuses the new width, so the exec must undo that layer too."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        a, _ = self.attn(h, h, h)
        assert a.shape[-1] == 8, "this model insists on 8 features"
        return self.head(a)


def test_a_failed_exec_restores_an_opaque_layer_bit_for_bit():
    model = InsistsAfterAttention().eval()
    x = torch.randn(2, 5, 4)
    DG = tp.DependencyGraph().build_dependency(model, x)
    before = snapshot(model)
    params = dict(model.named_parameters())
    plan = DG.get_pruning_plan(model.inp, "out", [0, 4])
    assert "attn" in {s.target for s in plan.layer_steps}
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged.*insists on 8"):
        plan.exec()
    assert state_equal(snapshot(model), before)
    assert all(p is params[n] for n, p in model.named_parameters())
    assert (model.attn.embed_dim, model.attn.num_heads, model.attn.head_dim) == (8, 2, 4)
    # the sizes of its own children (out_proj) come back too
    assert (model.attn.out_proj.in_features, model.attn.out_proj.out_features) == (8, 8)


class Gain(nn.Module):
    """A user's layer pruned by its own function, with attribute names of one letter and
    with ``_`` second (the snapshot keeps every public attribute, whatever its name)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.g_init = n, 1.0
        self.gain = nn.Parameter(torch.linspace(1, 2, n))

    def forward(self, x):
        return x * self.gain


def prune_gain(layer, idxs, inplace=True, dry_run=False):
    if dry_run:
        return layer, len(idxs)
    keep = [i for i in range(layer.n) if i not in idxs]
    layer.n = len(keep)
    del layer.g_init  # a prune function may drop attributes: a rollback brings them back
    layer.gain = nn.Parameter(layer.gain.data[keep])
    return layer, len(idxs)


class WithGain(nn.Module):
    def __init__(self, insist):
        super().__init__()
        self.insist = insist
        self.inp, self.gain, self.head = nn.Linear(4, 8), Gain(8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.gain(self.inp(x))
        assert not self.insist or h.shape[-1] == 8, "this model insists on 8 features"
        return self.head(h)


@pytest.mark.parametrize("insist", [False, True])
def test_a_user_layer_is_pruned_or_restored_with_all_its_attributes(insist):
    model = WithGain(insist).eval()
    x = torch.randn(2, 4)
    DG = tp.DependencyGraph()
    DG.register_customized_layer(Gain, in_ch_pruning_fn=prune_gain, out_ch_pruning_fn=prune_gain,
                                 get_in_ch_fn=lambda l: l.n, get_out_ch_fn=lambda l: l.n)
    DG.build_dependency(model, x)
    plan = DG.get_pruning_plan(model.inp, "out", [0, 4])
    if not insist:
        plan.exec()
        assert model.gain.n == 6 and model.gain.gain.shape == (6,) and model(x).shape == (2, 3)
        return
    before = snapshot(model)
    with pytest.raises(tp.PlanExecutionError, match="restored unchanged.*insists on 8"):
        plan.exec()
    assert state_equal(snapshot(model), before)
    assert (model.gain.n, model.gain.g_init) == (8, 1.0)


class WritesBuffers(nn.Module):
    """A forward that writes its buffers three ways: an in-place op on real data, ``.data``
    assigned, and the buffer replaced in ``_buffers``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("seen", torch.tensor([3.0]))
        self.register_buffer("table", torch.arange(4.0))
        self.register_buffer("swapped", torch.ones(2))

    def forward(self, x):
        self.seen.add_(1)
        self.table.data = torch.zeros(7)
        self._buffers["swapped"] = torch.zeros(2)
        return self.bn(self.conv(x))


def test_the_shape_only_check_puts_back_buffers_it_wrote():
    from prune_explorer import verify
    model = WritesBuffers().eval()
    x = torch.randn(1, 3, 8, 8)
    before = {n: (b, b.data_ptr(), b.clone()) for n, b in model.named_buffers()}
    verify.check_model_runs(model, x, [(1, 4, 6, 6)], python_state=False)
    for n, b in model.named_buffers():
        obj, ptr, value = before[n]
        assert b is obj and b.data_ptr() == ptr and torch.equal(b, value), n


def test_the_shape_only_check_copies_no_buffer_when_nothing_writes(monkeypatch):
    from prune_explorer import forward_io, verify
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True)).eval()
    for _ in range(2):  # each rule is checked against the real kernel once: that one writes
        verify.check_model_runs(model, torch.randn(1, 3, 8, 8), [(1, 4, 6, 6)],
                                python_state=False)
    copies = []
    real = forward_io.BufferGuard.snapshot
    monkeypatch.setattr(forward_io.BufferGuard, "snapshot",
                        lambda self: (copies.append(1), real(self))[1])
    verify.check_model_runs(model, torch.randn(1, 3, 8, 8), [(1, 4, 6, 6)], python_state=False)
    assert copies == []  # eval BatchNorm and an in-place ReLU on placeholders write nothing
    model.train()
    mean = model[1].running_mean.clone()
    verify.check_model_runs(model, torch.randn(1, 3, 8, 8), [(1, 4, 6, 6)], python_state=False)
    assert copies  # training BatchNorm counts its batches: a real write
    assert int(model[1].num_batches_tracked) == 0 and torch.equal(model[1].running_mean, mean)


def test_tracing_puts_back_buffers_it_wrote():
    """The trace holds buffers like the check: written in place, ``.data`` assigned, or
    replaced in ``_buffers``, each is the same object on the same storage with its values."""
    model = WritesBuffers().eval()
    before = {n: (b, b.data_ptr(), b.clone()) for n, b in model.named_buffers()}
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    for n, b in model.named_buffers():
        obj, ptr, value = before[n]
        assert b is obj and b.data_ptr() == ptr and torch.equal(b, value), n


def test_a_shape_only_trace_copies_buffers_only_when_a_forward_writes(monkeypatch):
    from prune_explorer import forward_io
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True)).eval()
    x = torch.randn(1, 3, 8, 8)
    tp.DependencyGraph().build_dependency(model, x)  # each rule checked once against torch
    copies = []
    real = forward_io.BufferGuard.snapshot
    monkeypatch.setattr(forward_io.BufferGuard, "snapshot",
                        lambda self: (copies.append(1), real(self))[1])
    tp.DependencyGraph().build_dependency(model, x)
    assert copies == []  # eval: nothing writes a buffer, nothing is copied
    model.train()
    mean = model[1].running_mean.clone()
    tp.DependencyGraph().build_dependency(model, x)
    assert copies  # training BatchNorm updates its statistics: copied first, then put back
    assert int(model[1].num_batches_tracked) == 0 and torch.equal(model[1].running_mean, mean)
