"""Pruning quality side by side with Torch-Pruning 1.6.1: accuracy kept after one-shot pruning,
before any finetuning, at equal MACs.

    python benchmarks/quality.py            # 5 seeds, 30/50/70 %
    python benchmarks/quality.py --quick    # 1 seed, 50 % only

Two small models trained to convergence on data we have: a residual CNN on scikit-learn's
digits (8x8 images, 10 classes) and a 2-block pre-LN transformer (nn.MultiheadAttention) on a
synthetic sequence task (which of 10 tokens is the most frequent in a sequence of 16). For
each seed both are trained once (cached in ``out/quality_cache/``); then every criterion both
libraries share is applied one-shot, locally (each group loses the ratio) and globally (one
ranking):

    ours                                 Torch-Pruning 1.6.1
    prune_model(strategy="l1")           MagnitudeImportance(p=1)
    prune_model(strategy="l2")           MagnitudeImportance(p=2)
    prune_model(strategy="bn_scale")     BNScaleImportance()            (CNN only)
    prune_model(strategy="taylor")       TaylorImportance()             (one batch's gradient)
    prune_model(strategy="lamp")         LAMPImportance()
    prune_model(strategy="random")       RandomImportance()

The classifier is ignored by both. On the transformer both prune head dims, not whole heads:
ours with ``head_pruning="dims"``, Torch-Pruning (its default for nn.MultiheadAttention) with
``round_to=4`` so the kept hidden size divides by the 4 heads (else it raises for most
ratios). Torch-Pruning prunes at ``pruning_ratio``; our ``amount``
is then matched so that our pruned model has the same MACs (within 1 %, both counted by
``tp.utils.count_ops_and_params``), so the accuracies compare equal budgets. No weight is
finetuned; BatchNorm statistics are re-estimated on 512 training images for both (without
it any one-shot cut of a BN network collapses to chance). The table reports accuracy kept
(pruned accuracy / unpruned accuracy), mean ± sd over seeds, and the MACs kept. Raw output
goes to ``benchmarks/results/quality.txt``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")

import prune_explorer as pe  # noqa: E402

STRATEGIES = ("l1", "l2", "bn_scale", "taylor", "lamp", "random")


# ---------------------------------------------------------------------------------- models
class DigitsCNN(nn.Module):
    """stem (8x8) -> strided conv (4x4) -> residual block -> wider conv -> pool -> classifier."""

    def __init__(self, w: int = 32):
        super().__init__()

        def cbr(cin, cout, stride=1, relu=True):
            layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
            return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)

        self.stem = cbr(1, w)
        self.down = cbr(w, w, stride=2)
        self.block = nn.Sequential(cbr(w, w), cbr(w, w, relu=False))
        self.conv = cbr(w, 2 * w)
        self.fc = nn.Linear(2 * w, 10)

    def forward(self, x):
        x = self.down(self.stem(x))
        x = F.relu(x + self.block(x))
        return self.fc(self.conv(x).mean((2, 3)))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class SeqTransformer(nn.Module):
    def __init__(self, vocab: int = 10, length: int = 16, d: int = 48, heads: int = 4,
                 ff: int = 96, depth: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, length, d) * 0.1)
        self.blocks = nn.Sequential(*[Block(d, heads, ff) for _ in range(depth)])
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.blocks(self.tok(ids) + self.pos)
        return self.fc(self.ln(x).mean(1))


# ------------------------------------------------------------------------------------ data
def digits_data():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(1234)
    perm = torch.randperm(len(y), generator=g)
    cut = int(0.7 * len(y))
    return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]])


def sequence_data(n_train: int = 4000, n_test: int = 1000, vocab: int = 10, length: int = 16):
    """Sequences of ``length`` tokens; the label is the token that occurs most often (the
    winner occurs exactly once more than any other token, so the label is unique)."""
    rng = np.random.default_rng(4321)

    def one():
        while True:
            seq = rng.integers(0, vocab, length)
            counts = np.bincount(seq, minlength=vocab)
            top = counts.max()
            if (counts == top).sum() == 1:
                return seq, int(counts.argmax())

    def many(n):
        xs, ys = zip(*(one() for _ in range(n)))
        return torch.tensor(np.stack(xs)), torch.tensor(ys)

    return many(n_train), many(n_test)


# ------------------------------------------------------------------------------- training
def train(model, data, epochs: int, lr: float, seed: int, batch: int = 128):
    (x, y), _ = data
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


CACHE = os.path.join(ROOT, "out", "quality_cache")


def trained(name, cls, data, epochs, lr, seed):
    """A trained model, cached in out/quality_cache/ (delete it to retrain)."""
    path = os.path.join(CACHE, f"{name}_seed{seed}_epochs{epochs}.pt")
    model = cls()
    if os.path.exists(path):
        model.load_state_dict(torch.load(path))
        return model.eval()
    train(model, data, epochs, lr, seed)
    os.makedirs(CACHE, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


@torch.no_grad()
def recalibrate(model, data, n: int = 512) -> None:
    """Re-estimate BatchNorm statistics on ``n`` training images (no weight changes): after
    one-shot pruning the statistics a layer saw no longer match its inputs, and a BN network
    collapses to chance without this, whichever channels were kept."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    (x, _), _ = data
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    model.train()
    for i in range(0, n, 128):
        model(x[i:i + 128])
    model.eval()


