"""Attention heads, head dims, GQA, tied embeddings and Hugging Face models, with the oracle:
the pruned model equals its masked twin (pruned heads' q/k/v rows and output-projection columns,
pruned MLP rows/columns zeroed)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin, masked_twin, outputs


class HandAttention(nn.Module):
    """Attention written by hand: Linear q/k/v, view to heads, matmul, softmax."""

    def __init__(self, dim=32, heads=4, kv_heads=None, sdpa=False):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.num_key_value_heads = kv_heads or heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(dim, heads * self.head_dim)
        self.k_proj = nn.Linear(dim, self.num_key_value_heads * self.head_dim)
        self.v_proj = nn.Linear(dim, self.num_key_value_heads * self.head_dim)
        self.o_proj = nn.Linear(heads * self.head_dim, dim)
        self.sdpa = sdpa

    def forward(self, x):
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, N, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        rep = self.num_heads // self.num_key_value_heads
        if rep > 1:  # grouped-query attention: each k/v head serves `rep` query heads
            k = k[:, :, None].expand(B, self.num_key_value_heads, rep, N, self.head_dim).reshape(
                B, self.num_heads, N, self.head_dim)
            v = v[:, :, None].expand(B, self.num_key_value_heads, rep, N, self.head_dim).reshape(
                B, self.num_heads, N, self.head_dim)
        if self.sdpa:
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            o = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, -1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(B, N, -1))


class Block(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.attn = HandAttention(**kw)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.fc2(F.gelu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.block = Block(**kw)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.block(self.inp(x)))


X = torch.randn(2, 6, 8)


@pytest.mark.parametrize("sdpa", [False, True])
def test_hand_written_attention_whole_heads(sdpa):
    model = Net(sdpa=sdpa).eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    plan = DG.get_pruning_plan(model.block.attn.q_proj, "out", list(range(8, 16)), policy="heads")
    targets = {s.target: s.idxs for s in plan.layer_steps}
    assert targets["block.attn.q_proj"] == list(range(8, 16))
    assert targets["block.attn.k_proj"] == list(range(8, 16))
    assert targets["block.attn.v_proj"] == list(range(8, 16))
    assert targets["block.attn.o_proj"] == list(range(8, 16))
    assert_matches_twin(model, plan, X)
    assert model.block.attn.num_heads == 3 and model.block.attn.head_dim == 8


def test_hand_written_attention_same_slots_in_every_head():
    model = Net().eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    plan = DG.get_pruning_plan(model.block.attn.q_proj, "out", [1], policy="dims")
    targets = {s.target: s.idxs for s in plan.layer_steps}
    assert targets["block.attn.q_proj"] == [1, 9, 17, 25]  # slot 1 of each head
    assert targets["block.attn.k_proj"] == [1, 9, 17, 25]  # q/k dot product pairs them
    # v's head dim would be independent, but the code sizes all three views with
    # self.head_dim, so they must stay equal: v loses the same slots
    assert targets["block.attn.v_proj"] == [1, 9, 17, 25]
    assert targets["block.attn.o_proj"] == [1, 9, 17, 25]
    assert_matches_twin(model, plan, X)
    assert model.block.attn.num_heads == 4 and model.block.attn.head_dim == 7


def test_grouped_query_attention_keeps_groups_in_step():
    model = Net(heads=4, kv_heads=2).eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    plan = DG.get_pruning_plan(model.block.attn.q_proj, "out", list(range(8)), policy="heads")
    targets = {s.target: s.idxs for s in plan.layer_steps}
    # query head 0 shares k/v head 0 with query head 1: the whole group goes
    assert targets["block.attn.q_proj"] == list(range(16))
    assert targets["block.attn.k_proj"] == list(range(8))
    assert_matches_twin(model, plan, X)
    assert model.block.attn.num_heads == 2 and model.block.attn.num_key_value_heads == 1


def test_mlp_hidden_dim():
    model = Net().eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    plan = DG.get_pruning_plan(model.block.fc1, "out", list(range(0, 64, 3)))
    assert {s.target for s in plan.layer_steps} == {"block.fc1", "block.fc2"}
    assert_matches_twin(model, plan, X)


def test_residual_stream_couples_every_block_layer():
    model = Net().eval()
    DG = tp.DependencyGraph().build_dependency(model, X)
    plan = DG.get_pruning_plan(model.inp, "out", [0, 5])
    assert {s.target for s in plan.layer_steps} == {
        "inp", "block.attn.q_proj", "block.attn.k_proj", "block.attn.v_proj",
        "block.attn.o_proj", "block.fc1", "block.fc2", "head"}
    assert_matches_twin(model, plan, X)


def test_prune_model_on_a_transformer_keeps_shape_and_prunes_three_kinds():
    model = Net().eval()
    report = tp.prune_model(model, X, amount=0.5, ignored_layers=[model.head])
    kinds = {g.kind for g in report.groups}
    assert kinds == {"heads", "residual", "channels"}
    assert model(X).shape == (2, 6, 3)
    assert model.block.attn.num_heads == 2


def test_prune_hidden_false_keeps_the_residual_stream():
    model = Net().eval()
    report = tp.prune_model(model, X, amount=0.5, ignored_layers=[model.head], prune_hidden=False)
    assert {g.kind for g in report.groups} == {"heads", "channels"}
    assert model.inp.out_features == 32 and model.block.attn.num_heads == 2


# ---------------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")


def _bert():
    cfg = transformers.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128)
    return transformers.BertForSequenceClassification(cfg).eval()


def _llama(tie=False):
    cfg = transformers.LlamaConfig(vocab_size=200, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(cfg).eval()


TOKENS = {"input_ids": torch.randint(3, 200, (2, 10))}


@pytest.mark.parametrize("factory,head", [(_bert, "classifier"), (_llama, "lm_head")])
def test_hf_heads_and_mlp_match_masked_twin(factory, head):
    model = factory()
    report = tp.prune_model(model, TOKENS, amount=0.5, prune_hidden=False, dry_run=True,
                            ignored_layers=[model.get_submodule(head)])
    plan = report.plan
    assert {g.kind for g in report.groups} == {"heads", "channels"}
    assert_matches_twin(model, plan, TOKENS, atol=1e-4)
    attn = [m for n, m in model.named_modules() if n.endswith("attention.self") or
            n.endswith("self_attn")]
    assert attn


def test_llama_gqa_heads_and_rotary():
    model = _llama()
    before = outputs(model, TOKENS)[0].shape
    tp.prune_model(model, TOKENS, amount=0.5, ignored_layers=[model.lm_head])
    layer = model.model.layers[0].self_attn
    assert layer.q_proj.out_features == 2 * layer.head_dim  # one of two k/v groups left
    assert layer.k_proj.out_features == layer.head_dim
    assert outputs(model, TOKENS)[0].shape == before
    model2 = _llama()
    tp.prune_model(model2, TOKENS, amount=0.5, ignored_layers=[model2.lm_head],
                   head_pruning="dims", prune_hidden=False)
    layer = model2.model.layers[0].self_attn
    assert layer.head_dim == 8 and layer.q_proj.out_features == 32
    assert model2.model.rotary_emb.inv_freq.shape == (4,)  # rotary pairs stay intact
    assert outputs(model2, TOKENS)[0].shape == before


@pytest.mark.parametrize("factory", [lambda: _llama(tie=True),
                                     lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
                                         vocab_size=200, n_embd=64, n_layer=2, n_head=4)).eval()])
def test_tied_embeddings_are_pruned_once_and_stay_tied(factory):
    model = factory()
    emb = model.get_input_embeddings()
    assert model.lm_head.weight is emb.weight
    n_before = tp.utils.count_params(model)
    DG = tp.DependencyGraph().build_dependency(model, TOKENS)
    plan = DG.get_pruning_plan(emb, tp.prune_embedding, [0, 1, 2, 3])
    plan.exec()
    assert model.lm_head.weight is emb.weight and emb.weight.shape == (200, 60)
    assert model.lm_head.in_features == 60
    assert n_before - tp.utils.count_params(model) == plan.params_removed
    assert outputs(model, TOKENS)[0].shape == (2, 10, 200)
