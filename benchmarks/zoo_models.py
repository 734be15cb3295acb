"""Model builders for the three zoos (torchvision, timm, Hugging Face transformers).

Every builder returns ``(model, example_inputs, classifier)`` for a *fresh*, randomly
initialised model in eval mode. ``example_inputs`` is a tensor or a dict of keyword
arguments; ``classifier`` is the layer whose output channels must be kept.
"""

from __future__ import annotations

import json
import os
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GIANT_PARAMS = 300_000_000
TIMM_MAX_SIZE = 256


def last_linear(model: nn.Module) -> nn.Module | None:
    """The model's last nn.Linear; for an all-conv classifier (SqueezeNet) its last conv."""
    last = last_conv = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
        elif isinstance(m, nn.modules.conv._ConvNd):
            last_conv = m
    return last if last is not None else last_conv


# ----------------------------------------------------------------------------- torchvision

def torchvision_names() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(name: str):
    import torchvision
    kw = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kw["init_weights"] = True
    model = torchvision.models.get_model(name, **kw).eval()
    size = 299 if name == "inception_v3" else 224
    return model, torch.randn(1, 3, size, size), last_linear(model)


# ----------------------------------------------------------------------------- timm

def _timm_sizes_path():
    import timm
    return os.path.join(RESULTS, f"timm_{timm.__version__}_sizes.json")


def timm_family_sizes() -> dict[str, dict[str, int]]:
    """{family (timm module): {model name: params}}, counted on the meta device, cached."""
    import timm
    path = _timm_sizes_path()
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    out: dict[str, dict[str, int]] = {}
    for module in timm.list_modules():
        sizes = {}
        for name in timm.list_models(module=module):
            if name.startswith("test_"):
                continue  # timm's tiny unit-test configs are not real variants
            try:
                with torch.device("meta"):
                    m = timm.create_model(name, pretrained=False)
                sizes[name] = sum(p.numel() for p in m.parameters())
            except Exception:  # noqa: BLE001 - a variant that cannot be built is just not picked
                continue
        if sizes:
            out[module] = sizes
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
    return out


def timm_names(family: str | None = None) -> list[str]:
    """The smallest variant of each timm family (a family = one timm model module)."""
    picks = []
    for module, sizes in sorted(timm_family_sizes().items()):
        if family and family not in module:
            continue
        picks.append(min(sizes, key=lambda n: (sizes[n], n)))
    return picks


def build_timm(name: str):
    import timm
    cfg = timm.get_pretrained_cfg(name)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    kw = {}
    if max(size[1:]) > TIMM_MAX_SIZE:
        size = (size[0], TIMM_MAX_SIZE, TIMM_MAX_SIZE)
        kw["img_size"] = TIMM_MAX_SIZE
    try:
        model = timm.create_model(name, pretrained=False, **kw)
    except TypeError:
        model = timm.create_model(name, pretrained=False)
        size = tuple(model.pretrained_cfg.get("input_size", size))
    model.eval()
    return model, torch.randn(1, *size), model.get_classifier()


# ----------------------------------------------------------------------------- transformers

SEQ = 16
VOCAB = 1000


def _tokens(enc_dec=False, seq=SEQ, vocab=VOCAB):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (1, seq), generator=g)
    d = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if enc_dec:
        d["decoder_input_ids"] = torch.randint(3, vocab, (1, seq), generator=g)
    return d


def _pixels(size):
    return {"pixel_values": torch.randn(1, 3, size, size)}


def _small(**extra):
    base = dict(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=256, max_position_embeddings=128)
    base.update(extra)
    return base


