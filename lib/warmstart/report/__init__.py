"""The study's report (``reports/report.pdf``), its model cards, and every stage's written outputs.

* ``outputs``: what a stage writes for the report: headline metrics, figures, matrix records;
* ``fragments``: each stage's report fragment (``reports/fragments/NN_<stage>.json``) and provenance;
* ``describe``: what ran, in words (languages, base model, corpus, licence, title);
* ``labels``: human labels with units for every key a table prints;
* ``findings``: the findings page: what the study found, in sentences with their numbers;
* ``throughput``: tokens/s, FLOP/s and MFU against a stated peak;
* ``model_card``: the best run's model card;
* ``template`` and ``build``: the Typst template and the PDF build; ``check``: the page invariants
  (``python -m warmstart.report check reports/report.pdf``).
"""
