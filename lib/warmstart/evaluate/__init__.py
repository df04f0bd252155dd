"""Measurement: every checkpoint of every run, probes, intervals and the seed spread.

Bits per byte, which the trainer stages measure too, is :mod:`warmstart.bpb` at the top level.

* ``runs``: every run of the study at every step-tagged checkpoint (the evaluate stage's work);
* ``tables``: the evaluation's tables and figures;
* ``fragment``: the evaluate stage's report fragment (figures, paragraphs, tables, numbers, headline);
* ``probes``: cloze, translation and masked-token probes of what a model can do in each language;
* ``intervals``: Wilson intervals, bootstraps and paired differences (through ``scipy.stats``);
* ``seed_spread``: every study run trained again per seed (``python -m warmstart.evaluate.seed_spread``).
"""
