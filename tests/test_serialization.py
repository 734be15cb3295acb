"""tp.save / tp.load: weights in safetensors, the pruning history in JSON, replayed on a fresh
model. Round trips must be bit-identical; a history that does not fit is refused by name."""

import functools
import json
import os

import pytest
import torch
import torchvision
from torch import nn

import prune_explorer as tp
from oracle import snapshot, state_equal


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def small_vit():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                num_heads=4, hidden_dim=64, mlp_dim=128,
                                                num_classes=10)


def assert_round_trip(model, factory, x, path):
    model.eval()
    expected = model(x)
    before = snapshot(model)
    tp.save(model, path)
    assert state_equal(before, snapshot(model))  # saving changes nothing
    loaded = tp.load(path, factory).eval()
    assert state_equal(snapshot(model), snapshot(loaded))  # bit-identical, same names
    for (n, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert a.dtype == b.dtype and a.requires_grad == b.requires_grad, n
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert tp.history_of(loaded) == json.loads(json.dumps(tp.history_of(model)))
    return loaded


def test_resnet18_after_dg_plans_and_prune_model(tmp_path):
    model = torchvision.models.resnet18().eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64)
    DG = tp.DependencyGraph().build_dependency(model, x)
    DG.get_pruning_plan(model.conv1, tp.prune_conv, [2, 6, 9]).exec()
    DG.get_pruning_plan("layer2.0.conv1", "out", list(range(0, 128, 5))).exec()
    DG.get_pruning_plan("layer3.1.conv2", tp.prune_related_conv, [0, 1]).exec()
    tp.prune_model(model, x, amount=0.3, strategy="l2", ignored_layers=[model.fc])
    assert len(tp.history_of(model)) == 4
    loaded = assert_round_trip(model, torchvision.models.resnet18, x, tmp_path / "r18")
    assert loaded.conv1.out_channels == model.conv1.out_channels
    assert loaded.layer2[0].conv1.out_channels == model.layer2[0].conv1.out_channels
    # the loaded model prunes further and saves again
    tp.prune_model(loaded, x, amount=0.2, ignored_layers=[loaded.fc])
    again = assert_round_trip(loaded, torchvision.models.resnet18, x, tmp_path / "r18b")
    assert len(tp.history_of(again)) == 5


def test_densenet121(tmp_path):
    model = torchvision.models.densenet121().eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64)
    DG = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    DG.get_pruning_plan("features.conv0", "out", [0, 5, 7]).exec()
    DG.get_pruning_plan("features.denseblock2.denselayer3.conv2", "out", [1, 4]).exec()
    tp.prune_model(model, x, amount=0.25, ignored_layers=[model.classifier])
    assert_round_trip(model, torchvision.models.densenet121, x, tmp_path / "dense")


def test_small_vit_with_heads_and_mlp(tmp_path):
    model = small_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    DG = tp.DependencyGraph().build_dependency(model, x)
    attn = "encoder.layers.encoder_layer_0.self_attention"
    DG.get_pruning_plan(attn, "out", list(range(16, 32))).exec()  # head 1 of 4
    DG.get_pruning_plan("encoder.layers.encoder_layer_1.mlp.0", "out", [0, 3, 77]).exec()
    DG.get_pruning_plan("conv_proj", "out", [1, 2]).exec()  # the hidden size
    tp.prune_model(model, x, amount=0.25, ignored_layers=[model.heads.head])
    loaded = assert_round_trip(model, small_vit, x, tmp_path / "vit")
    a, b = model.get_submodule(attn), loaded.get_submodule(attn)
    assert (a.num_heads, a.embed_dim, a.head_dim) == (b.num_heads, b.embed_dim, b.head_dim)
    assert b.num_heads == 3
    assert loaded.hidden_dim == model.hidden_dim


