"""The classic 0.2.x ``tests/test_torchvision_models.py`` over every torchvision classifier:
random Conv2d/BatchNorm2d layers pruned by ``min(ch // 2, 10)`` random channels with
``DG.get_pruning_plan(layer, tp.prune_conv / tp.prune_batchnorm, idxs)``; every plan that keeps
the output matches the masked twin (where it is exact: no LayerNorm/GroupNorm cut) or at least
keeps the output shape, every plan that changes it (a conv classifier) shrinks exactly the
pruned dim.

Slow (~76 models at 224x224): it runs with ``pytest -m slow tests/test_classic_zoo.py`` or
``PE_ZOO=1``, as tests/test_zoo.py does. A fast subset is in tests/test_classic.py.
"""

import os
import random
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

GIANT = 300_000_000
ORACLE_MAX = 100_000_000  # above this, deep-copying a masked twin per plan costs too much


def _names():
    import zoo_models
    return zoo_models.torchvision_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", _names())
def test_classic_random_layers(name, zoo_asked_for):
    import torchvision
    from test_classic import classic_random_prune
    try:
        with torch.device("meta"):  # count without allocating (vit_h_14 is 632M)
            n = sum(p.numel() for p in
                    torchvision.models.get_model(name, weights=None).parameters())
    except NotImplementedError:  # an init that reads values (regnet): count for real
        n = sum(p.numel() for p in torchvision.models.get_model(name, weights=None).parameters())
    if n > GIANT:
        pytest.skip(f"{name}: {n / 1e6:.0f}M parameters (> 300M)")
    import zoo_models
    model, x, _ = zoo_models.build_torchvision(name)
    checked, changed = classic_random_prune(model, x, random.Random(name), 2,
                                            oracle=n <= ORACLE_MAX)
    assert checked + changed >= 1
