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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(session, config, items):
    """The rule-coverage check reads what the twin checks of this session recorded: run it
    after them."""
    last = [i for i in items if i.fspath.basename == "test_rule_coverage.py"]
    items[:] = [i for i in items if i not in last] + last
