"""Shared helpers for the benchmarks: the benchmark models, timing, a subprocess runner."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def build(name: str):
    """(model, example_inputs) for a benchmark model name: torchvision names, or 'bert-base'
    (transformers BertModel(BertConfig()) random init, seq len 128)."""
    torch.manual_seed(0)
    if name == "bert-base":
        import transformers as T
        model = T.BertModel(T.BertConfig()).eval()
        ids = torch.randint(0, 30522, (1, 128))
        return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    import torchvision
    kw = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kw["init_weights"] = True
    model = torchvision.models.get_model(name, **kw).eval()
    size = 299 if name == "inception_v3" else 224
    return model, torch.randn(1, 3, size, size)


def classifier_of(model):
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    return last


def call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


MEM_GB = float(os.environ.get("BENCH_MEM_GB", "10"))


def _limit_memory():  # in the child: a runaway run fails with MemoryError instead of OOM
    import resource
    lim = int(MEM_GB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def run_worker(script: str, args: list[str], timeout: float) -> dict:
    """Run ``script _worker args...`` in a fresh interpreter; its last '@@RESULT {json}' line,
    or {'status': 'timeout'} / {'status': 'crash', 'error': ...}."""
    cmd = [sys.executable, script, "_worker", *args]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=_limit_memory if MEM_GB > 0 else None)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall": time.perf_counter() - t0}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[9:])
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"status": "crash", "error": f"exit {p.returncode}: {tail[0][:300]}"}


def emit(res: dict) -> None:
    print("@@RESULT " + json.dumps(res), flush=True)


def threads(n: int | None = None) -> None:
    torch.set_num_threads(n or int(os.environ.get("BENCH_THREADS", "1")))
