"""Alfred-style chat fine-tuning of the study's adapted model (the ``chat`` stage).

:mod:`~warmstart.chat.template` (chat tokens, the Jinja chat template with generation marks, items encoded
with loss roles), :mod:`~warmstart.chat.data` (instruction items from the corpus; a user's chat data),
:mod:`~warmstart.chat.run` (the start model, role shards, the trainer config), :mod:`~warmstart.chat.measure`
(response bits per byte, adherence, chrF), :mod:`~warmstart.chat.study` and :mod:`~warmstart.chat.summary`.
"""