def _hf_specs(use_cache: bool):
    import transformers as T
    c = {"use_cache": use_cache}
    vit = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=256, image_size=64, patch_size=8, num_labels=10)
    return {
        # encoders
        "bert": lambda: (T.BertForSequenceClassification(T.BertConfig(**_small())), _tokens()),
        "roberta": lambda: (T.RobertaForSequenceClassification(T.RobertaConfig(**_small())),
                            _tokens()),
        "distilbert": lambda: (T.DistilBertForSequenceClassification(T.DistilBertConfig(
            vocab_size=VOCAB, dim=128, n_layers=2, n_heads=4, hidden_dim=256,
            max_position_embeddings=128)), _tokens()),
        "albert": lambda: (T.AlbertForSequenceClassification(T.AlbertConfig(
            **_small(embedding_size=64))), _tokens()),
        "electra": lambda: (T.ElectraForSequenceClassification(T.ElectraConfig(
            **_small(embedding_size=64))), _tokens()),
        "deberta-v2": lambda: (T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
            **_small())), _tokens()),
        # decoders
        "gpt2": lambda: (T.GPT2LMHeadModel(T.GPT2Config(
            vocab_size=VOCAB, n_embd=128, n_layer=2, n_head=4, n_positions=128, **c)),
            _tokens()),
        "gpt-neo": lambda: (T.GPTNeoForCausalLM(T.GPTNeoConfig(
            vocab_size=VOCAB, hidden_size=128, num_layers=2, num_heads=4,
            attention_types=[[["global", "local"], 1]], window_size=8,
            max_position_embeddings=128, **c)), _tokens()),
        "opt": lambda: (T.OPTForCausalLM(T.OPTConfig(
            vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
            ffn_dim=256, word_embed_proj_dim=128, max_position_embeddings=128, **c)),
            _tokens()),
        "llama-gqa": lambda: (T.LlamaForCausalLM(T.LlamaConfig(
            **_small(num_key_value_heads=2), **c)), _tokens()),
        "mistral-gqa": lambda: (T.MistralForCausalLM(T.MistralConfig(
            **_small(num_key_value_heads=2), sliding_window=None, **c)), _tokens()),
        "qwen2-gqa": lambda: (T.Qwen2ForCausalLM(T.Qwen2Config(
            **_small(num_key_value_heads=2), **c)), _tokens()),
        "phi": lambda: (T.PhiForCausalLM(T.PhiConfig(**_small(), **c)), _tokens()),
        "mixtral-moe": lambda: (T.MixtralForCausalLM(T.MixtralConfig(
            **_small(num_key_value_heads=2), num_local_experts=4, num_experts_per_tok=2,
            **c)), _tokens()),
        # encoder-decoders
        "t5": lambda: (T.T5ForConditionalGeneration(T.T5Config(
            vocab_size=VOCAB, d_model=128, d_kv=32, d_ff=256, num_layers=2,
            num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, **c)),
            _tokens(enc_dec=True)),
        "bart": lambda: (T.BartForConditionalGeneration(T.BartConfig(
            vocab_size=VOCAB, d_model=128, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
            decoder_ffn_dim=256, max_position_embeddings=128, **c)), _tokens(enc_dec=True)),
        "marian": lambda: (T.MarianMTModel(T.MarianConfig(
            vocab_size=VOCAB, d_model=128, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
            decoder_ffn_dim=256, max_position_embeddings=128, pad_token_id=0,
            decoder_start_token_id=0, **c)), _tokens(enc_dec=True)),
        "pegasus": lambda: (T.PegasusForConditionalGeneration(T.PegasusConfig(
            vocab_size=VOCAB, d_model=128, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
            decoder_ffn_dim=256, max_position_embeddings=128, **c)), _tokens(enc_dec=True)),
        # speech
        "wav2vec2": lambda: (T.Wav2Vec2ForSequenceClassification(T.Wav2Vec2Config(
            hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
            conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=10)),
            {"input_values": torch.randn(1, 4000)}),
        # vision
        "vit": lambda: (T.ViTForImageClassification(T.ViTConfig(**vit)), _pixels(64)),
        "deit": lambda: (T.DeiTForImageClassification(T.DeiTConfig(**vit)), _pixels(64)),
        "beit": lambda: (T.BeitForImageClassification(T.BeitConfig(
            **vit, use_relative_position_bias=True)), _pixels(64)),
        "swin": lambda: (T.SwinForImageClassification(T.SwinConfig(
            image_size=64, patch_size=4, embed_dim=32, depths=[2, 2], num_heads=[2, 4],
            window_size=4, num_labels=10)), _pixels(64)),
        "convnext": lambda: (T.ConvNextForImageClassification(T.ConvNextConfig(
            hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_labels=10)),
            _pixels(64)),
        "segformer": lambda: (T.SegformerForImageClassification(T.SegformerConfig(
            hidden_sizes=[32, 64, 128, 160], depths=[1, 1, 1, 1], num_labels=10,
            decoder_hidden_size=128)), _pixels(64)),
    }


