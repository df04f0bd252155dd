"""Loss-spike detection for training logs.

Reads a step log (the trainer's JSONL, any JSONL with ``step`` and ``loss``, or
a TensorBoard log directory), finds loss spikes and describes each one::

    from warmstart.spikes.api import load_log, detect, spike_score, OnlineDetector
    df = load_log("data/logs/x/log.jsonl")           # or a TensorBoard log dir
    events = detect(df)                              # list[SpikeEvent], method="robust"
    spike_score(df)                                  # OLMo 2's score, loss and grad norm
    det = OnlineDetector(warmup=200)                 # in the trainer: det.update(step, loss, gn)

    python -m warmstart.spikes detect LOG [--method robust|olmo2|mad|zclip] [--json] [--hotswap STEP ...]
    python -m warmstart.spikes bench [--seed N] [--out FILE.md]

Modules (each imports only the ones above it):

* ``params``: ``METHODS``, ``MAD_TO_SIGMA``, ``SpikeLogError``, ``RobustParams``
  (``METHODS`` and ``RobustParams`` from ``warmstart.config.spikes``: the params schema);
* ``onset``: which instability signal (attention logit, log Z, update ratio) moved first before a loss spike,
  and the rule's false-alarm rate (pure; the stability study reads it too);
* ``logs``: the JSONL and TensorBoard readers (``load_log``), ``hotswap_steps``,
  ``resolve_warmup``;
* ``core``: the streaming statistics of the ``robust`` rule and of ZClip;
* ``detectors``: ``detect`` (the methods are described there), ``SpikeEvent``,
  ``SpikeEvents``, ``events_frame``, ``spike_score``;
* ``online``: ``OnlineDetector``, the trainer's mitigation;
* ``plots``: ``plot_run``, ``plot_overview`` (matplotlib inside them only);
* ``analysis``: the spikes stage (``run_stage``, ``analyse_run``, ...) and
  ``format_events``;
* ``bench``: the synthetic benchmark with ground truth;
* ``cli``: ``main``, run by ``python -m warmstart.spikes``;
* ``api``: every public name above in one namespace, for notebooks and tests
  (``from warmstart.spikes import api as S``).

This ``__init__`` imports nothing: importing one submodule (the trainer's
``warmstart.spikes.online``) runs only that submodule and the ones below it, so
a DVC stage depends on exactly the spike code it runs.
"""
