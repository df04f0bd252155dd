"""The trainer: an ``accelerate`` loop with exact resume for Hugging Face causal LMs, and what it runs.

* ``loop``: :class:`~warmstart.train.loop.Trainer` and :func:`~warmstart.train.loop.train`;
* ``step``: the trainer's optimizer step (batch size, forward/backward, clipping, skipped steps);
* ``resume``: the trainer's checkpoint side (its state, save/restore, rollbacks);
* ``config``: :class:`~warmstart.train.config.TrainConfig` (one YAML per run) and the step log's fields;
* ``checkpoint``: the checkpoint writer and reader (atomic, sharded under FSDP2), export to a HF model dir;
* ``schedules``: learning-rate schedules and the batch-size ramp;
* ``objectives``: the causal / hybrid masked-causal objective, z-loss, distillation through one interface;
* ``distil``: logit distillation (Minitron) and the frozen teacher;
* ``signals``: instability signals logged every ``signals_every`` steps;
* ``distributed``: the ``Accelerator`` and the ``accelerate launch`` command;
* ``launch``: the study's runs as trainer configs, launched in-process or through accelerate;
* ``study``: one study run trained (both phases, log, ``run.json``), for the pretrain stages and the seed spread;
* ``base_model``: the base stage's model, pretrained here or loaded, its details record, table rows and figure;
* ``bench``: the trainer's overhead over a bare loop (``python -m warmstart.train.bench``).

``python -m warmstart.train --config run.yaml [--resume]`` trains one run (``__main__``).
"""