def hf_names() -> list[str]:
    return list(_hf_specs(False))


def build_hf(name: str, use_cache: bool = False):
    torch.manual_seed(0)
    model, inputs = _hf_specs(use_cache)[name]()
    model.eval()
    return model, inputs, last_linear(model)


def hf_num_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Torch-Pruning's ``num_heads`` option: {q/k/v projection: its number of heads}, found
    from the attention modules' q/k/v children and the model's config (GQA aware)."""
    q_names = ("query", "q_proj", "q", "q_lin")
    kv_names = ("key", "value", "k_proj", "v_proj", "k", "v", "k_lin", "v_lin")
    heads = {}
    for m in model.modules():
        kids = dict(m.named_children())
        if not any(n in kids for n in q_names):
            continue
        h = (getattr(m, "num_attention_heads", None) or getattr(m, "num_heads", None)
             or getattr(m, "n_heads", None))
        cfg = getattr(m, "config", None) or getattr(model, "config", None)
        if h is None and cfg is not None:
            h = (getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None)
                 or getattr(cfg, "n_heads", None))
        if not isinstance(h, int):
            continue
        kv = getattr(m, "num_key_value_heads", None) or getattr(cfg, "num_key_value_heads", None)
        kv = kv if isinstance(kv, int) else h
        for n, sub in kids.items():
            if isinstance(sub, nn.Linear):
                if n in q_names:
                    heads[sub] = h
                elif n in kv_names:
                    heads[sub] = kv
    return heads


def hf_fix_after_tp(model: nn.Module, pruner) -> None:
    """Torch-Pruning's HF examples update the attention modules' shape attributes after
    ``pruner.step()``; the same, generically (head_dim / attention_head_size / all_head_size)."""
    for m in model.modules():
        kids = dict(m.named_children())
        q = next((kids[n] for n in ("query", "q_proj", "q", "q_lin") if n in kids), None)
        if not isinstance(q, nn.Linear):
            continue
        nh = pruner.num_heads.get(q) if hasattr(pruner, "num_heads") else None
        if nh is None:
            continue
        for attr in ("num_attention_heads", "num_heads", "n_heads"):
            if isinstance(getattr(m, attr, None), int):
                setattr(m, attr, nh)
        if isinstance(getattr(m, "attention_head_size", None), int):
            m.attention_head_size = q.out_features // nh
        if isinstance(getattr(m, "all_head_size", None), int):
            m.all_head_size = q.out_features
        if isinstance(getattr(m, "head_dim", None), int):
            m.head_dim = q.out_features // nh
        if isinstance(getattr(m, "inner_dim", None), int):
            m.inner_dim = q.out_features
        if isinstance(getattr(m, "key_value_proj_dim", None), int):
            m.key_value_proj_dim = q.out_features // nh
        if isinstance(getattr(m, "embed_dim", None), int) and hasattr(m, "out_proj"):
            m.embed_dim = q.out_features


ZOOS = {
    "torchvision": (torchvision_names, build_torchvision),
    "timm": (timm_names, build_timm),
    "hf": (hf_names, build_hf),
}
