"""Human labels, with units, for the keys the stages write: no table in the report prints a raw key.

Stages name things by keys (``bpb_target.scratch``, ``ratio_tokens_per_word.nb-NO``,
``score_loss_%``); :class:`Labels` turns a fragment's number keys and table
column names into what a reader needs (``final nb-NO bits per byte: scratch``,
``tokens per word, target ÷ source tokenizer: nb-NO``, ``spike score, loss (%)``).
Language codes come from the run (``Labels(source_lang, target_lang)``), so a
Czech study's labels say cs-CZ. A fragment may bring labels of its own
(its ``labels`` field, :mod:`warmstart.fragments`); a key that neither knows
is humanised (underscores to spaces) and recorded in :attr:`Labels.unknown`,
which the tests hold empty for the reference study.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# What each of the study's runs is (the names stay the runs' names in every table; this is their legend).
RUNS = {
    "scratch": "baseline: the base architecture with the target tokenizer and random weights",
    "original": "baseline: the base model with its own source-language tokenizer (no swap), more steps for the same bytes",
    "random": "swap; new rows drawn from a normal with the old rows' mean and covariance",
    "exact": "swap; tokens with the same normalised string copied, the rest as random",
    "fvt": "swap; FVT: a new token gets the mean of the old rows its string splits into",
    "focus": "swap; FOCUS: overlapping tokens copied, the rest sparsemax-weighted by fastText similarity",
    "omp": "swap; OMP: each new token as k anchor rows, fitted on the scratch run's embeddings",
    "hf-default": "swap; exact matches copied, the rest as transformers' resize_token_embeddings adds rows "
    "(the old mean, 1e-9 of the covariance)",
    "tokdistil": "swap; Token Distillation: from fvt/focus rows, each new input row learned on the frozen model so "
    "its hidden states on target snippets match the old multi-piece tokenization's",
}


def arm_changes(arm: Any) -> str:
    """An arm's pretrain changes in words: 'masked_share 0.1', 'phase2: mix target 0.95 + source 0.05, steps 126'."""

    def fields(d: dict) -> str:
        return ", ".join(
            f"{k} " + (" + ".join(f"{c} {w:g}" for c, w in v.items()) if isinstance(v, dict) else f"{v}")
            for k, v in d.items()
        )

    return "; ".join(
        "; ".join(f"{ph}: {fields(f)}" for ph, f in v.items()) if k == "phases" else f"{k} {v}"
        for k, v in arm.overrides.items()
    )


def arm_legend(arm: Any) -> str:
    """What an arm of ``study.arms`` is, from its params: 'arm; fvt with masked_share 0.1 (...)'."""
    changes = arm_changes(arm)
    what = (
        " (NorMistral's hybrid objective: that share of masked-next-token batches)"
        if "masked_share" in arm.overrides
        else ""
    )
    return f"arm; {arm.init} trained with {changes}{what}"


# Table columns whose stage names are keys, with their labels ({src}, {tgt}: the run's language codes).
COLUMNS = {
    # corpus
    "lang": "language",
    "paragraphs_in": "paragraphs in",
    "code": "code blocks",
    "min_chars": "too short",
    "langid": "other language (langid)",
    "exact_dup": "exact duplicates",
    "near_dup": "near duplicates",
    "bytes": "bytes (UTF-8)",
    "words": "words (whitespace)",
    # tokenizer
    "tokens_per_word": "tokens per word",
    "bytes_per_token": "bytes per token",
    "split_word_share": "words split (share)",
    "ratio": "ratio (target ÷ source)",
    # evaluate
    "aligned": "aligned rows",
    "decomposed": "decomposed rows",
    "random": "random rows",
    "new_vocab": "vocabulary",
    "bpb_step0": "{tgt} bits/byte, step 0",
    "bpb_final": "{tgt} bits/byte, final",
    "speedup": "speed-up vs scratch",
    "bpb_target": "{tgt} bits/byte",
    "bpb_source": "{src} bits/byte",
    "cloze_acc_target": "cloze acc. {tgt}",
    "cloze_acc_norm_target": "cloze acc./char {tgt}",
    "cloze_acc_source": "cloze acc. {src}",
    "cloze_acc_norm_source": "cloze acc./char {src}",
    "chrf": "chrF (0–100)",
    "masked_acc": "masked-token acc.",
    "step": "step",
    "phase": "phase",
    "params": "parameters",
    "flops_per_token": "FLOPs per token",
    "tokens": "tokens",
    "train_flops": "training FLOPs",
    "seconds": "wall time (s)",
    "tokens_per_s": "tokens/s",
    "mfu": "MFU (logged, unreliable)",
    # spikes
    "records": "log records",
    "armed_from": "detector armed from step",
    "spikes": "spikes",
    "max_z": "largest robust z",
    "score_loss_%": "spike score, loss (%)",
    "score_grad_%": "spike score, grad norm (%)",
    "level_shifts": "level shifts",
    "start_step": "start step",
    "peak_step": "peak step",
    "end_step": "end step",
    "magnitude": "robust z",
    "delta_loss": "loss jump (nats)",
    "recovery_steps": "recovery (steps)",
    "grad_norm_z": "grad-norm z",
    "lr": "learning rate",
    "first_signal": "first instability signal to move",
    "signal_lead_steps": "its lead over the loss (steps)",
    "signal_before_loss": "a signal moved before the loss",
}

