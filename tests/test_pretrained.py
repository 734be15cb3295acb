"""Planning a Hugging Face checkpoint without loading it, and pruning it shard by shard.

The oracle: a checkpoint written by ``prune_pretrained`` loads, with transformers alone, to a
model whose outputs equal those of ``prune_model`` run with the same settings on the fully
loaded original (GPT-2 and BERT, whose attention width no config.json can shrink, through
``tp.load``). Checkpoints are tiny random models saved in many shards.
"""

import json
import os

import numpy as np
import pytest
import torch

import prune_explorer as tp

T = pytest.importorskip("transformers")

from prune_explorer.hf_checkpoint import Checkpoint, CheckpointError, block_scores  # noqa: E402
from prune_explorer.hf_config import ConfigError  # noqa: E402
from prune_explorer.pretrained import UnsupportedModelError  # noqa: E402

IDS = {"input_ids": torch.randint(0, 200, (1, 12), generator=torch.Generator().manual_seed(1))}
SMALL = dict(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=8, num_key_value_heads=4)
MODELS = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**SMALL)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**SMALL)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**SMALL, sliding_window=None)),
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(
        **{**SMALL, "intermediate_size": 96}, num_local_experts=4, num_experts_per_tok=2)),
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=200, n_embd=64, n_layer=2,
                                                   n_head=4, bos_token_id=0, eos_token_id=0)),
    "bert": lambda: T.BertModel(T.BertConfig(vocab_size=200, hidden_size=64,
                                             num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=128)),
}


def checkpoint(tmp_path, kind, shard="40KB", seed=0):
    torch.manual_seed(seed)
    model = MODELS[kind]().eval()
    path = tmp_path / f"src_{kind}"
    model.save_pretrained(path, max_shard_size=shard)
    return str(path), model


def loaded(path, kind, **kw):
    if kind == "mixtral":
        kw["experts_implementation"] = "batched_mm"
    auto = T.AutoModel if kind == "bert" else T.AutoModelForCausalLM
    return auto.from_pretrained(path, **kw).eval()


def first_output(model):
    with torch.no_grad():
        return model(**IDS)[0]


# ---------------------------------------------------------------------------------------------
# equal to the in-memory path
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,amount", [
    ("llama", 0.5), ("qwen2", 0.25), ("mistral", 0.25),
    pytest.param("mixtral", 0.25, marks=pytest.mark.slow)])
