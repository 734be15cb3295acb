"""Pruning a checkpoint shard by shard vs loading it: time and peak memory.

    python benchmarks/pretrained.py [--layers 12,24] [--repeat 2] [--amount 0.5]

Makes random Llama checkpoints locally (hidden 2048, 32 heads, 8 KV heads, MLP 5632, vocab
32000, bf16, 200 MB shards; one per ``--layers`` value, in ``$PE_BENCH_DIR`` or /tmp, removed
at the end) and measures, each in a fresh process, interleaved, the page cache of the
checkpoint dropped before each run (``posix_fadvise(DONTNEED)``):

- ``read``: every tensor read once with safetensors (the physical floor);
- ``prune_pretrained``: ``tp.prune_pretrained(..., strategy="l2", prune_hidden=False,
  uniform=True)`` - scores (one pass) and the pruned shards (a second pass) on disk;
- ``load + prune_model``: ``from_pretrained`` (bf16) and ``tp.prune_model`` in memory;
- ``Torch-Pruning``: ``from_pretrained`` and Torch-Pruning 1.6.1's ``MetaPruner`` (GQA
  ``num_heads``, heads pruned, embedding and norms ignored), with a time limit;
- ``plan 70B``: ``tp.plan_pretrained`` of Llama-3-70B's configuration, no weights at all.

Peak RSS is the whole process's (psutil, sampled every 20 ms by the parent, and the
process's own ``ru_maxrss``), imports included. One thread per process. Raw output goes to
``benchmarks/results/pretrained.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARD = 200 * 10**6
TP_LIMIT = 120


def llama_config(layers: int):
    import transformers as T
    return T.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=layers, num_attention_heads=32,
                         num_key_value_heads=8, tie_word_embeddings=False, dtype="bfloat16")


def llama_70b():
    import transformers as T
    return T.LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672,
                         num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                         rope_theta=500000.0, tie_word_embeddings=False, dtype="bfloat16")


def make_checkpoint(path: str, layers: int) -> dict:
    """A random bf16 checkpoint written shard by shard (never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file
    from prune_explorer.pretrained import build_model, fake_mode, state_shapes
    config = llama_config(layers)
    shapes = state_shapes(build_model(config, fake_mode()))
    os.makedirs(path)
    config.save_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    shards, cur, size = [], {}, 0
    for name, shape in shapes.items():
        t = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        if cur and size + t.numel() * 2 > SHARD:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += t.numel() * 2
    shards.append(cur)
    weight_map, total = {}, 0
    for i, tensors in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(path, fname), metadata={"format": "pt"})
        for k, t in tensors.items():
            weight_map[k] = fname
            total += t.numel() * 2
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return {"params": total // 2, "bytes": total, "shards": len(shards)}


def evict(path: str) -> None:
    for root, _dirs, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ---------------------------------------------------------------------------------------------
# workers (one process each)
# ---------------------------------------------------------------------------------------------
def worker(mode: str, src: str, out: str, amount: float) -> dict:
    import torch
    torch.set_num_threads(1)
    import prune_explorer as tp
    import transformers as T
    from prune_explorer.pretrained import build_model, fake_mode
    T.logging.set_verbosity_error()
    # imports are not what is measured: transformers loads its modules on first use
    build_model(T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=2), fake_mode())
    T.LlamaForCausalLM(T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=1, num_attention_heads=2))
    t0 = time.perf_counter()
    info = {}
    if mode == "read":  # every byte of every shard, sequentially, into one 16 MB buffer
        ck = json.load(open(os.path.join(src, "model.safetensors.index.json")))["weight_map"]
        buf, n = bytearray(16 << 20), 0
        for shard in dict.fromkeys(ck.values()):
            with open(os.path.join(src, shard), "rb", buffering=0) as f:
                while True:
                    got = f.readinto(buf)
                    if not got:
                        break
                    n += got
        info["bytes"] = n
    elif mode == "prune_pretrained":
        plan = tp.prune_pretrained(src, out, amount=amount, strategy="l2",
                                   head_pruning="heads", prune_hidden=False, uniform=True)
        info["params_after"] = plan.params_after
        info["config"] = plan.config_edits
    elif mode == "prune_model":
        model = T.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
        info["load_s"] = time.perf_counter() - t0
        ids = {"input_ids": torch.zeros(1, 32, dtype=torch.long)}
        report = tp.prune_model(model, ids, amount=amount, strategy="l2", prune_hidden=False,
                                ignored_layers=[model.lm_head])
        info["params_after"] = report.params_after
        info["prune_s"] = time.perf_counter() - t0 - info["load_s"]
        t1 = time.perf_counter()  # a checkpoint is what prune_pretrained hands back too
        model.config.update({"intermediate_size": model.model.layers[0].mlp.up_proj.out_features,
                             "num_attention_heads": model.config.num_attention_heads // 2,
                             "num_key_value_heads": model.config.num_key_value_heads // 2})
        model.save_pretrained(out, max_shard_size="200MB")
        info["save_s"] = time.perf_counter() - t1
    elif mode == "torch_pruning":
        import torch_pruning as TP
        model = T.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
        info["load_s"] = time.perf_counter() - t0
        cfg = model.config
        heads = {}
        for layer in model.model.layers:
            a = layer.self_attn
            heads.update({a.q_proj: cfg.num_attention_heads, a.k_proj: cfg.num_key_value_heads,
                          a.v_proj: cfg.num_key_value_heads})
        ignored = [model.lm_head, model.model.embed_tokens] + [
            m for n, m in model.named_modules() if "norm" in n]
        pruner = TP.pruner.MetaPruner(
            model, torch.zeros(1, 32, dtype=torch.long),
            importance=TP.importance.GroupMagnitudeImportance(p=2), pruning_ratio=amount,
            ignored_layers=ignored, num_heads=heads, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=amount,
            output_transform=lambda o: o.logits)
        pruner.step()
        info["params_after"] = sum(p.numel() for p in model.parameters())
    elif mode == "plan70b":
        plan = tp.plan_pretrained(llama_70b(), amount=amount, strategy="random")
        info["params_before"], info["params_after"] = plan.params_before, plan.params_after
        info["config"] = plan.config_edits
        info["config_error"] = plan.config_error
    info["seconds"] = time.perf_counter() - t0
    with open("/proc/self/status") as f:  # this process's peak RSS (VmHWM, reset by exec)
        info["vm_hwm"] = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM"))
    return info


def run(mode: str, src: str, out: str, amount: float, limit: float | None = None) -> dict:
    import psutil
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, src, out, str(amount)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        if limit is not None and time.perf_counter() - t0 > limit:
            proc.kill()
            proc.wait()
            return {"mode": mode, "timeout": limit, "peak_rss": peak}
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        return {"mode": mode, "error": stderr.strip().splitlines()[-1:], "peak_rss": peak}
    info = json.loads(stdout.strip().splitlines()[-1])
    info.update(mode=mode, peak_rss=max(peak, info.pop("vm_hwm")))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="12,24")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--amount", type=float, default=0.5)
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    ap.add_argument("--worker", nargs=4, metavar=("MODE", "SRC", "OUT", "AMOUNT"))
    ap.add_argument("--make", nargs=2, metavar=("PATH", "LAYERS"))
    args = ap.parse_args()
    if args.make:
        print(json.dumps(make_checkpoint(args.make[0], int(args.make[1]))))
        return
    if args.worker:
        mode, src, out, amount = args.worker
        print(json.dumps(worker(mode, src, out, float(amount))))
        return
    sys.path.insert(0, ROOT)  # noqa: the parent only orchestrates
    base = tempfile.mkdtemp(prefix="pe-bench-", dir=os.environ.get("PE_BENCH_DIR", "/tmp"))
    lines = [f"benchmarks/pretrained.py --layers {args.layers} --repeat {args.repeat} "
             f"--amount {args.amount}", f"free disk: {shutil.disk_usage(base).free / 1e9:.0f} GB"]
    results: dict = {}
    try:
        for layers in [int(x) for x in args.layers.split(",")]:
            src = os.path.join(base, f"llama-{layers}")
            t = time.perf_counter()
            meta = json.loads(subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--make", src, str(layers)],
                check=True, capture_output=True, text=True,
                env=dict(os.environ, PYTHONPATH=ROOT)).stdout.strip().splitlines()[-1])
            lines.append(f"llama-{layers}: {meta['params'] / 1e9:.2f}B params, "
                         f"{meta['bytes'] / 1e9:.2f} GB bf16, {meta['shards']} shards "
                         f"(made in {time.perf_counter() - t:.0f} s)")
            results[layers] = {"meta": meta, "runs": {}}
            modes = ["read", "prune_pretrained", "prune_model"] + (
                [] if args.no_tp else ["torch_pruning"])
            for rep in range(args.repeat):
                for mode in modes:
                    if mode == "torch_pruning" and rep:
                        continue  # one try: it does not finish in the limit
                    out = os.path.join(base, "out")
                    evict(src)
                    r = run(mode, src, out, args.amount,
                            TP_LIMIT if mode == "torch_pruning" else None)
                    shutil.rmtree(out, ignore_errors=True)
                    results[layers]["runs"].setdefault(mode, []).append(r)
                    lines.append(f"  {layers} layers, {mode}: {json.dumps(r)}")
                    print(lines[-1], flush=True)
            shutil.rmtree(src, ignore_errors=True)
        r = run("plan70b", "-", "-", args.amount)
        results["70b"] = r
        lines.append(f"plan 70B: {json.dumps(r)}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lines += ["", *table(results)]
    text = "\n".join(lines)
    print("\n".join(table(results)))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "pretrained.txt"), "w") as f:
        f.write(text + "\n")


