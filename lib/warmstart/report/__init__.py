"""The study's report (``reports/report.pdf``) and its model cards, built from every stage's fragment.

What every stage writes for it lives at the top level, so that editing the report reruns only the report:
:mod:`warmstart.fragments` (a stage's fragment and provenance), :mod:`warmstart.outputs` (headline metrics,
figures, matrix records) and :mod:`warmstart.describe` (what ran, in words).

* ``labels``: human labels with units for every key a table prints;
* ``findings``: the findings page: what the study found, in sentences with their numbers;
* ``throughput``: tokens/s, FLOP/s and MFU against a stated peak;
* ``model_card``: the best run's model card;
* ``provenance``: the report's provenance and the reproduce box (the params that differ from the commit's);
* ``template`` and ``build``: the Typst template and the PDF build; ``check``: the page invariants
  (``python -m warmstart.report check reports/report.pdf``).
"""
