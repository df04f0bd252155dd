"""Training stability study: learning-rate sensitivity of warm start against scratch, with its mitigations.

CSMPT7b saw loss spikes only when continuing pretraining, growing with the
learning rate; Wortsman et al. 2023 ("Small-scale proxies for large-scale
Transformer training instabilities", arXiv 2309.14322) reproduce
attention-logit growth and output-logit divergence in small models at high
learning rates, mitigated by qk-layernorm and z-loss, and summarise a sweep
by its *LR sensitivity*. This package generalises the opt-in
:mod:`warmstart.stability.ablations` (LR sweep, induced spike, rollback) into the
default pipeline's ``stability`` stage::

    from warmstart.stability import StabilityConfig, run_study, plots, findings, table_rows
    result = run_study(StabilityConfig(), Path("data/stability"))   # JSON-serialisable dict
    figs = plots(result, Path("reports/figures/stability"))          # [{"path", "caption"}]
    paragraphs, rows = findings(result), table_rows(result)

What runs (every run through the project's trainer, :mod:`warmstart.train.loop`,
in this process, with ``signals_every`` so the log carries the instability
signals of :mod:`warmstart.train.signals`):

1. One **base** per architecture the warm starts need (``llama`` for the
   baseline and z-loss, ``qwen3`` for qk-norm), pretrained on the source
   language. With real data and two tokenizers its vocabulary is then swapped
   to the target's (:mod:`warmstart.vocab_swap`, ``swap_method``).
2. The **sweep**: variants (``baseline``: Llama; ``qk_norm``: Qwen3, whose
   per-head ``q_norm``/``k_norm`` are native transformers code; ``z_loss``:
   Llama with PaLM's z-loss, coefficient 1e-4; optionally ``qk_norm+z_loss``)
   x inits (``warm``: from the base; ``scratch``: the same architecture
   freshly initialised) x learning rates, same data order and schedule.
   Per run: held-out loss before and after (the **final loss is the held-out
   cross-entropy** on ``eval_rows`` rows of the target's held-out documents,
   not the last training loss, which is also kept as ``final_train_loss``),
   ``diverged`` (:func:`warmstart.stability.analysis.diverged`), the spike detector's events, the
   signals' summary and trajectory, and for a run that spiked or diverged
   which signal moved first before the loss (:mod:`warmstart.stability.analysis`).
3. **LR sensitivity** per (variant, init), clipped at the runs' own initial
   held-out loss (Wortsman's definition) and at ln|V| (a clip common to warm
   and scratch: a warm start whose new vocabulary rows were never trained
   starts far above a uniform guess, which would inflate its clip).
4. The **induced spike**: a warm run at a stable learning rate with a few
   random-token batches (the trainer's ``inject_bad_batches``), without and
   with PaLM's rollback-and-skip (``spike_mitigation``); the clean control is
   the sweep's run of the same setting.

**Detector**: the spikes stage's (:func:`warmstart.spikes.detect`, robust
method, the spikes params' windows), on the cross-entropy (``ce_loss`` where
the z-loss term is in ``loss``). One difference, ``detector_warmup = 0``: the
spikes stage ignores the lr warm-up ("auto"), but here high learning rates
break the run *on* the warm-up ramp, so the detector is armed from the start
(it still needs ``min_level + min_scale`` records, ~25, before it can flag).

**Data: the toy pair by default, by measurement.** The study's own corpora
need an 8,192-token vocabulary: at a size the 3-minute budget allows for 42
sweep runs (hidden 64, 2 layers, 8 x 64 tokens per step) a step costs ~55 ms
on one core (the LM head dominates) against ~12 ms with the toy pair's 512
tokens, i.e. ~8 minutes for the sweep alone; and a warm start needs a base
pretrained on the source language plus a vocabulary swap. The synthetic pair
of :mod:`warmstart.stability.ablations` (one random bigram grammar over two disjoint
made-up vocabularies, one BPE tokenizer over both) shares structure by
construction, so the warm start has something to transfer (it beats scratch
at low learning rates), and the sweep fits. ``run_study(..., data=...)``
takes real files (``source_train``, ``target_train``, ``target_val``,
``source_tokenizer``, ``target_tokenizer``) for a larger opt-in profile.

**The default study** (``StabilityConfig()``): learning rates 1e-3 .. 1 in
half-decades (7) x baseline / qk-norm / z-loss x warm / scratch = 42 runs of
200 AdamW steps (60 warm-up, cosine to 0.1 x, weight decay 0.1, clip 1.0),
2 layers, hidden 64, 4 heads, MLP 128, 8 x 64 tokens per step, signals every
step; two bases of 300 steps at 3e-3; the induced spike at lr 1e-2 (batches
140-142, checkpoints every 10 steps, 5 batches skipped after a rollback);
the runs spread over 2 spawned worker processes of one torch thread each
(``workers``; results are bit-identical with 1). Why a 60-step warm-up: with
150 steps and 45 of warm-up the lr-1 runs broke at steps 28-35, while the
detector's noise estimate still held the warm start's chaotic first steps,
and it flagged none of them; with the longer ramp they break at steps 56-59
and it flags them.

Measured on the project's 2-core machine while other sessions kept its load
average at 3-6: 173 s wall with the pipeline's seed 1337 (load ~3.8) and
250-285 s with seed 0 (load 4-6); 153 CPU-seconds of training
(``seconds.cpu_sum``), ~170 s of CPU in all, so about 90 s on an idle
2-core machine. The smoke config (``StabilityConfig.smoke()``) takes ~15 s.
Results (deterministic: the same in every repeat and with 1 or 2 workers),
seed 1337 | seed 0:

* LR sensitivity (nats), warm / scratch: baseline 0.980 / 0.966 |
  0.974 / 0.888; qk-norm 0.672 / 0.741 | 0.617 / 0.622; z-loss
  0.969 / 0.965 | 1.033 / 0.869. qk-norm lowers it by 31.4 % / 23.4 % |
  36.6 % / 29.9 %.
* max attention logit, baseline: ~15 at lr 1e-3, 3.7e5 | 8.4e5 at lr 1
  (qk-norm: 890 | 850); the baseline's lr 0.3 and 1 runs end at 3.9-4.7 nats
  against 1.7-1.8 at the best lr, without a flagged spike at seed 1337, with
  one (warm, lr 1, step 56) at seed 0.
* z-loss at 1e-4 leaves log Z at 5-9 nats in 200 steps (baseline 5-10).
* the detector flags 6 | 11 runs; a log Z signal moved before the loss in
  2 | 3 of them (3 and 7 | 1, 10 and 10 steps ahead; the rule's false-alarm
  rate is 0.1-0.7 % per record and signal).
* the induced spike is caught at its first corrupted batch and rolled back
  to the checkpoint 10 steps earlier; final held-out loss 1.699 unmitigated,
  1.691 mitigated, 1.690 clean | 1.839, 1.841, 1.833.

Modules: :mod:`.config` (:class:`StabilityConfig`), :mod:`warmstart.stability.analysis` (pure, shared with the spikes stage:
:func:`lr_sensitivity`, :func:`moved_first`, ...), :mod:`.data` (the toy pair or real files, held-out rows),
:mod:`.run` (:func:`run_study`), :mod:`.report` (:func:`findings`, :func:`table_rows`,
:func:`headline`), :mod:`.figures` (:func:`plots`); the opt-in ablations :mod:`.ablations` and their outputs
:mod:`.ablations_report`.
"""

from __future__ import annotations

from warmstart.stability.analysis import (
    diverged,
    first_crossing,
    first_move,
    loss_onset,
    lr_sensitivity,
    moved_first,
    trajectory,
)
from warmstart.stability.config import VARIANTS, InducedSpike, ModelShape, MovedRule, StabilityConfig
from warmstart.stability.figures import plots
from warmstart.stability.report import findings, headline, sensitivity_rows, table_rows
from warmstart.stability.run import run_study, sensitivities

__all__ = [
    "diverged",
    "findings",
    "first_crossing",
    "first_move",
    "headline",
    "InducedSpike",
    "loss_onset",
    "lr_sensitivity",
    "ModelShape",
    "moved_first",
    "MovedRule",
    "plots",
    "run_study",
    "sensitivities",
    "sensitivity_rows",
    "StabilityConfig",
    "table_rows",
    "trajectory",
    "VARIANTS",
]
