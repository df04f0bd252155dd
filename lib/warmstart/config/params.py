"""The whole params file: :class:`Params` (every section, checked together) and the corpus languages' check."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from warmstart.config.downstream import Chat, Compress, Context, Evaluate, Report, Stability
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
    chat: Chat = Chat()
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
        self.check_mixes()
        return self

    def pretrain_for(self, arm: str | None = None) -> Pretrain:
        """``pretrain`` as the run trains it: with arm ``arm``'s overrides (validated), or as is."""
        if arm is None:
            return self.pretrain
        return self.pretrain.with_overrides(self.study.arms[arm].overrides, where=f"study.arms.{arm}")

    def mix_language(self, corpus: str) -> str:
        """The language of a mix's corpus name: target, source, or a code in ``corpus.extra_languages``."""
        if corpus in ("target", "source"):
            return self.resolve_lang(corpus)
        if corpus in self.corpus.extra_languages:
            return corpus
        raise KeyError(corpus)

    def check_mixes(self) -> None:
        """Every phase's mix (the arms' included) names corpora that exist and are tokenized for the runs that
        read them: the target tokenizer's (``tokenize.corpora.target``) and, for ``original``, the base's."""
        names = ["target", "source", *self.corpus.extra_languages]
        runs = [("pretrain", self.pretrain)] + [(f"study.arms.{a}", self.pretrain_for(a)) for a in self.study.arms]
        for where, pt in runs:
            for ph in pt.phases:
                for corpus in ph.corpora:
                    key = f"{where}.phases[{ph.name}].mix.{corpus}"
                    if corpus not in names:
                        raise ValueError(f"{key}: no corpus {corpus!r}; the corpora are {names}")
                    lang = self.mix_language(corpus)
                    need = ["target"] if where != "pretrain" else ["target", "base"]  # base: the original run
                    for tok in need:
                        built = {self.resolve_lang(x) for x in self.tokenize.corpora.get(tok, [])}  # type: ignore[call-overload]
                        if lang not in built:
                            raise ValueError(
                                f"{key}: the {corpus} corpus ({lang}) is not tokenized with the {tok} tokenizer; "
                                f"add {corpus} to tokenize.corpora.{tok}"
                            )

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
