"""Execute notebooks/03_prune_and_finetune.ipynb on a fresh kernel, shrunk by PE_FAST=1."""

import os

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
