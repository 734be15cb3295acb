"""Regenerate notebooks/01_why_layers_are_coupled.ipynb and 02_audit_a_plan.ipynb and execute
them on a fresh kernel, so they are committed with their outputs (PNG pictures, tables).

    python notebooks/build_01_02.py          # both
    python notebooks/build_01_02.py 01       # one of them

The PNGs of notebook 01 are also written to notebooks/figures/. The widget *state* is not
stored (``KEEP_WIDGET_STATE``): it would carry every explorer's SVG, table and charts again
next to the static pictures (~2 MB more for notebook 01). A widget view saved without its
state cannot render, so those outputs keep only their text line ("run the cell in JupyterLab
to explore"); running the cell brings the live explorer back.
tests/test_notebooks.py executes the committed notebooks and checks they match this script.
"""

from __future__ import annotations

import pathlib
import sys

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).parent
KEEP_WIDGET_STATE = False
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

md = nbformat.v4.new_markdown_cell
code = nbformat.v4.new_code_cell

# ----------------------------------------------------------------------------------------------
# 01 · why layers are coupled
# ----------------------------------------------------------------------------------------------
NB01 = [
    md("""# 01 · Why layers are coupled

Removing output channel *i* of a layer is never a local edit. Every tensor that carries that
channel further has to lose its copy of it too, at the index where the channel lands: the next
layer's input weights, a BatchNorm's statistics, the other operand of an add, a slice of a
concatenation, a head of an attention. prune_explorer finds these couplings by tracing the
model. This notebook shows one tiny model per kind of coupling:

| § | coupling | how an index maps |
|---|---|---|
| 1 | conv → conv | identity |
| 2 | conv → BatchNorm → conv | identity (BatchNorm keeps 4 numbers per channel) |
| 3 | conv → flatten → linear | channel *c* of C×7×7 → features 49·c … 49·c+48 |
| 4 | residual add | identity, but across every layer that adds into the stream |
| 5 | concat (DenseNet) | shifted by the width of the pieces in front |
| 6 | split / chunk | piece *c // size*, slot *c % size*; the same slot in every piece |
| 7 | grouped and depthwise conv | a whole group, or the same slot in every group |
| 8 | attention heads | whole heads, or the same head_dim slots in every head |
| 9 | permute → LayerNorm → Linear (ConvNeXt) | identity, along a moved axis |

Each section has:

- the **explorer** on the model, with the root layer selected and a few channels typed in. In
  JupyterLab it is live: click any other layer to see its coupling, hover a node for its
  mapped indices and *why* it is coupled;
- a **static picture** of the same plan (for GitHub and other viewers where widgets don't run):
  the explorer's graph with the plan highlighted and the mapped indices written under each
  pruned layer, and the **plan table**;
- a **check**: the plan is executed on a copy of the model, and the pruned model must compute
  exactly what its *masked twin* computes. The masked twin is the original model with every
  slice the plan would cut set to zero instead of removed (`tests/oracle.py`, the oracle the
  test suite uses). A missed coupling or a wrongly mapped index would make the outputs differ.

Colours: **root** (amber, the layer you chose), **output channels pruned** (red),
**input channels pruned** (blue), **pass-through ops** (violet, dashed). Orange edges carry
the pruned channels. All models are randomly initialised and tiny; the notebook runs in
seconds on a CPU."""),
    code("""import copy, pathlib, sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import prune_explorer as tp
from prune_explorer import Explorer
from plan_pictures import show_plan  # next to this notebook: PNG of the highlighted graph + table

sys.path.insert(0, str(pathlib.Path.cwd().parent / "tests"))
from oracle import assert_matches_twin  # the test suite's oracle: pruned == masked twin

torch.manual_seed(0)


def describe(model, name):
    \"\"\"A layer's repr, or a bare parameter's shape.\"\"\"
    try:
        return repr(model.get_submodule(name))
    except AttributeError:
        owner, _, attr = name.rpartition(".")
        return f"Parameter {tuple(getattr(model.get_submodule(owner), attr).shape)}"


def check(ex, x, idxs=None, policy="cheapest", twin=assert_matches_twin):
    \"\"\"Plan the explorer's prune again on a copy of its model (the explorer keeps its own),
    execute it and compare the pruned copy with the masked twin of the original.\"\"\"
    model = copy.deepcopy(ex.model)
    DG = tp.DependencyGraph().build_dependency(model, x)
    plan = DG.get_pruning_plan(ex.root, "out", ex.controls.indices if idxs is None else idxs,
                               policy=policy)
    if idxs is None:  # the very plan the explorer previews
        assert [(s.target, s.idxs) for s in plan.steps] == \\
            [(s.target, s.idxs) for s in ex.plan.steps]
    print(plan)
    twin(model, plan, x)  # executes the plan, then compares the outputs with the twin's
    print(f"{twin.__name__}: OK, the pruned model computes what its twin computes "
          f"({plan.params_removed:,} parameters removed)")
    for s in plan.layer_steps:
        print(f"  {s.target:12} now {describe(model, s.target)}")
    return model"""),

    # 1 ----------------------------------------------------------------------------------------
    md("""## 1 · conv → conv

`conv1` has 8 filters, so it produces 8 channels. `conv2`'s weight is 16 × **8** × 3 × 3: one
3×3 slice for every (output channel, input channel) pair, and `conv2.weight[:, i]` is the slice
that reads channel *i*. Remove filter *i* of `conv1` (its weight row `conv1.weight[i]` and
`conv1.bias[i]`) and `conv2` must lose its input slice *i*: otherwise its weight no longer fits
the tensor it reads, and every later input would be read by the wrong slice.

**Index map: the identity.** Output channel *i* of `conv1` is input channel *i* of `conv2`.
The ReLU between them acts on each channel separately, so channels pass straight through it.
Nothing else is coupled: `conv2`'s own filters, and `conv3`, are untouched."""),
    code("""class ConvConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


x1 = torch.randn(1, 3, 8, 8)
ex1 = Explorer(ConvConv().eval(), x1)
ex1.select("conv1").set_indices([2, 5])
ex1"""),
    code("""show_plan(ex1, "01_conv_conv", title="conv → conv: conv1 loses output channels 2 and 5");"""),
    code("""check(ex1, x1);"""),

    # 2 ----------------------------------------------------------------------------------------
    md("""## 2 · conv → BatchNorm → conv

A BatchNorm keeps four numbers per channel: `weight` and `bias` (learned) and `running_mean`,
`running_var` (statistics). All four are indexed by channel, so when `conv1` loses channel *i*
the BatchNorm loses entry *i* of each (`prune_batchnorm` in the table), and `conv2` its input
slice *i* as before.

**Index map: the identity.** BatchNorm normalises each channel on its own (it doesn't mix
channels), so the coupling passes straight through it. That is also why zeroing is the same as
removing here: a channel whose BatchNorm `weight` and `bias` are zero outputs zeros, whatever
its statistics."""),
    code("""class ConvBNConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.bn1(self.conv1(x))))


x2 = torch.randn(1, 3, 8, 8)
model2 = ConvBNConv()
with torch.no_grad():  # non-trivial BatchNorm statistics, so the check means something
    model2.bn1.running_mean.uniform_(-1, 1); model2.bn1.running_var.uniform_(0.5, 2)
ex2 = Explorer(model2.eval(), x2)
ex2.select("conv1").set_indices([0, 3, 7])
ex2"""),
    code("""show_plan(ex2, "02_conv_bn_conv",
          title="conv → BN → conv: conv1 loses output channels 0, 3, 7");"""),
    code("""check(ex2, x2);"""),

    # 3 ----------------------------------------------------------------------------------------
    md("""## 3 · conv → flatten → linear

`torch.flatten(h, 1)` turns the 16 × 7 × 7 feature map into a vector of 784 features, channel
by channel: channel *c* becomes the 49 consecutive features **49·c … 49·c + 48** (its 7 × 7
positions, row by row). `fc` reads that vector, so `fc.weight[:, 49·c : 49·c + 49]` are the
columns that read channel *c*.

**Index map: one channel → a block of features.** Output channel 3 of `conv` is features
**147–195** of `fc`'s input: pruning one channel of the conv removes 49 columns of `fc.weight`.
The *why* column of the table says so (`channel 3 → features 147–195`); hover `fc` in the
explorer to see the same."""),
    code("""class ConvFlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


x3 = torch.randn(1, 3, 7, 7)
ex3 = Explorer(ConvFlattenLinear().eval(), x3)
ex3.select("conv").set_indices([3])
ex3"""),
    code("""show_plan(ex3, "03_flatten", title="conv → flatten → linear: conv loses output channel 3");"""),
    code("""pruned = check(ex3, x3)
fc_step = next(s for s in ex3.plan.steps if s.target == "fc")
assert fc_step.idxs == list(range(147, 196))"""),

    # 4 ----------------------------------------------------------------------------------------
    md("""## 4 · Residual add

A residual block computes `relu(x + body(x))`. The add sums channel *i* of the block's input
with channel *i* of the body's last BatchNorm, so both operands must keep the same channels at
the same positions. Remove channel *i* anywhere on this stream and it goes everywhere:

- from `stem` and its BatchNorm, which produce the stream;
- from the last conv + BatchNorm of **every** block that adds into it (`block1.conv2`,
  `block1.bn2`, `block2.conv2`, `block2.bn2`): a block's output channel *i* is added to
  channel *i* of the stream;
- from the inputs of every layer that reads it (`block1.conv1`, `block2.conv1`, `head`).

**Index map: the identity, along the whole stream.** One prune touches the whole stage: this
is why `prune_model` treats a residual stream as one *residual* group and why it is the
costliest group to prune. The inner channels of a block (`block1.conv1 → block1.bn1 →
block1.conv2`) form a small, separate *channels* group (click `block1.conv1` in the
explorer)."""),
    code("""class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.block1, self.block2 = Block(c), Block(c)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        return self.head(self.block2(self.block1(F.relu(self.bn(self.stem(x))))))


x4 = torch.randn(1, 3, 8, 8)
ex4 = Explorer(TinyResNet().eval(), x4)
ex4.select("stem").set_indices([2, 5])
ex4"""),
    code("""show_plan(ex4, "04_residual", title="residual add: stem loses output channels 2 and 5");"""),
    code("""check(ex4, x4)
print("\\ngroups of this model:")
for g in ex4.DG.groups():
    print(f"  {g.root:14} {g.kind:9} {g.size} channels, {len(g.layers)} layers: {g.layers}"
          + (f"  -- not prunable: {g.problem}" if g.problem else ""))"""),

    # 5 ----------------------------------------------------------------------------------------
    md("""## 5 · Concat (DenseNet style)

DenseNet layers append their output to what they read: `x = cat([x, relu(b1(x))])` puts
`stem`'s 6 channels first (0–5) and `b1`'s 4 after them (6–9); `b2` reads those 10 and its 4
outputs are appended as channels 10–13, which `head` reads.

**Index map: shifted by the width of the pieces in front.** Channel *j* of `b1` is channel
**6 + j** of everything that reads the concatenation: pruning `b1`'s channel 1 removes input 7
of `b2` and input 7 of `head` (the second `cat` keeps the first 10 channels where they are:
offset 0). A concat has no weights of its own; it only moves indices. Click `stem` in the
explorer: its channels are read by every later layer, through both concatenations."""),
    code("""class DenseNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.Conv2d(6, 4, 3, padding=1)
        self.b2 = nn.Conv2d(10, 4, 3, padding=1)
        self.head = nn.Conv2d(14, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, F.relu(self.b1(x))], dim=1)  # 6 + 4 = 10 channels
        x = torch.cat([x, F.relu(self.b2(x))], dim=1)  # 10 + 4 = 14 channels
        return self.head(x)


x5 = torch.randn(1, 3, 8, 8)
ex5 = Explorer(DenseNetish().eval(), x5)
ex5.select("b1").set_indices([1])
ex5"""),
    code("""show_plan(ex5, "05_concat", title="concat: b1 loses output channel 1 = channel 7 after the cat");"""),
    code("""check(ex5, x5)
assert {s.target: s.idxs for s in ex5.plan.layer_steps} == {"b1": [1], "b2": [7], "head": [7]}"""),

    # 6 ----------------------------------------------------------------------------------------
    md("""## 6 · Split / chunk

`a, b = torch.chunk(h, 2, dim=1)` cuts `conv`'s 8 channels in two halves: channels 0–3 go to
branch `a`, 4–7 to branch `b`. **Index map: channel *c* lands in piece *c // 4* at slot
*c % 4*.** Channel 5 is slot 1 of branch `b`'s input.

`chunk(2)` always cuts whatever it receives into equal halves, so it cannot lose channel 5
alone: with 7 channels the halves would be 4 + 3, the cut would move by one, and branch `b`
would silently receive channel 3 in place of channel 4. So the plan widens the request to
**the same slot in every piece**: asking for channel 5 prunes channels **1 and 5**, and both
branches lose their input 1 (the table's *why*: "chunked at chunk: every piece loses the same
slots"). The explorer below was given just `[5]`."""),
    code("""class ChunkNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a, b = torch.chunk(self.conv(x), 2, dim=1)
        return self.head(torch.cat([self.a(a), self.b(b)], dim=1))


x6 = torch.randn(1, 3, 8, 8)
ex6 = Explorer(ChunkNet().eval(), x6)
ex6.select("conv").set_indices([5])
ex6"""),
    code("""show_plan(ex6, "06_chunk", title="chunk: conv's channel 5 asked → channels 1 and 5 (slot 1 of both halves)");"""),
    code("""check(ex6, x6)
assert ex6.plan.steps[0].idxs == [1, 5]"""),

    # 7 ----------------------------------------------------------------------------------------
    md("""## 7 · Grouped and depthwise convolutions

`gconv` has `groups=2`: its 8 input channels form 2 groups of 4, and each output channel sees
only the 4 inputs of its own group, so `gconv.weight` is 8 × **4** × 3 × 3. **Index map:
input channel *c* is slot *c % 4* of group *c // 4*.** The groups must stay equal, which leaves
two ways to drop an input channel of `gconv`:

- **the same slot in every group.** Channel 1 (slot 1 of group 0) goes together with channel 5
  (slot 1 of group 1): `conv` loses filters 1 and 5, `gconv.weight` loses input slot 1
  (8 × 3 × 3 × 3, still 2 groups) and `gconv`'s outputs are untouched. Asked for channel 1,
  the plan picks this: it is the cheapest way to widen;
- **a whole group.** Channels 4–7 are everything group 1 reads, so the filters of group 1
  (`gconv`'s outputs 4–7) lose all their inputs and go as well: `gconv` becomes 4 → 4 with a
  single group, and its outputs 4–7 are pruned downstream.

`dw` is a **depthwise** conv (`groups` = channels = 8): output channel *i* reads only input
channel *i*, so its inputs and outputs are one and the same set of channels. In the second
plan `gconv`'s outputs 4–7 are removed, so `dw` loses filters 4–7 and `head` its inputs 4–7.

The explorer shows the first plan; the second picture comes from the same explorer after
`ex7.set_indices([4, 5, 6, 7])` (in JupyterLab the live widget follows)."""),
    code("""class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)  # 2 groups of 4
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)     # depthwise
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.dw(F.relu(self.gconv(F.relu(self.conv(x))))))


x7 = torch.randn(1, 3, 8, 8)
ex7 = Explorer(GroupedNet().eval(), x7)
ex7.select("conv").set_indices([1])
ex7"""),
    code("""show_plan(ex7, "07a_grouped_slot",
          title="grouped conv: conv's channel 1 asked → slot 1 of both groups (1 and 5)");"""),
    code("""ex7.set_indices([4, 5, 6, 7])
show_plan(ex7, "07b_grouped_whole",
          title="grouped conv: channels 4-7 = group 1 → gconv's group 1 goes, then dw (depthwise)");"""),
    code("""slot = check(ex7, x7, idxs=[1])
assert slot.gconv.weight.shape == (8, 3, 3, 3) and slot.gconv.groups == 2
whole = check(ex7, x7)  # [4, 5, 6, 7], as the explorer now previews
assert whole.gconv.weight.shape == (4, 4, 3, 3) and whole.gconv.groups == 1
assert whole.dw.groups == 4"""),

    # 8 ----------------------------------------------------------------------------------------
    md("""## 8 · Attention heads

A hand-written multi-head attention with a fused `qkv` projection: 16 features, 4 heads of
`head_dim` 4. `qkv` produces 48 features per token, reshaped to (3, heads, head_dim), so
**row *r* of `qkv.weight` is q/k/v number *r // 16*, head *(r % 16) // 4*, slot *r % 4*.** Head
*h* of q meets only head *h* of k (in `q @ kᵀ`) and head *h* of v, and its output lands in
columns **4h … 4h + 3** of `proj`'s input.

The reshape needs every head to keep the same size, so a single row cannot go alone. Asked for
row 17 (k, head 0, slot 1), the plan can widen in two ways:

- **whole heads** (`policy="heads"`; `prune_model(..., head_pruning="heads")`): head 0 goes
  entirely: rows 0–3 (q), 16–19 (k), 32–35 (v) of `qkv` and columns 0–3 of `proj`. 4 heads
  become 3. This is what the explorer previews: it takes the cheapest widening, and here
  both remove 12 rows; the tie goes to the whole head;
- **the same head_dim slot in every head** (`policy="dims"`; `head_pruning="dims"`): slot 1 of
  every head of q, k and v (rows 1, 5, 9, …, 45) and columns 1, 5, 9, 13 of `proj`. 4 heads of
  head_dim 3. Because q, k and v come out of **one** fused reshape, v loses the slot as well.

On the scale: this block multiplies by a scale fixed at construction (`head_dim ** -0.5`), so
pruning head_dim slots leaves it alone and the pruned model equals its masked twin exactly. A
block that recomputes the scale from `q.shape[-1]` (as `F.scaled_dot_product_attention` does
by default) gets a new scale when slots go: still a valid model, but no longer equal to its
masked twin. Whole heads never change the scale."""),
    code("""class Attention(nn.Module):
    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5  # fixed at construction
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, self.heads * self.head_dim)
        return self.proj(out)


x8 = torch.randn(1, 6, 16)  # 6 tokens of 16 features
ex8 = Explorer(Attention().eval(), x8)
ex8.select("qkv").set_indices([17])
ex8"""),
    code("""show_plan(ex8, "08a_heads", title="attention: qkv row 17 (k, head 0, slot 1) asked → whole head 0");"""),
    code("""dims_plan = ex8.DG.get_pruning_plan("qkv", "out", [17], policy="dims")
show_plan(ex8, "08b_head_dims", plan=dims_plan,
          title="attention: qkv row 17 asked, policy='dims' → slot 1 of every head of q, k, v");"""),
    code("""heads = check(ex8, x8)
assert heads.qkv.out_features == 36 and heads.proj.in_features == 12
dims = check(ex8, x8, idxs=[17], policy="dims")
assert dims.proj.weight.shape == (16, 12)
assert [s.idxs for s in dims_plan.layer_steps] == [list(range(1, 48, 4)), [1, 5, 9, 13]]"""),

    # 9 ----------------------------------------------------------------------------------------
    md("""## 9 · permute → LayerNorm → Linear (ConvNeXt style)

A ConvNeXt block works channels-last: `dw(x).permute(0, 2, 3, 1)` moves the channels from dim
1 to the last dim, where `LayerNorm(8)` and the `Linear` layers act on them, and
`permute(0, 3, 1, 2)` moves them back for the residual add. A permute doesn't change which
channel is which, only where the channel axis is; the engine follows the axis (dim 1 → dim 3 →
dim 1). **Index map: the identity, along a moved axis.** The stream's channel *i* is:
`stem`'s filter *i*, `dw`'s filter *i* (depthwise: input *i* = output *i*), `norm.weight[i]`
and `norm.bias[i]`, input column *i* of `pw1`, output row *i* of `pw2`, `gamma[i]` (a bare
`nn.Parameter` layer scale, cut like a layer) and input *i* of `head`. Because of the residual
add, it is one residual group.

**LayerNorm is where zeroing is not removing.** It normalises each token over *all* its
channels: a zeroed channel still counts in the mean and the variance, a removed one does not.
The pruned model is right (it normalises the channels it has), so for the check the twin must
do the same: below, the twin's LayerNorm is replaced by one that normalises only the kept
channels. BatchNorm (§2) normalises each channel on its own and needs nothing of the sort."""),
    code("""class ConvNeXtish(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)  # patchify: 8×8 → 4×4
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)  # layer scale
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        h = self.dw(x).permute(0, 2, 3, 1)  # N, H, W, C: channels last
        h = self.pw2(F.gelu(self.pw1(self.norm(h)))) * self.gamma
        return self.head(x + h.permute(0, 3, 1, 2))


x9 = torch.randn(1, 3, 8, 8)
ex9 = Explorer(ConvNeXtish().eval(), x9)
ex9.select("stem").set_indices([2, 5])
ex9"""),
    code("""show_plan(ex9, "09_convnext", title="permute → LayerNorm → Linear: stem loses output channels 2 and 5");"""),
    code("""from oracle import masked_twin, outputs


class KeptChannelsLayerNorm(nn.Module):
    \"\"\"LayerNorm over the kept channels only (the pruned slots output 0).\"\"\"

    def __init__(self, ln, keep):
        super().__init__()
        self.ln, self.keep = ln, torch.tensor(keep)

    def forward(self, h):
        out = torch.zeros_like(h)
        out[..., self.keep] = F.layer_norm(h[..., self.keep], (len(self.keep),),
                                           self.ln.weight[self.keep], self.ln.bias[self.keep],
                                           self.ln.eps)
        return out


def assert_matches_layernorm_twin(model, plan, x):
    twin = masked_twin(model, plan)
    for name, m in list(twin.named_modules()):
        cut = next((idxs for t, dim, idxs in plan.actions.cuts if t == f"{name}.weight"), None)
        if isinstance(m, nn.LayerNorm) and cut:
            keep = [i for i in range(m.normalized_shape[-1]) if i not in cut]
            setattr(twin, name, KeptChannelsLayerNorm(m, keep))  # (top-level here)
    expected = outputs(twin, x)
    plain = outputs(masked_twin(model, plan), x)  # zeroing alone: the LayerNorm differs
    before = tp.utils.count_params(model)
    plan.exec()
    got = outputs(model, x)
    assert before - tp.utils.count_params(model) == plan.params_removed
    for g, e, p in zip(got, expected, plain):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
        print(f"max |pruned - LayerNorm-aware twin| = {(g - e).abs().max():.1e}; "
              f"max |pruned - plain masked twin| = {(g - p).abs().max():.2f}")


check(ex9, x9, twin=assert_matches_layernorm_twin)
print([(g.root, g.kind) for g in ex9.DG.groups()])"""),

    md("""## What to take away

- A layer's channels are coupled to every tensor they reach, through ops without weights
  (activations, flatten, cat, chunk, permute, add) as much as through layers.
- Most couplings map indices one to one. Three kinds move them: **flatten** (a channel becomes
  a block of features), **concat** (an offset) and **split/chunk** (a piece and a slot).
- Three kinds **widen** a request, because a reshape or a grouping must stay rectangular:
  **chunk** (the same slot in every piece), **grouped convs** (a whole group or the same slot
  in every group) and **attention** (whole heads or the same head_dim slots). The plan says so
  in its *why* column, and `prune_model` treats each such unit as one choice.
- **Residual streams** make the widest groups: every layer that adds into the stream and every
  layer that reads it.
- The masked twin is a practical oracle: where the pruned model and its twin agree, nothing
  was missed. Only channel-mixing norms (LayerNorm, GroupNorm) and scales computed from a
  pruned size need a twin that knows about them.

Next: [02 · Audit a plan](02_audit_a_plan.ipynb) applies this to a whole ResNet-50 before
anything is pruned."""),
]