def test_pruned_checkpoint_loads_with_transformers_and_equals_prune_model(tmp_path, kind, amount):
    src, _ = checkpoint(tmp_path, kind)
    assert len([f for f in os.listdir(src) if f.endswith(".safetensors")]) > 4
    out = str(tmp_path / "pruned")
    plan = tp.prune_pretrained(src, out, amount=amount, strategy="l2", head_pruning="heads",
                               prune_hidden=False, uniform=True, seq_len=12)
    ref = loaded(src, kind)
    report = tp.prune_model(ref, IDS, amount=amount, strategy="l2", prune_hidden=False,
                            ignored_layers=["lm_head"], param_roots=True)
    got = loaded(out, kind)  # transformers alone: config.json describes the pruned model
    assert sum(p.numel() for p in got.parameters()) == report.params_after == plan.params_after
    assert plan.macs_after == report.macs_after
    torch.testing.assert_close(first_output(got), first_output(ref), rtol=0, atol=1e-6)
    # the same files, keys and layout it came with
    assert sorted(os.listdir(out)) == sorted(os.listdir(src) + ["history.json"])
    src_keys = json.load(open(os.path.join(src, "model.safetensors.index.json")))["weight_map"]
    out_keys = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]
    assert out_keys == src_keys
    # and the history rebuilds it from the original architecture
    again = tp.load(out, lambda: loaded(src, kind)).eval()
    torch.testing.assert_close(first_output(again), first_output(ref), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_gpt2_and_bert_prune_unevenly_described_and_rebuild_with_tp_load(tmp_path, kind):
    src, _ = checkpoint(tmp_path, kind)
    with pytest.raises(ConfigError, match="uniform=False"):
        tp.prune_pretrained(src, str(tmp_path / "no"), amount=0.25, uniform=True)
    assert not os.path.exists(tmp_path / "no")
    out = str(tmp_path / "pruned")
    plan = tp.prune_pretrained(src, out, amount=0.25, strategy="l2", uniform=False)
    ref = loaded(src, kind)
    tp.prune_model(ref, IDS, amount=0.25, strategy="l2", prune_hidden=False,
                   ignored_layers=plan.settings["ignored_layers"], param_roots=True)
    got = tp.load(out, lambda: MODELS[kind]()).eval()
    torch.testing.assert_close(first_output(got), first_output(ref), rtol=0, atol=1e-6)


def test_mixtral_experts_are_pruned_in_the_legacy_layout(tmp_path):
    src, _ = checkpoint(tmp_path, "mixtral")
    plan = tp.plan_pretrained(src, amount=0.25)
    assert plan.config_edits == {"intermediate_size": 72, "num_attention_heads": 6,
                                 "num_key_value_heads": 3, "head_dim": 8}
    ck = Checkpoint(src)
    # per-expert w1/w3 rows become the fused gate_up_proj; its group pairs gate i with up i
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in ck.headers
    roots = {g.root: g for g in plan.report.groups}
    g = roots["model.layers.0.mlp.experts.gate_up_proj"]
    assert g.pruned == 48 and g.channels == 192
    assert all((i + 96) in g.idxs for i in g.idxs if i < 96)


# ---------------------------------------------------------------------------------------------
# the plan: exact counts, no weights
# ---------------------------------------------------------------------------------------------
def test_plan_counts_per_layer_and_config_edits_by_hand(tmp_path):
    src, _ = checkpoint(tmp_path, "llama")
    plan = tp.plan_pretrained(src, amount=0.5, strategy="l2")
    # one decoder layer: q 64x64, k/v 32x64, o 64x64, gate/up/down 128x64, two norms of 64
    before = 4096 + 2 * 2048 + 4096 + 3 * 8192 + 128
    # half the kv groups (2 of 4: 4 of 8 heads of 8 dims) and half the MLP
    after = 2048 + 2 * 1024 + 2048 + 3 * 4096 + 128
    layer = plan.rows[0]
    assert (layer.name, layer.count) == ("model.layers.0", 2)
    assert (layer.params_before, layer.params_after) == (before, after)
    assert plan.params_after == plan.params_before - 2 * (before - after)
    assert plan.config_edits == {"intermediate_size": 64, "num_attention_heads": 4,
                                 "num_key_value_heads": 2}
    text = str(plan)
    assert "model.layers.0-1 (each)" in text and "num_attention_heads 8 -> 4" in text
    # a Llama config must keep hidden_size a multiple of the heads: 6 of 8 is refused
    bad = tp.plan_pretrained(src, amount=0.25, strategy="l2")
    assert "not a multiple of the number of attention heads" in bad.config_error
    with pytest.raises(ConfigError):
        tp.prune_pretrained(src, str(tmp_path / "out"), plan=bad)
    assert not os.path.exists(tmp_path / "out")


def test_planning_from_a_config_reads_no_weights():
    cfg = T.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512,
                        num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2)
    plan = tp.plan_pretrained(cfg, amount=0.5, strategy="random")
    assert plan.DG.bytes_read == 0
    assert plan.config_edits == {"intermediate_size": 256, "num_attention_heads": 4,
                                 "num_key_value_heads": 1}
    with pytest.raises(tp.InvalidAmountError, match="random"):
        tp.plan_pretrained(cfg, amount=0.5, strategy="l2")


