"""The explorer in marimo: `marimo run notebooks/explore_marimo.py` (or `marimo edit`).

marimo shows anywidgets (the graph canvas) but not ipywidgets' controls, so the controls and
charts here are marimo's own; every one of them calls a method of the same `Explorer`.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="prune_explorer")


@app.cell
def _():
    import marimo as mo
    import torch
    import torchvision

    from prune_explorer import Explorer
    from prune_explorer.widget import panels

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()  # random weights: nothing is downloaded
    ex = Explorer(model, torch.randn(1, 3, 224, 224))
    return ex, mo, panels


@app.cell
def _(ex, mo):
    strategy = mo.ui.dropdown({"L1 norm": "l1", "L2 norm": "l2", "random": "random",
                               "BN scale": "bn_scale", "LAMP": "lamp"},
                              value="L1 norm", label="strategy")
    amount = mo.ui.slider(0.05, 0.95, step=0.05, value=0.3, label="amount",
                          show_value=True)
    commit = mo.ui.run_button(label="Commit", kind="success")
    undo = mo.ui.run_button(label="Undo")
    whole = mo.ui.run_button(label="Preview whole model")
    graph = mo.ui.anywidget(ex.canvas)  # click a layer: its plan is highlighted at once
    mo.vstack([mo.md("**prune_explorer** · click a layer to preview its plan"),
               mo.hstack([strategy, amount, whole, commit, undo], justify="start"), graph])
    return amount, commit, graph, strategy, undo, whole


@app.cell
def _(amount, ex, strategy):
    ex.set_strategy(strategy.value, amount.value)  # the next click (and this one) use these
    controls = (strategy.value, amount.value)
    return (controls,)


@app.cell
def _(commit, controls, ex, graph, mo, panels, undo, whole):
    # re-runs after every click in the graph (graph.value) and every control
    _ = (graph.value, controls)
    try:
        if whole.value:
            ex.preview_model(amount=controls[1], strategy=controls[0])
        if commit.value:
            ex.commit()
        if undo.value:
            ex.undo()
    except Exception as exc:  # shown in the status line
        ex.error = f"{type(exc).__name__}: {exc}"
    _figs = ex.figures(("plan", "detail"))  # detail: channel importance, or whole-model losses
    mo.vstack([mo.Html(panels.plan_panel_html(ex)), _figs["plan"], _figs["detail"]])
    return


if __name__ == "__main__":
    app.run()