# ----------------------------------------------------------------------------------------------
# 02 · audit a plan
# ----------------------------------------------------------------------------------------------
NB02 = [
    md("""# 02 · Audit a pruning plan before running it

The change under review: **global L1 pruning at 50% on a ResNet-50**. Before anything is cut,
a reviewer wants answers to a few questions:

1. which layers lose how much, in channels, parameters and MACs? (§2)
2. which layers lose the most, and is any of them gutted? (§3)
3. which groups were left alone, and why? (§4)
4. how do the cuts split between the three kinds of groups: residual streams, attention heads,
   plain channels? (§5)
5. a report to attach to the review (§6);
6. after executing: did the model come out exactly as predicted? (§7)

`prune_model(..., dry_run=True)` answers 1–4 without touching the model: it returns the
combined plan (every step, with the parameters and MACs it removes) and the fate of every
group. At the end we execute **that very plan** (the one we audited, not a fresh selection) and
check parameters, MACs (measured independently by PyTorch's FLOP counter) and outputs (the
masked-twin oracle of notebook 01) against the prediction.

Model: torchvision's ResNet-50 with **random weights** (nothing is downloaded: the plan is as
auditable as on trained weights, only its accuracy would mean nothing). The input is
1 × 3 × 64 × 64 to keep things quick: channel counts don't depend on the input size, and at
224 × 224 every conv's MACs are exactly 12.25× larger (the `fc`'s stay the same), so the
fractions below barely move."""),
    code("""import copy, pathlib, sys, time
from collections import defaultdict

import torch
import torchvision
from IPython.display import HTML, Markdown, display
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import prune_explorer as tp
from prune_explorer.viz.charts import layer_rows, totals
from prune_explorer.viz.report import write_report

ROOT = pathlib.Path.cwd().parent
sys.path.insert(0, str(ROOT / "tests"))
from oracle import assert_matches_twin  # pruned model == masked twin (notebook 01)

torch.manual_seed(0)
model = torchvision.models.resnet50().eval()  # random weights: nothing is downloaded
x = torch.randn(1, 3, 64, 64)
t0 = time.perf_counter()
DG = tp.DependencyGraph().build_dependency(model, x)
dense = totals(DG)
print(f"traced {len(DG.graph.nodes)} nodes in {time.perf_counter() - t0:.1f}s: "
      f"{dense['params_before']:,} params, {dense['macs_before']:,} MACs at 64x64")"""),

    md("""## 1 · The dry run

One ranking across all groups (`global_pruning=True`): each group's L1 scores are divided by
the group's mean, the lowest half of all channels go, and no group loses more than 90%
(`max_group_loss`). So a group may lose more or less than 50%.

One layer is listed as ignored: `layer4.2.conv3`, the last conv. Say the 2048 pooled features
feed a downstream index and must keep their width. The classifier `fc` is **not** listed; see
what happens to it in §4. `dry_run=True` leaves the model untouched: the cell checks it."""),
    code("""IGNORED = [model.layer4[2].conv3]
state = {k: v.clone() for k, v in model.state_dict().items()}

t0 = time.perf_counter()
report = tp.prune_model(model, x, amount=0.5, strategy="l1", global_pruning=True,
                        ignored_layers=IGNORED, DG=DG, dry_run=True)
print(f"dry run in {time.perf_counter() - t0:.1f}s\\n")
print(report)
plan = report.plan
print(f"\\ncombined plan: {len(plan.steps)} steps, {len(plan.layer_steps)} tensor cuts in "
      f"{len({s.target for s in plan.layer_steps})} layers")

now = model.state_dict()  # the dry run changed nothing
assert state.keys() == now.keys() and all(torch.equal(v, now[k]) for k, v in state.items())"""),

    md("""## 2 · Per layer: channels, parameters and MACs lost

One row per layer the plan touches, from `plan.steps` (each step cuts a layer's output or
input channels) and `prune_explorer.viz.charts.layer_rows` (parameters and MACs per layer,
before and after). *Group* is the kind of group that cuts the layer's output channels (`-`:
none does, only its inputs shrink). *Lost* is the share of the layer's own parameters that
goes: a conv that loses half its inputs **and** half its outputs keeps a quarter of its
weights, so it loses ~75%."""),
    code("""modules = dict(model.named_modules())

# which group cuts each layer's output channels: plan each group alone (milliseconds)
out_group = {}
for g in report.groups:
    for s in DG.get_pruning_plan(g.root, "out", g.idxs).layer_steps:
        if s.kind == "out":
            out_group[s.target] = g

cut = defaultdict(lambda: {"out": 0, "in": 0})
for s in plan.layer_steps:
    cut[s.target][s.kind] += len(s.idxs)

rows = []
for r in layer_rows(DG, plan):
    m = modules[r.layer]
    if isinstance(m, nn.BatchNorm2d):  # one set of channels: in = out
        cin = cout = m.num_features
        cin_after = cout_after = cin - cut[r.layer]["out"]
    else:
        cin, cout = (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else \\
            (m.in_features, m.out_features)
        cin_after, cout_after = cin - cut[r.layer]["in"], cout - cut[r.layer]["out"]
    g = out_group.get(r.layer)
    rows.append(dict(layer=r.layer, type=type(m).__name__, group=g.kind if g else "-",
                     group_root=g.root if g else "-", cin=cin, cin_after=cin_after,
                     cout=cout, cout_after=cout_after, params=r.params_before,
                     params_removed=r.params_before - r.params_after,
                     lost=(r.params_before - r.params_after) / r.params_before,
                     macs_removed=r.macs_before - r.macs_after))
assert sum(r["params_removed"] for r in rows) == plan.params_removed
assert sum(r["macs_removed"] for r in rows) == plan.macs_removed

COLUMNS = ["layer", "type", "group", "in ch", "out ch", "params", "removed", "lost",
           "MACs removed"]


def cells(r):
    return [f"<code>{r['layer']}</code>", r["type"], r["group"],
            f"{r['cin']} → {r['cin_after']}", f"{r['cout']} → {r['cout_after']}",
            f"{r['params']:,}", f"{r['params_removed']:,}", f"{r['lost']:.0%}",
            f"{r['macs_removed']:,}"]


def markdown_table(rows, columns=COLUMNS, fmt=cells):
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in fmt(r)) + " |" for r in rows]
    return "\\n".join(lines)


def html_table(rows, columns=COLUMNS, fmt=cells):
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in fmt(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


print(f"{len(rows)} layers touched. The first 12, in graph order:")
display(Markdown(markdown_table(rows[:12])))
display(HTML(f"<details><summary><b>All {len(rows)} layers</b> (click to unfold)</summary>"
             f"{html_table(rows)}</details>"))"""),

    md("""## 3 · The layers that lose the most

Sorted by the share of their parameters they lose. A reviewer looks for layers that are
nearly gutted (a stage's bottleneck down to a handful of channels would be a red flag) and for
expensive layers losing a lot (their MACs are the latency you save)."""),
    code("""import plotly.graph_objects as go
import plotly.io as pio

pio.renderers.default = "plotly_mimetype"  # JupyterLab draws it; the table below is static

ranked = sorted(rows, key=lambda r: (-r["lost"], r["layer"]))


def ranked_cells(r):
    return cells(r)[:1] + [r["group"], f"{r['cin']} → {r['cin_after']}",
                           f"{r['cout']} → {r['cout_after']}", f"{r['params_removed']:,}",
                           f"{r['lost']:.0%}", "`" + "█" * round(20 * r["lost"]) + "`"]


display(Markdown(markdown_table(ranked[:15], ["layer", "group", "in ch", "out ch",
                                              "params removed", "lost", ""], ranked_cells)))

top = ranked[:30][::-1]
colors = {"residual": "#dc2626", "channels": "#2563eb", "heads": "#7c3aed", "-": "#94a3b8"}
fig = go.Figure()
for kind in ("residual", "channels", "-"):
    sel = [r for r in top if r["group"] == kind]
    if sel:
        fig.add_bar(y=[r["layer"] for r in sel], x=[100 * r["lost"] for r in sel],
                    orientation="h", name=f"output cut by a {kind} group" if kind != "-"
                    else "only inputs cut", marker_color=colors[kind],
                    customdata=[[f"{r['cin']}→{r['cin_after']}", f"{r['cout']}→{r['cout_after']}",
                                 r["params_removed"]] for r in sel],
                    hovertemplate="%{y}: %{x:.0f}% of params lost<br>in %{customdata[0]}, "
                                  "out %{customdata[1]}<br>%{customdata[2]:,} params removed"
                                  "<extra></extra>")
fig.update_layout(title="The 30 layers losing the largest share of their parameters",
                  xaxis_title="% of the layer's parameters removed", height=640, width=820,
                  yaxis=dict(categoryorder="array", categoryarray=[r["layer"] for r in top]),
                  margin=dict(l=170, r=20, t=50, b=40), legend=dict(x=0.55, y=0.02))
fig.show()"""),
    code("""# and per stage: where do the parameters and MACs go?
stages = defaultdict(lambda: [0, 0, 0])
for r in rows:
    st = stages[r["layer"].split(".")[0] if r["layer"].startswith("layer") else "stem"]
    st[0] += r["params"]; st[1] += r["params_removed"]; st[2] += r["macs_removed"]
display(Markdown(markdown_table(
    sorted(stages.items()), ["stage", "params of touched layers", "removed", "lost",
                             "MACs removed"],
    lambda kv: [f"`{kv[0]}`", f"{kv[1][0]:,}", f"{kv[1][1]:,}", f"{kv[1][1] / kv[1][0]:.0%}",
                f"{kv[1][2]:,}"])))
worst = ranked[0]
print(f"most cut: {worst['layer']} loses {worst['lost']:.0%} of its parameters "
      f"(in {worst['cin']}->{worst['cin_after']}, out {worst['cout']}->{worst['cout_after']}); "
      f"no layer keeps fewer than "
      f"{min(min(r['cin_after'], r['cout_after']) / min(r['cin'], r['cout']) for r in rows):.0%}"
      f" of its channels on either side")"""),

    md("""### Reading it

- With **random weights** every channel of a layer has about the same L1 norm, so once each
  group's scores are divided by the group's mean the global ranking is close to a coin toss:
  every group loses close to half its channels (the table in §5 shows the spread). On trained
  weights the same call is far less even: that unevenness is the point of global ranking, and
  exactly what this audit would surface.
- The largest losses (~75–80%) are convs cut on **both** sides: a bottleneck's middle conv
  loses half its inputs (the previous conv's group) and half its outputs (its own group).
  BatchNorms lose at most their channel share.
- No layer is gutted: the `max_group_loss=0.9` floor and the 50% budget keep every layer's
  channels well above zero."""),

    md("""## 4 · What was skipped, and why

`report.skipped` lists the groups `prune_model` did not prune, each with its reason. A
reviewer reads it twice: for groups the author *meant* to keep, to check the cost of keeping
them, and for groups skipped by surprise."""),
    code("""frozen = {g.root: g for g in DG.groups(ignored_layers=IGNORED)}
for root, why in report.skipped:
    g = frozen.get(root)
    layers = g.layers if g else [root]
    print(f"skipped {root}: {why}\\n  -> {len(layers)} layers keep these channels: {layers}\\n")
assert {r for r, _ in report.skipped} == {"layer4.2.conv3", "layer4.0.conv3", "fc"}"""),
    md("""- **`layer4.2.conv3`**: the layer we asked to keep. `prune_model` lists it too, so the
  report accounts for every group it did not touch, whether by request or by necessity.
- **`layer4.0.conv3`**: ignoring a single layer, `layer4.2.conv3`, froze the whole
  stage-4 residual stream. Its output channels are added to the outputs of `layer4.0.conv3`,
  `layer4.0.downsample.0`, `layer4.1.conv3` and read by every block of the stage
  (notebook 01, §4): keeping them in one layer keeps them in all. That is the right call if the
  2048 features must stay, and it is worth knowing what it costs: the stage's widest tensors
  are untouched.
- **`fc`**: pruning the classifier's output channels would change the model's output (1000
  logits), so `prune_model` refuses it on its own and says so (pass it in `ignored_layers` to
  make that explicit, or `allow_output_change=True` at plan level if you really want fewer
  classes). Its *inputs* are still pruned with the stage-4 stream... which is frozen here, so
  `fc` is untouched.
- Compare `DG.groups()` with `DG.groups(ignored_layers=...)` to see how far one ignored layer
  reaches: the frozen group above lists every layer that keeps its channels because of it."""),

    md("""## 5 · The three kinds of groups

`prune_model` and `DG.groups()` sort groups into three kinds, and they behave differently:

- **residual**: a stream shared through adds (a ResNet stage, a transformer's hidden size).
  Wide, touching many layers; pruning it shrinks every block of the stage at once;
- **heads**: attention projections where the unit is a whole head (or the same head_dim slots
  in every head), never a single channel;
- **channels**: everything else, typically the inner channels of a block (a bottleneck's
  first two convs, an MLP's hidden layer); one producer, its norm, and its consumer."""),
    code("""def by_kind(report):
    out = {}
    for kind in ("residual", "heads", "channels"):
        gs = [g for g in report.groups if g.kind == kind]
        fr = [g.pruned / g.channels for g in gs]
        out[kind] = [kind, len(gs), sum(g.channels for g in gs), sum(g.pruned for g in gs),
                     f"{sum(g.pruned for g in gs) / max(sum(g.channels for g in gs), 1):.0%}",
                     f"{min(fr):.0%} – {max(fr):.0%}" if gs else "-",
                     f"{sum(len(g.layers) for g in gs) / len(gs):.1f}" if gs else "-"]
    return markdown_table(out.values(), ["kind", "groups", "channels", "pruned", "share",
                                         "range per group", "layers per group"],
                          lambda r: r)


display(Markdown("**ResNet-50**, global L1 50%:\\n\\n" + by_kind(report)))
display(Markdown(markdown_table(
    [g for g in report.groups if g.kind == "residual"],
    ["residual group (root)", "channels", "pruned", "layers"],
    lambda g: [f"`{g.root}`", g.channels, g.pruned, len(g.layers)])))"""),
    md("""ResNet-50 has no attention, so no *heads* group. To see all three kinds side by side,
the same dry run on a small vision transformer: timm's `vit_tiny_patch16_224` architecture
(random weights, 4 blocks of 3 heads, 64 × 64 input). Its `qkv` projections form *heads*
groups whose unit is a whole head (64 rows each of q, k and v, and 64 input columns of `proj`);
the MLP hidden layers are *channels* groups; the hidden size, shared by every block through the
residual adds (patch embedding, every norm, `qkv`/`fc1` inputs, `proj`/`fc2` outputs, the class
token and the position embedding), is one *residual* group."""),
    code("""import timm

torch.manual_seed(0)
vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=4).eval()
xv = torch.randn(1, 3, 64, 64)
vit_report = tp.prune_model(vit, xv, amount=0.5, strategy="l1", global_pruning=True,
                            ignored_layers=[vit.head], dry_run=True)
print(vit_report, "\\n")
display(Markdown("**ViT-Tiny (4 blocks)**, global L1 50%:\\n\\n" + by_kind(vit_report)))
heads = vit.blocks[0].attn.num_heads
display(Markdown(markdown_table(
    vit_report.groups, ["group (root)", "kind", "unit", "channels", "pruned", "layers"],
    lambda g: [f"`{g.root}`", g.kind,
               f"a head ({g.channels // heads} rows)" if g.kind == "heads" else "a channel",
               g.channels, f"{g.pruned}" + (f" = {g.pruned * heads // g.channels} of {heads} heads"
                                            if g.kind == "heads" else ""), len(g.layers)])))
assert {g.kind for g in vit_report.groups} == {"residual", "heads", "channels"}
assert all(g.pruned % (g.channels // heads) == 0 for g in vit_report.groups if g.kind == "heads")"""),

    md("""## 6 · The report to attach to the review

`write_report` writes one interactive HTML file that opens offline, without a kernel or network:
the summary (params and MACs before/after), the graph with every layer coloured by the share of
parameters it loses, the full plan table (one row per step, with the *why*), the charts and the
group tables, skipped groups included. A reviewer can click any layer to see the plan the engine
makes from it (its coupled layers, their indices, why), or type channels to remove; the page
computes it from the engine's coupling data embedded in the file. It goes to the repository's
ignored `out/` folder rather than next to the notebook."""),
    code("""html_path = write_report(ROOT / "out" / "notebooks" / "02_resnet50_global_l1_50.html", DG,
                         report=report, title="ResNet-50, global L1 50% (dry run)")
text = html_path.read_text()
plan_rows = text.count('<tr class="pe-row-')
print(f"{html_path.relative_to(ROOT)}: {html_path.stat().st_size / 1e6:.1f} MB, "
      f"{plan_rows} plan rows, skipped groups listed: "
      f"{all(root in text for root, _ in report.skipped)}")
assert plan_rows == len(plan.steps)"""),

    md("""## 7 · Execute the audited plan and check the prediction

Now the plan we reviewed is executed (`plan.exec()`, inside the oracle) and checked:

- **outputs**: the pruned model computes what the masked twin of the original computes (every
  slice the plan cuts set to zero). ResNet-50 has only BatchNorms, which don't mix channels,
  so the twin is exact (notebook 01);
- **parameters**: counted on the pruned model, total and per layer, against the prediction;
- **MACs**: measured by PyTorch's own `FlopCounterMode` (FLOPs / 2), an independent count,
  against `report.macs_after`."""),
    code("""def measured_macs(m, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x)
    return counter.get_total_flops() // 2


assert measured_macs(model, x) == report.macs_before
predicted_after = {r.layer: r.params_after for r in layer_rows(DG, plan)}

t0 = time.perf_counter()
assert_matches_twin(model, plan, x)  # executes the plan; outputs == masked twin's
print(f"executed in {time.perf_counter() - t0:.1f}s; outputs match the masked twin")

params_now = tp.utils.count_params(model)
macs_now = measured_macs(model, x)
actual_after = {n: sum(p.numel() for p in modules_p.parameters(recurse=False))
                for n, modules_p in model.named_modules() if n in predicted_after}
wrong = {n: (predicted_after[n], actual_after[n]) for n in predicted_after
         if predicted_after[n] != actual_after[n]}
print(f"params: predicted {report.params_after:,}, counted {params_now:,}")
print(f"MACs:   predicted {report.macs_after:,}, measured {macs_now:,} (FlopCounterMode)")
print(f"per layer: {len(predicted_after) - len(wrong)} of {len(predicted_after)} layers have "
      f"exactly the predicted parameter count")
assert params_now == report.params_after and macs_now == report.macs_after and not wrong
assert model(x).shape == (1, 1000)
print(f"\\nResNet-50: {report.params_before / 1e6:.2f}M -> {params_now / 1e6:.2f}M params "
      f"({1 - params_now / report.params_before:.1%} fewer), {report.macs_before / 1e6:.0f}M "
      f"-> {macs_now / 1e6:.0f}M MACs ({1 - macs_now / report.macs_before:.1%} fewer) at 64x64")"""),
    md("""Everything the dry run predicted held: the same parameters per layer, the same total, the
same MACs as PyTorch measures, and outputs equal to the masked twin's. The plan that was
reviewed is the plan that ran.

To look at the same plan interactively, `Explorer(model, x).preview_model(amount=0.5,
global_pruning=True)` colours every layer by what it loses (see `explore.ipynb`), and
notebook 01 explains each kind of coupling on a small model."""),
]

NOTEBOOKS = {"01": ("01_why_layers_are_coupled.ipynb", NB01),
             "02": ("02_audit_a_plan.ipynb", NB02)}


def new_notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.from_dict(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def build(key: str, execute: bool = True) -> pathlib.Path:
    name, cells = NOTEBOOKS[key]
    nb = new_notebook(cells)
    if execute:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}},
                       store_widget_state=KEEP_WIDGET_STATE).execute()
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives small diffs
        cell["id"] = f"{key}-{i:02d}"
        if not KEEP_WIDGET_STATE:
            for out in cell.get("outputs", ()):
                out.get("data", {}).pop(WIDGET_VIEW, None)
    path = HERE / name
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    for key in sys.argv[1:] or list(NOTEBOOKS):
        print(build(key))