def test_scores_read_from_disk_equal_the_in_memory_scores(tmp_path):
    src, model = checkpoint(tmp_path, "qwen2")
    plan = tp.plan_pretrained(src, amount=0.25, strategy="l1", uniform=False)
    ref = loaded(src, "qwen2")
    report = tp.prune_model(ref, IDS, amount=0.25, strategy="l1", prune_hidden=False,
                            ignored_layers=["lm_head"], dry_run=True)
    assert [g.idxs for g in plan.report.groups] == [g.idxs for g in report.groups]
    # every scored tensor is read once (the cache), nothing else: the layers' projections
    # (with Qwen2's q/k/v biases), not the embedding, norms or lm_head
    layer_bytes = sum(p.numel() * 4 for n, p in model.named_parameters()
                      if ".layers." in n and "proj." in n)
    assert plan.DG.bytes_read == layer_bytes


def test_block_scores_by_hand_and_in_blocks():
    t = torch.tensor([[1., -2.], [3., 0.], [-1., 1.]])
    assert block_scores(iter([t]), 0, 1).tolist() == [3, 3, 2]
    assert block_scores(iter([t]), 1, 2) == pytest.approx([11, 5], rel=1e-6)
    assert block_scores(iter([t.bfloat16()]), 0, 2) == pytest.approx([5, 9, 2], rel=1e-6)
    # rows in two blocks, Wanda's column weights
    blocks = iter([t[:2], t[2:]])
    assert block_scores(blocks, 1, 1, np.array([10., 1.])).tolist() == [50, 3]
    x = torch.arange(24.).reshape(2, 3, 4)
    assert block_scores(iter([x[:1], x[1:]]), 2, 1).tolist() == [60, 66, 72, 78]
    assert block_scores(iter([x[:1], x[1:]]), 1, 1).tolist() == [60, 92, 124]


def test_wanda_scores_with_activation_norms_from_offloaded_forwards(tmp_path):
    pytest.importorskip("accelerate")  # the llm extra: big-model dispatch
    from prune_explorer.calibration import activation_norms
    src, _ = checkpoint(tmp_path, "qwen2")
    cal = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(3))
    norms = activation_norms(src, cal, max_memory={"cpu": 60_000})  # most layers on disk
    ref = loaded(src, "qwen2")
    sums = {}

    def hook(name):
        def f(_m, args):
            x = args[0].double()
            sums[name] = sums.get(name, 0) + x.pow(2).reshape(-1, x.shape[-1]).sum(0)
        return f
    for n, m in ref.named_modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_pre_hook(hook(n))
    with torch.no_grad():
        ref(input_ids=cal)
    assert set(norms) == set(sums)
    for n in sums:
        np.testing.assert_allclose(norms[n], sums[n].sqrt().numpy(), rtol=1e-6)
    plan = tp.plan_pretrained(src, amount=0.25, strategy="wanda", calibration=cal,
                              max_memory={"cpu": 60_000})
    # the MLP of layer 1 by hand: sum over gate/up rows of |W|*||x|| plus down's columns
    mlp = "model.layers.1.mlp"
    w = {k: getattr(ref.model.layers[1].mlp, k).weight.detach().double().abs()
         for k in ("gate_proj", "up_proj", "down_proj")}
    score = ((w["gate_proj"] * torch.as_tensor(norms[f"{mlp}.gate_proj"])).sum(1)
             + (w["up_proj"] * torch.as_tensor(norms[f"{mlp}.up_proj"])).sum(1)
             + (w["down_proj"] * torch.as_tensor(norms[f"{mlp}.down_proj"])).sum(0))
    expect = sorted(torch.argsort(score)[:32].tolist())
    got = {g.root: g.idxs for g in plan.report.groups}[f"{mlp}.gate_proj"]
    assert got == expect


