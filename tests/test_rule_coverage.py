"""Every op rule in ``prune_explorer/op_rules*.py`` is exercised by a masked-twin check: some
plan checked by the oracle (tests/oracle.py) prunes channels through a relation that rule
declared (tests/rule_coverage.py tags them). The op tests run in a subprocess that records
what they exercised; a new rule without a model that exercises it fails here, by name.
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

import rule_coverage

HERE = os.path.dirname(os.path.abspath(__file__))
# the files whose twin checks count (tests/test_ops_rules.py holds the models written for the
# rules nothing else reached)
EXERCISERS = ["test_ops.py", "test_ops_rules.py", "test_layers.py", "test_realworld_ops.py"]


@pytest.mark.slow
def test_every_rule_is_exercised_by_a_masked_twin_check():
    out = os.path.join(tempfile.gettempdir(), f"pe_rule_coverage_{os.getpid()}.json")
    env = dict(os.environ, PE_RULE_COVERAGE_OUT=out)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p",
           "no:xdist", *[os.path.join(HERE, f) for f in EXERCISERS]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out) as f:
        exercised = set(json.load(f))
    os.remove(out)
    missing = sorted(rule_coverage.all_rules() - exercised)
    assert not missing, (f"op rules no masked-twin test prunes channels through: {missing}; add "
                         f"a model that does to tests/test_ops_rules.py")
