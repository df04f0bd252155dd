"""The DVC stages, the top layer: one module per stage, each a thin ``run(params, ...) -> metrics``.

``run`` reads top to bottom: it takes its params through the contract's view (:mod:`.contract`), calls the
library, writes the stage's outputs, its headline metrics and its report fragment, and returns the headline.
Notebooks call ``run`` and only display. Nothing in the library imports this package
(``tests/test_layout.py``); the stage names and the modules that run them are :data:`.contract.STAGES`.
"""
