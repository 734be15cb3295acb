"""Regenerate notebooks/explore.ipynb and execute it, so it is committed with its outputs
(the explorer widget's state included: JupyterLab shows it before the kernel runs).

    python notebooks/build_explore.py
"""

import pathlib

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).parent

INTRO = """# prune_explorer — the Explorer

A randomly initialised **ResNet-18** (no downloads). Run the cell below, then:

- **click a layer** in the graph: it becomes the plan's root and a plan is previewed at once
  (L1, 30% by default) — every coupled layer lights up: **root** (amber), **output channels
  pruned** (red), **input channels pruned** (blue), **pass-through ops** (violet). Hover a node
  for its mapped indices and *why* it is coupled;
- change the **strategy / amount / round_to**, or type **indices** (`2, 6, 9` or `0-15`);
- switch to **Whole model** to preview `prune_model` on every group (a heatmap of what each
  layer loses);
- **Commit** executes the plan (transactional), **Undo** restores the exact weights,
  **Export** writes `plan.json`, the pruned model, `graph.svg` and a standalone `report.html`.

Search finds a layer by name or type (Enter cycles); drag or scroll to pan, ctrl/⌘ + wheel to
zoom, *fit* to see everything; click a cluster's title to collapse it."""

CODE = """import torch, torchvision
from prune_explorer import Explorer

torch.manual_seed(0)
model = torchvision.models.resnet18().eval()   # random weights: nothing is downloaded
ex = Explorer(model, torch.randn(1, 3, 224, 224))
ex"""

TWIN = """### The same, programmatically

The widget calls exactly these methods (so everything is scriptable and testable):

```python
ex.select("layer1.0.conv1")                 # root; previews with the current controls
ex.set_indices([2, 6, 9])                   # or "2, 6, 9" / "0-15"
ex.set_strategy("l1", amount=0.3, round_to=8)
ex.set_policy("dims")                       # widen to the same slots per head (or "heads")
ex.plan, ex.highlighted, ex.svg             # PruningPlan, node -> role/indices, SVG text
ex.preview_model(amount=0.3, strategy="l1") # whole-model dry run (classifier ignored)
ex.commit(); ex.undo(); ex.export("explorer_export")
```"""


def build(execute: bool = True) -> pathlib.Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(INTRO), nbformat.v4.new_code_cell(CODE),
                nbformat.v4.new_markdown_cell(TWIN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    if execute:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={
            "metadata": {"path": str(HERE)}}, store_widget_state=True).execute()
    path = HERE / "explore.ipynb"
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    print(build())