def test_single_file_format(tmp_path):
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    tp.prune_model(model, x, amount=0.4, ignored_layers=[model.fc])
    path = tmp_path / "model.safetensors"
    assert_round_trip(model, torchvision.models.resnet18, x, path)
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_directory_format_is_plain_json_and_safetensors(tmp_path):
    model = torchvision.models.resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    DG.get_pruning_plan(model.conv1, tp.prune_conv, [2, 6, 9]).exec()
    tp.save(model, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["history.json", "model.safetensors"]
    doc = json.loads((tmp_path / "out" / "history.json").read_text())
    assert doc["format"] == "prune_explorer.history" and doc["version"] == 1
    assert doc["model_class"] == "torchvision.models.resnet.ResNet"
    entry = doc["history"][0]
    assert entry["root"] == "conv1" and entry["idxs"] == [2, 6, 9]
    assert ["conv1.weight", 0, [2, 6, 9]] in entry["actions"]["cuts"]
    from safetensors.torch import load_file
    assert load_file(tmp_path / "out" / "model.safetensors")["conv1.weight"].shape[0] == 61


def test_an_unpruned_model_round_trips(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    factory = lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))  # noqa: E731
    assert_round_trip(model, factory, torch.randn(2, 3), tmp_path / "plain")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.mix = nn.Linear(16, 16)
        self.lm_head = nn.Linear(16, 40, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, ids):
        return self.lm_head(torch.relu(self.mix(self.emb(ids))) + self.emb(ids))


def test_tied_weights_stay_tied(tmp_path):
    model = Tied().eval()
    ids = torch.randint(0, 40, (2, 7))
    DG = tp.DependencyGraph().build_dependency(model, ids)
    DG.get_pruning_plan(model.emb, tp.prune_embedding, [1, 5, 9]).exec()
    assert model.lm_head.weight is model.emb.weight and model.emb.weight.shape == (40, 13)
    loaded = assert_round_trip(model, Tied, ids, tmp_path / "tied")
    assert loaded.lm_head.weight is loaded.emb.weight
    assert loaded.emb.embedding_dim == 13 and loaded.lm_head.in_features == 13
    doc = json.loads((tmp_path / "tied" / "history.json").read_text())
    assert doc["aliases"] == {"lm_head.weight": "emb.weight"}


class SplitSizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 1)
        self.p, self.q = nn.Conv2d(4, 6, 1), nn.Conv2d(8, 6, 1)
        self.sizes = [4, 8]

    def forward(self, x):
        a, b = torch.split(self.stem(x), self.sizes, dim=1)
        return self.p(a) + self.q(b)


def test_python_attributes_are_replayed_with_their_type(tmp_path):
    model = SplitSizes().eval()
    x = torch.randn(1, 3, 5, 5)
    DG = tp.DependencyGraph().build_dependency(model, x)
    DG.get_pruning_plan(model.stem, "out", [1, 9]).exec()
    loaded = assert_round_trip(model, SplitSizes, x, tmp_path / "s")
    assert loaded.sizes == [3, 7] and isinstance(loaded.sizes, list)


def test_torch_save_of_a_pruned_model_still_works(tmp_path):
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    tp.prune_model(model, x, amount=0.5, ignored_layers=[model.fc])
    torch.save(model, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=False).eval()
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert tp.history_of(back) == tp.history_of(model)  # the history travels in __dict__
    # and a torch.load-ed model can still be saved the safe way
    assert_round_trip(back, torchvision.models.resnet18, x, tmp_path / "safe")


# ---- refusals ---------------------------------------------------------------------------------
@pytest.fixture
def saved_resnet(tmp_path):
    model = torchvision.models.resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    DG.get_pruning_plan(model.conv1, tp.prune_conv, [2, 6, 9]).exec()
    DG.get_pruning_plan("layer1.0.conv1", "out", [0, 1]).exec()
    path = tmp_path / "r18"
    tp.save(model, path)
    return path


def _edit_history(path, fn):
    f = path / "history.json"
    doc = json.loads(f.read_text())
    fn(doc)
    f.write_text(json.dumps(doc))