# Fragment ``numbers`` keys: (pattern, label); groups: lang, split, run ({src}/{tgt} as above).
_LANG = r"(?P<lang>[A-Za-z]{2,3}(?:-[A-Za-z0-9]+)*)"
_RUN = r"(?P<run>[\w-]+)"
# the stages' goals (a fragment's ``goals.<name>`` numbers, yes/no), in words
GOALS = {
    # prune and distil (warmstart.prune.summary)
    "masking_neurons_least_below_half_random": "masking the least important MLP neurons costs less than half a random mask",
    "masking_heads_least_below_half_random": "masking the least important attention heads costs less than half a random mask",
    "width_kd_0.05_better_than_scratch": "width-pruned + distilled ends at least 0.05 bits per byte below scratch",
    "width_kd_within_5pct_of_teacher": "width-pruned + distilled within 5% of the teacher's bits per byte",
    "width_kd_speedup_at_least_5": "width-pruned + distilled reaches scratch's final bits per byte with 5x fewer bytes",
    # context extension testbed (warmstart.context.testbed)
    "none_at_L>=0.90": "testbed: passkey exact match at L at least 0.90",
    "none_zero_shot_at_factor_L<=0.10": "testbed: no extension (none) at most 0.10 zero-shot at the extended length",
    "best_zero_shot>=0.70": "testbed: the best method at least 0.70 zero-shot at the extended length",
    "best_finetuned>=0.95": "testbed: the best method at least 0.95 after fine-tuning at the extended length",
    "best_finetuned_within_2pt_of_its_L": "testbed: the best fine-tuned method within 2 points of its own accuracy at L",
}

NUMBERS = [
    (rf"bytes\.{_LANG}\.(?P<split>train|val|test)", "{split} text {lang} (bytes)"),
    (rf"ratio_tokens_per_word\.{_LANG}", "tokens per word, target ÷ source tokenizer, {lang}"),
    (rf"val_bpb\.{_LANG}", "validation bits per byte, {lang}"),
    (r"params", "parameters"),
    (rf"bpb_target\.{_RUN}", "final {tgt} bits per byte, {run}"),
    (rf"bpb_source\.{_RUN}", "final {src} bits per byte, {run}"),
    (rf"arm_bpb_diff\.{_RUN}", "{run} minus its reference run, final {tgt} bits per byte"),
    (r"best", "lowest final {tgt} bits per byte (run)"),
    (r"total_spikes", "loss spikes, all runs"),
    (rf"spikes\.{_RUN}", "loss spikes, {run}"),
]


def humanise(key: str) -> str:
    return re.sub(r"\s+", " ", str(key).replace("_", " ").replace(".", ", ")).strip()


def looks_raw(name: str) -> bool:
    """A key rather than words: underscores, or dotted parts without spaces."""
    s = str(name)
    return "_" in s or (bool(re.search(r"\w\.\w", s)) and " " not in s and not re.fullmatch(r"[\d.,]+", s))


class Labels:
    """Labels for one run's languages; ``extra``: labels a fragment brings for its own keys."""

    def __init__(self, source_lang: str, target_lang: str, extra: Mapping[str, str] | None = None) -> None:
        self.src, self.tgt = source_lang, target_lang
        self.extra = dict(extra or {})
        self.unknown: set[str] = set()

    def _fill(self, template: str, **groups: str) -> str:
        return template.format(src=self.src, tgt=self.tgt, **groups)

    def column(self, name: str) -> str:
        """A table column's label (a name that is already words is kept)."""
        name = str(name)
        if name in self.extra:
            return self.extra[name]
        if name in COLUMNS:
            return self._fill(COLUMNS[name])
        if looks_raw(name):
            self.unknown.add(name)
            return humanise(name)
        return name

    def number(self, key: str, extra: Mapping[str, str] | None = None) -> str:
        """A fragment number's label."""
        key = str(key)
        for d in (extra or {}, self.extra):
            if key in d:
                return d[key]
        if key.startswith("goals.") and key[len("goals.") :] in GOALS:
            return f"goal met: {GOALS[key[len('goals.') :]]}"
        for pattern, template in NUMBERS:
            m = re.fullmatch(pattern, key)
            if m:
                return self._fill(template, **m.groupdict())
        if looks_raw(key):
            self.unknown.add(key)
            return humanise(key)
        return key

    def run(self, name: str) -> str:
        """What a run is (the legend), or '' for a run the study does not define."""
        return RUNS.get(name, "")
