"""Running the stage notebooks: parameters, the Jupyter kernel, and papermill's command line.

* ``setup``: what a stage notebook's first cell calls: find the project, read params.yaml with the
  notebook's overrides, one figure style;
* ``kernel``: the ``warmstart`` Jupyter kernel (``python -m warmstart.notebook.kernel install``);
* ``run``: ``python -m warmstart.notebook.run``, papermill's command line, faster to start.
"""
