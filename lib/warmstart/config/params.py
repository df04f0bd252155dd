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
    Source,
    Study,
    Tokenizer,
    VocabSwap,
    _Section,
)
from warmstart.config.spikes import Spikes


class Params(_Section):
    shared: Shared
    corpus: Corpus
    tokenizer: Tokenizer
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


def offered_languages(src: Source, params: Params) -> tuple[str, ...]:
    """The corpus languages a source can provide: the handbook's list, or a local/HF source's one ``lang``."""
    if src.kind == "handbook":  # by kind, the sources' discriminator
        from warmstart.data import handbook  # bs4: only when asked

        return handbook.available_languages(Path(src.deb_path)) if src.deb_path else handbook.LANGUAGES
    return (params.resolve_lang(src.lang),)


def check_languages(params: Params) -> None:
    """Fail, before anything is read, on a source of no corpus language or a language of no source."""
    langs = params.languages
    for i, src in enumerate(params.corpus.sources):
        if src.kind != "handbook" and params.resolve_lang(src.lang) not in langs:
            raise ValueError(
                f"corpus.sources[{i}].lang is {src.lang!r}, not a corpus language; "
                f"corpus languages (shared.source_lang, shared.target_lang, corpus.extra_languages): {langs}"
            )
    offered = {
        src.kind if len(params.corpus.sources) == 1 else f"corpus.sources[{i}] ({src.kind})": offered_languages(
            src, params
        )
        for i, src in enumerate(params.corpus.sources)
    }
    every = {lang for langs in offered.values() for lang in langs}
    roles = {params.shared.source_lang: "shared.source_lang", params.shared.target_lang: "shared.target_lang"}
    problems = [f"{lang!r} ({roles.get(lang, 'corpus.extra_languages')})" for lang in langs if lang not in every]
    if problems:
        lists = "; ".join(f"{name} offers {', '.join(sorted(langs))}" for name, langs in offered.items())
        raise ValueError(
            f"{', '.join(problems)} {'is' if len(problems) == 1 else 'are'} offered by no configured corpus source "
            f"({lists}). Pick one of those, "
            "or add a source for it: {kind: local, lang: <code>, paths: [...]} or {kind: hf, lang: <code>, dataset: ...}"
        )
