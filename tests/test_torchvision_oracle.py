"""Plans rooted across torchvision models: the pruned model equals its masked twin."""

import random

import pytest
import torch
import torchvision
from torch import nn

import prune_explorer as tp
from oracle import assert_matches_twin

MODELS = {
    "resnet18": 64, "resnet50": 64, "densenet121": 64, "mobilenet_v2": 64,
    "mobilenet_v3_small": 64, "googlenet": 64, "inception_v3": 96, "efficientnet_b0": 64,
    "regnet_x_400mf": 64, "shufflenet_v2_x1_0": 64, "squeezenet1_1": 64, "vgg11_bn": 32,
}


def build(name):
    if name == "deeplabv3_mobilenet_v3_large":
        return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None).eval()
    kwargs = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return getattr(torchvision.models, name)(**kwargs).eval()


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)


@pytest.mark.parametrize("name", list(MODELS) + ["deeplabv3_mobilenet_v3_large"])
def test_plans_match_masked_twin(name):
    size = MODELS.get(name, 64)
    rng = random.Random(name)
    model = build(name)
    _randomise_bn(model)
    x = torch.randn(2, 3, size, size)
    DG = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    convs = [n for n in DG.graph.module_nodes if isinstance(model.get_submodule(n), nn.Conv2d)]
    picks = [convs[0], convs[len(convs) // 3], convs[(2 * len(convs)) // 3], convs[-2]]
    checked = 0
    for root in picks:
        c = model.get_submodule(root).out_channels
        plan = None
        # random channels, or (where a grouped conv widens random picks to every channel)
        # a contiguous block, which is whole groups
        for idxs in (sorted(rng.sample(range(c), max(1, c // 4))), list(range(max(1, c // 4)))):
            try:
                plan = DG.get_pruning_plan(root, tp.prune_conv, idxs)
                break
            except tp.PruneAllChannelsError:
                continue
            except tp.UnsupportedOperationError:
                break  # a layer feeding the model output directly
        if plan is None:
            continue
        assert plan.params_removed > 0
        assert_matches_twin(model, plan, x, atol=1e-4, rtol=1e-3)
        checked += 1
    assert checked >= 3