def table(results: dict) -> list[str]:
    sizes = [k for k in results if k != "70b"]

    def cell(layers, mode):
        runs = results[layers]["runs"].get(mode, [])
        ok = [r for r in runs if "seconds" in r]
        if not ok:
            r = runs[0] if runs else {}
            if "timeout" in r:
                return (f"did not finish in {r['timeout']} s (RSS {r['peak_rss'] / 1e9:.2f} GB "
                        f"by then)")
            return "failed: " + " ".join(r.get("error", ["-"]))
        s = statistics.median(r["seconds"] for r in ok)
        rss = max(r["peak_rss"] for r in ok)
        floor = statistics.median(r["seconds"] for r in results[layers]["runs"]["read"])
        ratio = "" if mode == "read" else f" ({s / floor:.1f}x read)"
        return f"{s:.1f} s{ratio}, {rss / 1e9:.2f} GB"

    head = "| | " + " | ".join(
        f"{k} layers: {results[k]['meta']['params'] / 1e9:.2f}B params, "
        f"{results[k]['meta']['bytes'] / 1e9:.1f} GB, {results[k]['meta']['shards']} shards"
        for k in sizes) + " |"
    out = [head, "|---" * (len(sizes) + 1) + "|"]
    names = {"read": "read the checkpoint once (floor)", "prune_pretrained": "`prune_pretrained`",
             "prune_model": "`from_pretrained` + `prune_model` + `save_pretrained`",
             "torch_pruning": "`from_pretrained` + Torch-Pruning 1.6.1"}
    for mode, label in names.items():
        if any(mode in results[k]["runs"] for k in sizes):
            out.append(f"| {label} | " + " | ".join(cell(k, mode) for k in sizes) + " |")
    r = results.get("70b", {})
    if "seconds" in r:
        out.append(f"\n`plan_pretrained` of Llama-3-70B's config (no weights): "
                   f"{r['seconds']:.1f} s, peak RSS {r['peak_rss'] / 1e9:.2f} GB; "
                   f"{r['params_before']:,} -> {r['params_after']:,} params")
    return out


if __name__ == "__main__":
    main()
