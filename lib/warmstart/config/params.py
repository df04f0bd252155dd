"""The whole params file: :class:`Params` (every section, checked together) and the corpus languages' check."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from warmstart.config.downstream import Compress, Context, Evaluate, Report, Stability
from warmstart.config.sections import (
    Base,
    Corpus,
    Pretrain,
    Shared,
    Study,
    Tokenize,
    Tokenizer,
    VocabSwap,
    _Section,
)
from warmstart.config.spikes import Spikes


class Params(_Section):
    shared: Shared
    corpus: Corpus
    tokenizer: Tokenizer
    tokenize: Tokenize
    base: Base
    vocab_swap: VocabSwap
    pretrain: Pretrain
    study: Study
    evaluate: Evaluate
    spikes: Spikes
    stability: Stability
    context: Context
    compress: Compress
    report: Report

    @model_validator(mode="after")
    def _arms(self) -> Params:
        methods = list(self.vocab_swap.methods)
        for name, arm in self.study.arms.items():
            if arm.init not in methods:
                raise ValueError(
                    f"study.arms.{name}.init is {arm.init!r}, not a vocab_swap method ({methods}): "
                    f"add it to vocab_swap.methods or drop the arm (study.arms: {{}})"
                )
            if name in (*methods, "scratch", "original", "base"):
                raise ValueError(f"study.arms.{name}: the name is already a study run's")
        return self

    # -- helpers used by several stages
    def resolve_lang(self, lang: str) -> str:
        if lang == "source":
            return self.shared.source_lang
        if lang == "target":
            return self.shared.target_lang
        return lang

    @property
    def languages(self) -> list[str]:
        """Corpus languages: source, target, then the extra ones (no repeats)."""
        out: list[str] = []
        for lang in [self.shared.source_lang, self.shared.target_lang, *self.corpus.extra_languages]:
            if lang not in out:
                out.append(lang)
        return out

    def path(self, *parts: str) -> Path:
        return Path(self.shared.data_dir, *parts)

    def report_path(self, *parts: str) -> Path:
        return Path(self.shared.reports_dir, *parts)
