"""The torchvision zoo for prune_explorer alone: every classifier under 300M parameters must
survive ``prune_model(amount=0.5, strategy="l1", ignored_layers=[classifier])`` - run, keep its
output shape and lose at least 35% of its parameters (Torch-Pruning removes ~73% of a
typical CNN at this setting).

Slow (~76 models, each in its own process under a 300 s timeout): it runs only when asked
for, with ``pytest -m slow tests/test_zoo.py`` or ``PE_ZOO=1``. The comparison with
Torch-Pruning is ``python benchmarks/zoo.py torchvision``.
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

MIN_REMOVED = 0.35
TIMEOUT = 300


def _names():
    import zoo_models
    return zoo_models.torchvision_names()


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("name", _names())
def test_torchvision_zoo(name, zoo_asked_for):
    import zoo
    r = zoo.run_one("torchvision", name, "ours", TIMEOUT, use_cache=False)
    if r["status"] == "giant":
        pytest.skip(f"{name}: {r['params_before'] / 1e6:.0f}M parameters (> 300M)")
    assert r["status"] == "ran", f"{name}: {r['status']}: {r.get('error')}"
    removed = zoo.removed(r)
    assert removed >= MIN_REMOVED, (
        f"{name}: only {100 * removed:.1f}% of parameters removed at amount 0.5 "
        f"(want >= {100 * MIN_REMOVED:.0f}%); skipped groups: {r['info'].get('skipped_first')}")
