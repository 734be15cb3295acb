"""The Jupyter explorer: ``Explorer(model, example_inputs)``.

``Explorer`` (the state machine and programmatic twin) needs only the engine and Graphviz's
``dot``; its ipywidgets/anywidget/plotly UI is built when it is first displayed.
"""

from .explorer import Explorer

__all__ = ["Explorer"]
