"""Prune -> finetune lab on scikit-learn's digits (8x8 images, 10 classes, ships offline).

Used by notebooks/03_prune_and_finetune.ipynb and tests/test_notebooks.py:

    data = load_data()                     # digits, stratified train/test split
    model = SmallResNet(width=32)
    train(model, data, epochs=30)          # to convergence
    rows = prune_rounds(model, data, method="l1", rounds=6, amount=0.3, finetune_epochs=8)

``prune_rounds`` returns one row per round (round 0 = the trained model): params, MACs,
measured CPU latency (batch 1) and test accuracy. ``method`` is "l1" (per-group L1),
"random" or "global" (L1 ranked across groups). Set ``PE_FAST=1`` to shrink everything
(``fast()``) so a test runs in well under a minute.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as pe


def fast() -> bool:
    return os.environ.get("PE_FAST", "") not in ("", "0")


# ----------------------------------------------------------------------------- data

@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    size: int = 8
    channels: int = 1
    classes: int = 10


def load_data(seed: int = 0, test_size: float = 0.3) -> Data:
    """scikit-learn's digits: 1797 8x8 grey images (0..16), scaled to mean 0 / sd 1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = d.images.astype(np.float32)[:, None] / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_size, random_state=seed,
                                          stratify=d.target)
    mean, sd = xtr.mean(), xtr.std()
    t = lambda a: torch.from_numpy((a - mean) / sd)  # noqa: E731
    return Data(t(xtr), torch.from_numpy(ytr).long(), t(xte), torch.from_numpy(yte).long())


def load_cifar10(root: str = "./data") -> Data:  # pragma: no cover - needs a network
    """CIFAR-10 through torchvision (downloads ~170 MB): for users with a network."""
    import torchvision
    tr = torchvision.datasets.CIFAR10(root, train=True, download=True)
    te = torchvision.datasets.CIFAR10(root, train=False, download=True)
    conv = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    xtr, xte = conv(tr.data), conv(te.data)
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    sd = xtr.std(dim=(0, 2, 3), keepdim=True)
    return Data((xtr - mean) / sd, torch.tensor(tr.targets), (xte - mean) / sd,
                torch.tensor(te.targets), size=32, channels=3)


# ----------------------------------------------------------------------------- model

class Block(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-style CNN for small images: stem, three stages (w, 2w, 4w; two blocks each,
    strides 1/2/2), global average pool, linear classifier."""

    def __init__(self, width: int = 32, in_channels: int = 1, classes: int = 10,
                 blocks: int = 2):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())
        layers, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w)):
            for b in range(blocks):
                layers.append(Block(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----------------------------------------------------------------------------- train / eval

def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts by up to one pixel (pad 1, random crop)."""
    n, _, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1), value=float(x.min()))
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return xp[:, :, dy:dy + h, dx:dx + w]


def train(model: nn.Module, data: Data, epochs: int = 30, lr: float = 0.05,
          batch_size: int = 64, weight_decay: float = 5e-4, seed: int = 0) -> list[float]:
    """SGD (momentum 0.9, cosine schedule) with one-pixel shift augmentation; returns the
    test accuracy after each epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay,
                          nesterov=True)
    n = len(data.x_train)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.15, anneal_strategy="cos")
    history = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = _augment(data.x_train[idx], gen)
            loss = F.cross_entropy(model(xb), data.y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        history.append(evaluate(model, data))
    return history


@torch.no_grad()
def evaluate(model: nn.Module, data: Data) -> float:
    """Test accuracy in percent."""
    model.eval()
    pred = torch.cat([model(data.x_test[i:i + 512]).argmax(1)
                      for i in range(0, len(data.x_test), 512)])
    return 100.0 * (pred == data.y_test).float().mean().item()


def latency_ms(model: nn.Module, data: Data, min_run_time: float | None = None) -> float:
    """Median batch-1 CPU latency in ms (torch.utils.benchmark, current thread count)."""
    if min_run_time is None:
        min_run_time = 0.05 if fast() else 0.3
    from torch.utils import benchmark
    model.eval()
    x = data.x_test[:1]
    t = benchmark.Timer(stmt="with torch.no_grad(): model(x)",
                        globals={"model": model, "x": x, "torch": torch},
                        num_threads=torch.get_num_threads())
    return 1e3 * t.blocked_autorange(min_run_time=min_run_time).median


def macs(model: nn.Module, data: Data) -> int:
    """MACs of one image, from prune_explorer's traced graph (a dry-run prune measures it)."""
    twin = copy.deepcopy(model)
    rep = pe.prune_model(twin, data.x_test[:1], amount=0.1, strategy="l1",
                         ignored_layers=[twin.fc], dry_run=True)
    return rep.macs_before