@torch.no_grad()
def accuracy(model, data) -> float:
    _, (x, y) = data
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def taylor_batch(data, n: int = 256):
    (x, y), _ = data
    return x[:n], y[:n]


# -------------------------------------------------------------------------------- pruning
def tp_macs(model, x) -> int:
    import torch_pruning as tp
    return int(tp.utils.count_ops_and_params(model, x)[0])


def prune_tp(model, x, strategy, ratio, global_, data, seed, **kw):
    import torch_pruning as tp
    m = copy.deepcopy(model)
    imp = {"l1": lambda: tp.importance.MagnitudeImportance(p=1),
           "l2": lambda: tp.importance.MagnitudeImportance(p=2),
           "bn_scale": lambda: tp.importance.BNScaleImportance(),
           "taylor": lambda: tp.importance.TaylorImportance(),
           "lamp": lambda: tp.importance.LAMPImportance(),
           "random": lambda: tp.importance.RandomImportance()}[strategy]()
    torch.manual_seed(seed)
    pruner = tp.pruner.MetaPruner(m, x, importance=imp, pruning_ratio=ratio,
                                  global_pruning=global_, ignored_layers=[m.fc], **kw)
    if strategy == "taylor":
        bx, by = taylor_batch(data)
        m.zero_grad()
        F.cross_entropy(m(bx), by).backward()
    pruner.step()
    m.zero_grad(set_to_none=True)
    return m.eval()


def prune_ours(model, x, strategy, amount, global_, data, seed, DG=None, dry_run=False):
    m = model if dry_run else copy.deepcopy(model)
    bx, by = taylor_batch(data)
    loss_fn = (lambda mm: F.cross_entropy(mm(bx), by)) if strategy == "taylor" else None
    # head_pruning="dims" (the same head_dim slots in every head) is what Torch-Pruning does
    # to nn.MultiheadAttention by default (prune_head_dims=True, prune_num_heads=False)
    report = pe.prune_model(m, x, amount=amount, strategy=strategy, ignored_layers=[m.fc],
                            global_pruning=global_, loss_fn=loss_fn, seed=seed,
                            head_pruning="dims", DG=DG if dry_run else None, dry_run=dry_run)
    m.zero_grad(set_to_none=True)
    return m.eval(), report


def ours_at_macs(model, x, strategy, target_macs, ratio, global_, data, seed):
    """Our pruned model whose MACs (TP's counter) match ``target_macs`` within 1 %: first at
    ``amount=ratio`` (local pruning of the same groups usually lands exactly), else ``amount``
    is bisected on dry runs of one graph (our MAC prediction, mapped to TP's counter by the
    ratio of the two counts on the unpruned model) and the closest is executed."""
    m, _ = prune_ours(model, x, strategy, ratio, global_, data, seed)
    got = tp_macs(m, x)
    if abs(got - target_macs) <= 0.01 * target_macs:
        return m, got, ratio
    DG = pe.DependencyGraph().build_dependency(copy.deepcopy(model), x, verbose=False)

    def predicted(a):
        _, rep = prune_ours(DG.model, x, strategy, a, global_, data, seed, DG=DG, dry_run=True)
        return rep.macs_after / rep.macs_before

    want = target_macs / tp_macs(model, x)
    lo, hi = 0.0, 0.95
    for _ in range(9):
        mid = (lo + hi) / 2
        if predicted(mid) > want:
            lo = mid
        else:
            hi = mid
    best = (m, got, ratio)
    for a in {round(lo, 4), round(hi, 4)}:
        if a <= 0:
            continue
        m, _ = prune_ours(model, x, strategy, a, global_, data, seed)
        got = tp_macs(m, x)
        if abs(got - target_macs) < abs(best[1] - target_macs):
            best = (m, got, a)
    return best


