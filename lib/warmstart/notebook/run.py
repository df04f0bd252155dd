"""``python -m warmstart.notebook.run``: papermill's command line (same arguments), 1.3-1.7 s faster to start.

Every DVC stage runs its notebook through this (``vars.nb`` in ``dvc.yaml``). Plain
``papermill`` spends most of its start-up importing ``rfc3987_syntax``: nbformat's
validator imports jsonschema, whose optional IRI format checker (installed for
JupyterLab's jupyter-events) builds a Lark grammar at import. Notebook
validation uses no IRI format, so the checker is marked absent for this
process only; jsonschema then leaves those formats unchecked, as it does
wherever the package is not installed. Measured on the 2-core CPU VM:
``import papermill.cli`` 1.9-2.3 s, 0.6 s with the checker absent; the study
runs 33 notebooks. It also makes the folder of the executed copy (papermill does not).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    from warmstart.notebook.kernel import tune_gc

    tune_gc()
    notebooks = [a for a in sys.argv[1:] if a.endswith(".ipynb")]
    if len(notebooks) >= 2:  # papermill writes the executed copy but does not make its folder
        Path(notebooks[1]).parent.mkdir(parents=True, exist_ok=True)
    sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: `import rfc3987_syntax` raises ImportError
    from papermill.cli import papermill

    papermill(prog_name="papermill")


if __name__ == "__main__":
    main()
