import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import rule_coverage  # noqa: E402

rule_coverage.install()  # tag dim-graph relations with their op rule (tests/rule_coverage.py)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", message=".*weight initialization.*")


@pytest.fixture
def zoo_asked_for(request):
    """The model-zoo tests run only when asked: ``-m slow`` or ``PE_ZOO=1`` (``run.sh test --all``)."""
    markexpr = request.config.getoption("-m") or ""
    if "slow" not in markexpr and os.environ.get("PE_ZOO", "") in ("", "0"):
        pytest.skip("model zoo: run with `pytest -m slow` or PE_ZOO=1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """Browser and notebook tests start a server or a kernel: they count as slow, so the
    default `bash run.sh test` leaves them to `bash run.sh test --all` (as CI runs)."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("notebook"):
            item.add_marker(pytest.mark.slow)
