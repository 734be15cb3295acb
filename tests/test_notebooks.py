"""Execute the notebooks on a fresh kernel: 03_prune_and_finetune (shrunk by PE_FAST=1),
01_why_layers_are_coupled and 02_audit_a_plan (and check that 01/02 are what
notebooks/build_01_02.py generates, committed with outputs)."""

import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "notebooks", "03_prune_and_finetune.ipynb")


@pytest.mark.notebook
@pytest.mark.timeout(600)
def test_prune_and_finetune_notebook_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("sklearn")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("PE_FAST", "1")
    nb = nbformat.read(NB, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.dirname(NB)}})
    client.execute()  # raises CellExecutionError on any failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "FAST=True" in text
    assert "Goal (10x fewer params" in text


# ---- 01 (why layers are coupled) and 02 (audit a plan), built by notebooks/build_01_02.py ----
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def _builder():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "build_01_02", os.path.join(NOTEBOOKS, "build_01_02.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("key", ["01", "02"])
def test_committed_notebook_is_the_builders_and_executed(key):
    """The committed notebook has the builder's cells (regenerate with
    `python notebooks/build_01_02.py`) and was executed: every code cell ran, all but the
    imports have outputs, no error, and the file stays small."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    builder = _builder()
    name, cells = builder.NOTEBOOKS[key]
    path = os.path.join(NOTEBOOKS, name)
    nb = nbformat.read(path, as_version=4)
    assert [(c.cell_type, c.source) for c in nb.cells] == \
        [(c.cell_type, c.source) for c in cells], f"{name} is stale: run build_01_02.py {key}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{name} was committed unexecuted"
    assert sum(bool(c.outputs) for c in code) >= len(code) - 1, f"{name} has no outputs"
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert os.path.getsize(path) < 2_000_000


def _execute(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("PE_FIGURES", str(tmp_path))  # the PNGs: not into the checkout
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:  # a fresh run: nothing from the committed outputs
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    return nb, outputs, text


@pytest.mark.notebook
@pytest.mark.timeout(600)
def test_coupling_notebook_runs(tmp_path, monkeypatch):
    pytest.importorskip("plotly")
    pytest.importorskip("ipywidgets")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    _nb, outputs, text = _execute(os.path.join(NOTEBOOKS, "01_why_layers_are_coupled.ipynb"),
                                  tmp_path, monkeypatch)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 11 and all(p.stat().st_size > 5000 for p in tmp_path.glob("*.png"))
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 11
    # every section's check ran: 11 plans executed and compared with their twin
    assert text.count("OK, the pruned model computes what its twin computes") == 11
    assert "channel 3 → features 147–195" in "".join(
        o["data"].get("text/markdown", "") for o in outputs if "data" in o)


@pytest.mark.notebook
@pytest.mark.timeout(600)
def test_audit_notebook_runs(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    pytest.importorskip("plotly")
    _nb, outputs, text = _execute(os.path.join(NOTEBOOKS, "02_audit_a_plan.ipynb"),
                                  tmp_path, monkeypatch)
    assert "outputs match the masked twin" in text
    assert re.search(r"per layer: (\d+) of \1 layers have exactly the predicted", text)
    assert "skipped layer4.0.conv3: coupled to the output channels of ignored layer" in text
    assert os.path.exists(os.path.join(ROOT, "out", "notebooks",
                                       "02_resnet50_global_l1_50.html"))