def test_explorer_on_a_checkpoint_reads_only_the_clicked_group(tmp_path):
    src, model = checkpoint(tmp_path, "qwen2")
    ex = tp.Explorer.from_pretrained(src)
    assert ex.DG.bytes_read == 0
    ex.set_strategy("l2", amount=0.25)
    ex.select("model.layers.1.mlp.gate_proj")
    assert ex.error is None
    assert {s.target for s in ex.plan.layer_steps} == {
        "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj",
        "model.layers.1.mlp.down_proj"}
    assert ex.DG.bytes_read == 3 * 128 * 64 * 4  # three fp32 tensors, nothing else


# ---------------------------------------------------------------------------------------------
# bad input: clear errors, nothing half-written
# ---------------------------------------------------------------------------------------------
def _nothing_written(tmp_path, out="out"):
    return not os.path.exists(tmp_path / out) and not [
        f for f in os.listdir(tmp_path) if f.endswith(".partial")]


def test_a_directory_without_config(tmp_path):
    src, _ = checkpoint(tmp_path, "qwen2")
    os.remove(os.path.join(src, "config.json"))
    with pytest.raises(CheckpointError, match="no config.json"):
        tp.prune_pretrained(src, str(tmp_path / "out"))
    assert _nothing_written(tmp_path)


def test_a_missing_shard(tmp_path):
    src, _ = checkpoint(tmp_path, "qwen2")
    os.remove(os.path.join(src, "model-00003-of-00012.safetensors"))
    with pytest.raises(CheckpointError, match="model-00003-of-00012.safetensors.*missing"):
        tp.plan_pretrained(src)


def test_a_tensor_whose_shape_disagrees_with_the_config(tmp_path):
    src, _ = checkpoint(tmp_path, "qwen2")
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["intermediate_size"] = 96
    json.dump(cfg, open(os.path.join(src, "config.json"), "w"))
    with pytest.raises(CheckpointError,
                       match=r"mlp.*has shape \[\d+, 128\] but config.json makes it \[\d+, 96\]"):
        tp.plan_pretrained(src)


def test_an_out_directory_that_exists_is_left_alone(tmp_path):
    src, _ = checkpoint(tmp_path, "qwen2")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        tp.prune_pretrained(src, str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    src, _ = checkpoint(tmp_path, "qwen2")
    plan = tp.plan_pretrained(src, amount=0.25)
    calls = {"n": 0}
    real = Checkpoint.read_key

    def flaky(self, key):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk went away")
        return real(self, key)
    monkeypatch.setattr(Checkpoint, "read_key", flaky)
    with pytest.raises(OSError, match="disk went away"):
        tp.prune_pretrained(src, str(tmp_path / "out"), plan=plan)
    assert calls["n"] == 7 and _nothing_written(tmp_path)


class _ItemConfig(T.PretrainedConfig):
    model_type = "pe_item_test"

    def __init__(self, hidden_size=16, vocab_size=50, **kw):
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        super().__init__(**kw)


class _ItemModel(T.PreTrainedModel):
    """A forward that reads a tensor's value (``.item()``): fake tensors have none."""
    config_class = _ItemConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.fc = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids):
        x = self.emb(input_ids)
        steps = int(x.abs().sum().item() > 0) + 1
        for _ in range(steps):
            x = self.fc(x)
        return (x,)


def test_a_model_whose_forward_needs_values_is_refused(tmp_path):
    T.AutoConfig.register("pe_item_test", _ItemConfig, exist_ok=True)
    T.AutoModel.register(_ItemConfig, _ItemModel, exist_ok=True)
    path = tmp_path / "item"
    _ItemModel(_ItemConfig()).save_pretrained(path)
    with pytest.raises(UnsupportedModelError, match="does not run on fake tensors"):
        tp.prune_pretrained(str(path), str(tmp_path / "out"))
    assert _nothing_written(tmp_path)


def test_the_readme_snippet_runs_as_written(capsys):
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = readme[readme.index("## Large language models"):]
    start = section.index("```python") + len("```python")
    code = section[start:section.index("```", start)]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "model.layers.0-1 (each)" in out and out.strip().endswith("True")