# ------------------------------------------------------------------------------------ main
def run(args):
    torch.set_num_threads(1)
    seeds = [0] if args.quick else list(range(args.seeds))
    ratios = [0.5] if args.quick else [0.3, 0.5, 0.7]
    setups = {
        "cnn": (DigitsCNN, digits_data(), torch.randn(1, 1, 8, 8), 12, 3e-3, {}),
        # without round_to = the head count, Torch-Pruning cannot prune the hidden size of
        # nn.MultiheadAttention unless the kept width happens to divide by it ("embed_dim must
        # divide evenly by num_heads"); with num_heads={attn: 4} it keeps the hidden size
        "transformer": (SeqTransformer, sequence_data(),
                        torch.zeros(1, 16, dtype=torch.long), 12, 3e-3, {"round_to": 4}),
    }
    rows = []  # (model, strategy, scope, ratio, lib, kept acc, kept macs)
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    t_start = time.perf_counter()
    for mname in args.models:
        cls, data, x, epochs, lr, tp_kw = setups[mname]
        for seed in seeds:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            model = trained(mname, cls, data, epochs, lr, seed)
            base = accuracy(model, data)
            base_macs = tp_macs(model, x)
            log(f"# {mname} seed {seed}: accuracy {base:.4f} ({time.perf_counter() - t0:.0f} s "
                f"training or cache), {base_macs} MACs")
            for strategy in args.strategies:
                if strategy == "bn_scale" and mname != "cnn":
                    continue
                for global_ in (False, True):
                    scope = "global" if global_ else "local"
                    for ratio in ratios:
                        try:
                            mt = prune_tp(model, x, strategy, ratio, global_, data, seed,
                                          **tp_kw)
                            tmacs = tp_macs(mt, x)
                            recalibrate(mt, data)
                            tacc = accuracy(mt, data)
                        except Exception as exc:  # noqa: BLE001 - reported, not hidden
                            log(f"{mname} {strategy} {scope} {ratio} tp FAILED: {exc!r}"[:300])
                            continue
                        try:
                            mo, omacs, amount = ours_at_macs(model, x, strategy, tmacs, ratio,
                                                             global_, data, seed)
                            recalibrate(mo, data)
                            oacc = accuracy(mo, data)
                        except Exception as exc:  # noqa: BLE001
                            log(f"{mname} {strategy} {scope} {ratio} ours FAILED: {exc!r}"[:300])
                            continue
                        log(f"{mname} {strategy:8s} {scope:6s} r={ratio} seed={seed} "
                            f"tp acc={tacc / base:.4f} macs={tmacs / base_macs:.4f} | ours "
                            f"acc={oacc / base:.4f} macs={omacs / base_macs:.4f} "
                            f"amount={amount:.3f}")
                        rows.append((mname, strategy, scope, ratio, "tp", tacc / base,
                                     tmacs / base_macs))
                        rows.append((mname, strategy, scope, ratio, "ours", oacc / base,
                                     omacs / base_macs))
    log(f"# total {time.perf_counter() - t_start:.0f} s")
    log("")
    log(table(rows, ratios, args.models))
    out = os.path.join(RESULTS, "quality_quick.txt" if args.quick else "quality.txt")
    os.makedirs(RESULTS, exist_ok=True)
    with open(out, "w") as f:
        f.write(" ".join(["python benchmarks/quality.py"] + sys.argv[1:]) + "\n")
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _ms(vals):
    if not vals:
        return "—"
    m = statistics.mean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def table(rows, ratios, models) -> str:
    """Markdown table: accuracy kept (%) for TP and ours, per model/strategy/scope/ratio."""
    head = ["model", "criterion", "scope"] + [f"{int(100 * r)}%: TP / ours (MACs kept)"
                                              for r in ratios]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = []
    for r in rows:
        if (r[0], r[1], r[2]) not in keys:
            keys.append((r[0], r[1], r[2]))
    for mname, strategy, scope in keys:
        cells = [mname, strategy, scope]
        for ratio in ratios:
            sel = [r for r in rows if r[:4] == (mname, strategy, scope, ratio)]
            tp_acc = [r[5] for r in sel if r[4] == "tp"]
            our_acc = [r[5] for r in sel if r[4] == "ours"]
            macs = [r[6] for r in sel if r[4] == "tp"]
            cells.append(f"{_ms(tp_acc)} / {_ms(our_acc)} ({100 * statistics.mean(macs):.0f}%)"
                         if macs else "—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 50 %% only")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--models", nargs="+", default=["cnn", "transformer"])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    run(p.parse_args())


if __name__ == "__main__":
    main()