def test_history_of_another_architecture_is_refused(saved_resnet):
    with pytest.raises(tp.HistoryMismatchError, match=r"'conv1\.weight'.*(VGG)"):
        tp.load(saved_resnet, torchvision.models.vgg11)
    # same tensor names, different widths: the weights no longer fit
    with pytest.raises(tp.HistoryMismatchError, match=r"layer\d.*(not in the file|shape)"):
        tp.load(saved_resnet, torchvision.models.resnet34)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["history"][1]["actions"]["cuts"][0].__setitem__(2, [0, 999]),
     r"history entry 1.*layer1\.0\.conv1\.weight.*index 999"),
    (lambda d: d["history"][0]["actions"]["cuts"][0].__setitem__(1, 7),
     r"history entry 0.*'conv1\.weight'.*no dim 7"),
    (lambda d: d["history"][0]["actions"]["cuts"][0].__setitem__(0, "conv9.weight"),
     r"'conv9\.weight' does not exist"),
    (lambda d: d["history"][0]["actions"]["cuts"][0].__setitem__(0, "conv1.kernel"),
     r"conv1 has no parameter or buffer 'kernel'"),
    (lambda d: d["history"][0]["actions"]["sync"].append("layer9"),
     r"module 'layer9' does not exist"),
    (lambda d: d["history"][0]["actions"].pop("cuts"), "malformed"),
    (lambda d: d.__setitem__("format", "something else"), "not a prune_explorer history"),
])
def test_a_history_that_does_not_fit_is_refused_before_anything_is_applied(
        saved_resnet, edit, match):
    _edit_history(saved_resnet, edit)
    fresh = torchvision.models.resnet18()
    before = snapshot(fresh)
    with pytest.raises(tp.HistoryMismatchError, match=match):
        tp.load(saved_resnet, fresh)
    # validated as a whole (on a shapes-only shadow) before the first action touches the model
    assert state_equal(before, snapshot(fresh)) and fresh.conv1.out_channels == 64
    assert tp.history_of(fresh) == []


def test_weights_that_do_not_match_the_replayed_shapes_are_refused(saved_resnet):
    from safetensors.torch import load_file, save_file
    f = saved_resnet / "model.safetensors"
    weights = load_file(f)
    weights["layer1.0.bn1.weight"] = torch.ones(64)
    save_file(weights, f)
    with pytest.raises(tp.HistoryMismatchError, match=r"'layer1\.0\.bn1\.weight' has shape "
                                                      r"\[62\] but the file holds \[64\]"):
        tp.load(saved_resnet, torchvision.models.resnet18)


def test_an_already_pruned_model_is_not_a_valid_factory(saved_resnet):
    model = torchvision.models.resnet18().eval()
    tp.prune_model(model, torch.randn(1, 3, 32, 32), amount=0.5, ignored_layers=[model.fc])
    with pytest.raises(tp.HistoryMismatchError, match="fresh, unpruned model"):
        tp.load(saved_resnet, model)


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tp.load(tmp_path / "nothing", torchvision.models.resnet18)
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="history.json is missing"):
        tp.load(tmp_path / "half", torchvision.models.resnet18)
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(1)}, tmp_path / "foreign.safetensors")
    with pytest.raises(tp.HistoryMismatchError, match="not written by tp.save"):
        tp.load(tmp_path / "foreign.safetensors", torchvision.models.resnet18)


def test_custom_factory_with_arguments(tmp_path):
    factory = functools.partial(torchvision.models.resnet18, num_classes=7)
    model = factory().eval()
    x = torch.randn(1, 3, 32, 32)
    tp.prune_model(model, x, amount=0.3, ignored_layers=[model.fc])
    assert_round_trip(model, factory, x, tmp_path / "p")


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.fc, self.head = nn.Linear(6, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.relu(self.stem(x)))))


def test_history_where_a_size_is_rederived_after_an_int_update(tmp_path):
    # found by the fuzzer: a plan may record an int update that the layer's own size sync then
    # re-derives (fc.out_features, when only fc's inputs shrink); validation replays on a
    # shapes-only shadow, so the next entry's recorded old value is checked against the truth
    model = Tokens().eval()
    x = torch.randn(2, 3, 6)
    DG = tp.DependencyGraph().build_dependency(model, x)
    DG.get_pruning_plan("stem", "out", [0]).exec()
    DG.get_pruning_plan("fc", "out", [1]).exec()
    loaded = assert_round_trip(model, Tokens, x, tmp_path / "t")
    assert (loaded.fc.in_features, loaded.fc.out_features) == (3, 3)


def test_history_keeps_at_most_4096_indices_of_a_plan():
    from types import SimpleNamespace
    from prune_explorer.execution import record_history
    plan = SimpleNamespace(root="fc", side="out", idxs=range(5000), params_removed=1,
                           macs_removed=2, actions=SimpleNamespace(to_dict=lambda: {}))
    model = nn.Linear(2, 2)
    record_history(model, plan)
    [entry] = tp.history_of(model)
    assert entry["idxs"] == list(range(4096)) and entry["kind"] == "plan"
