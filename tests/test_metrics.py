"""A plan knows its parameter and MAC reduction before exec; exec produces exactly that."""

import pytest
import torch
import torchvision
from torch import nn

import prune_explorer as tp
from prune_explorer.metrics import node_macs, total_macs


def measured_macs(model, x):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.g = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32 * 16, 10)

    def forward(self, x):
        h = self.dw(torch.relu(self.g(torch.relu(self.a(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 4), 1))


@pytest.mark.parametrize("factory,root,idxs,size", [
    (lambda: torchvision.models.resnet18(), "conv1", [2, 6, 9], 64),
    (lambda: torchvision.models.resnet18(), "layer3.0.conv1", list(range(0, 256, 3)), 64),
    (lambda: torchvision.models.mobilenet_v2(), "features.2.conv.0.0", list(range(20)), 64),
    (Mixed, "a", [0, 1, 2, 3], 16),
    (Mixed, "g", [1, 9, 17, 25], 16),
    (lambda: torchvision.models.vit_b_16(image_size=64), "encoder.layers.encoder_layer_3.mlp.0",
     list(range(0, 3072, 4)), 64),
])
def test_predicted_params_and_macs_equal_measured(factory, root, idxs, size):
    model = factory().eval()
    x = torch.randn(1, 3, size, size)
    DG = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    macs_before = measured_macs(model, x)
    assert total_macs(DG.graph) == macs_before  # the graph's own count agrees with torch
    params_before = tp.utils.count_params(model)
    plan = DG.get_pruning_plan(root, "out", idxs)
    assert plan.params_removed > 0 and plan.macs_removed > 0
    assert sum(s.params for s in plan.steps) == plan.params_removed
    assert sum(s.macs for s in plan.steps) == plan.macs_removed
    plan.exec()
    assert params_before - tp.utils.count_params(model) == plan.params_removed
    assert macs_before - measured_macs(model, x) == plan.macs_removed
    assert total_macs(DG.graph) == macs_before - plan.macs_removed


def test_per_node_macs_cover_every_conv_and_linear():
    model = torchvision.models.resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    macs = node_macs(DG.graph)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert macs[name] > 0, name
    assert macs["relu"] == 0