# ----------------------------------------------------------------------------- rounds

@dataclass
class Round:
    method: str
    seed: int
    round: int
    params: int
    macs: int
    latency_ms: float
    accuracy: float
    accuracy_before_finetune: float
    seconds: float


STRATEGY = {"l1": ("l1", False), "random": ("random", False), "global": ("l1", True)}


def prune_rounds(model: nn.Module, data: Data, method: str = "l1", rounds: int = 6,
                 amount: float = 0.3, finetune_epochs: int = 8, finetune_lr: float = 0.02,
                 seed: int = 0, measure_latency: bool = True) -> list[Round]:
    """Iterative prune -> finetune on a copy of ``model``: each round removes ``amount`` of
    every group's channels (``method``: l1 / random / global) and finetunes. Round 0 is the
    model as given."""
    model = copy.deepcopy(model)
    strategy, global_pruning = STRATEGY[method]
    x = data.x_test[:1]
    lat = (lambda m: latency_ms(m, data)) if measure_latency else (lambda m: float("nan"))
    acc0 = evaluate(model, data)
    rows = [Round(method, seed, 0, pe.utils.count_params(model), macs(model, data), lat(model),
                  acc0, acc0, 0.0)]
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        torch.manual_seed(1000 * seed + r)
        rep = pe.prune_model(model, x, amount=amount, strategy=strategy,
                             ignored_layers=[model.fc], global_pruning=global_pruning)
        before = evaluate(model, data)
        train(model, data, epochs=finetune_epochs, lr=finetune_lr, seed=1000 * seed + r)
        rows.append(Round(method, seed, r, rep.params_after, rep.macs_after, lat(model),
                          evaluate(model, data), before, time.perf_counter() - t0))
    return rows


def as_records(rows: list[Round]) -> list[dict]:
    return [asdict(r) for r in rows]


def summarize(records: list[dict]) -> list[dict]:
    """Mean and sd over seeds per (method, round)."""
    out = []
    keys = sorted({(r["method"], r["round"]) for r in records},
                  key=lambda k: (list(STRATEGY).index(k[0]), k[1]))
    for method, rnd in keys:
        rs = [r for r in records if r["method"] == method and r["round"] == rnd]
        acc = np.array([r["accuracy"] for r in rs])
        lat = np.array([r["latency_ms"] for r in rs])
        out.append({"method": method, "round": rnd, "seeds": len(rs),
                    "params": int(np.mean([r["params"] for r in rs])),
                    "macs": int(np.mean([r["macs"] for r in rs])),
                    "latency_ms": float(np.nanmean(lat)) if np.isfinite(lat).any() else
                    float("nan"),
                    "acc_mean": float(acc.mean()),
                    "acc_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0})
    return out


def markdown_table(summary: list[dict], base_params: int) -> str:
    lines = ["| method | round | params | × fewer | MACs | latency (ms) | test acc (mean ± sd) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['method']} | {s['round']} | {s['params'] / 1e3:,.1f}k | "
                     f"{base_params / s['params']:.1f}× | {s['macs'] / 1e6:.2f}M | "
                     f"{s['latency_ms']:.3f} | {s['acc_mean']:.2f} ± {s['acc_sd']:.2f} |")
    return "\n".join(lines)
