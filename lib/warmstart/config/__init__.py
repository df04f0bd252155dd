"""Typed, validated study parameters (params.yaml).

One section per DVC stage plus a ``shared`` block. Every stage calls
:func:`load_params` first, so a bad value stops the stage before it writes
anything, with a message that names the key and what is allowed.

Modules (this ``__init__`` re-exports their public names):

* ``sections``: the sections of the data, tokenizer, models and the study's training runs (``shared``,
  ``corpus``, ``tokenizer``, ``base``, ``vocab_swap``, ``pretrain``, ``study``);
* ``spikes``: the ``spikes`` section and the ``robust`` detector's parameters (:class:`RobustParams`,
  ``METHODS``), without the detectors;
* ``downstream``: the later stages' sections (``evaluate``, ``stability``, ``context``, ``compress``, ``report``);
* ``params``: :class:`Params`, every section checked together;
* ``load``: reading and validating a file, overlays and profiles (``lib/warmstart/profiles``).

``python -m warmstart.config check|apply-profile`` (``__main__``) also checks that the corpus sources offer
every study language (:func:`warmstart.data.sources.check_languages`).
"""

from warmstart.config.downstream import (
    COMPRESS_VARIANTS,
    CONTEXT_METHODS,
    LONGCTX_TASKS,
    Calibration,
    Compress,
    Context,
    ContextFinetune,
    ContextSuite,
    Distillation,
    Evaluate,
    Report,
    Stability,
    TeacherCorrection,
)
from warmstart.config.load import (
    PROFILES_DIR,
    ParamsError,
    apply_profile,
    deep_merge,
    load_params,
    profile,
    read_yaml,
    validate,
)
from warmstart.config.params import Params
from warmstart.config.sections import (
    LANG_PATTERN,
    Arm,
    Base,
    Corpus,
    Dedup,
    HandbookSource,
    HFSource,
    LangCode,
    LangID,
    LocalSource,
    Optim,
    Pretrain,
    Shared,
    Source,
    SpecialTokens,
    Split,
    Study,
    TinyModel,
    Tokenize,
    Tokenizer,
    VocabSwap,
    check_attention_shape,
)
from warmstart.config.spikes import METHODS, RobustParams, Spikes

__all__ = [
    "COMPRESS_VARIANTS",
    "CONTEXT_METHODS",
    "LANG_PATTERN",
    "LONGCTX_TASKS",
    "METHODS",
    "PROFILES_DIR",
    "Arm",
    "Base",
    "Calibration",
    "Compress",
    "Context",
    "ContextFinetune",
    "ContextSuite",
    "Corpus",
    "Dedup",
    "Distillation",
    "Evaluate",
    "HFSource",
    "HandbookSource",
    "LangCode",
    "LangID",
    "LocalSource",
    "Optim",
    "Params",
    "ParamsError",
    "Pretrain",
    "Report",
    "RobustParams",
    "Shared",
    "Source",
    "SpecialTokens",
    "Spikes",
    "Split",
    "Stability",
    "Study",
    "TeacherCorrection",
    "TinyModel",
    "Tokenize",
    "Tokenizer",
    "VocabSwap",
    "apply_profile",
    "check_attention_shape",
    "deep_merge",
    "load_params",
    "profile",
    "read_yaml",
    "validate",
]
