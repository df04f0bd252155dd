"""The corpus stage's parallel pass on datatrove's executors: local processes, or a Slurm cluster.

Pass 1 (read, filter, sign: :func:`classify`) is a datatrove ``PipelineStep``, :class:`FilterSign`. Task
``rank`` of ``tasks`` takes the documents whose index in the sources' order is ``rank`` modulo ``tasks``
and writes a part under the spill folder: per language the kept paragraphs (with their document index) and
their dedup signatures, and one line of counts per document. :func:`read_parts` merges the parts back into
the sources' order, so the result does not depend on the number of tasks or where they ran.

``corpus.executor.kind``: ``local`` (``LocalPipelineExecutor``, ``corpus.workers`` processes) or ``slurm``
(``SlurmPipelineExecutor`` with ``corpus.executor.slurm`` as its arguments: partition, time, cpus_per_task,
...; the spill folder must be on storage the nodes share). The stage waits for every task's completion mark.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.pipeline.base import PipelineStep

from warmstart.config import Corpus, Shared
from warmstart.data.clean import LanguageFilter

FILTERS = ("code", "min_chars", "langid", "exact_dup", "near_dup")


def candidates(params: Any) -> list[str] | None:
    """The language-ID candidates of ``corpus.langid.candidates`` (None: every language py3langid knows)."""
    c = params.corpus.langid.candidates
    return None if c == "all" else (params.languages if c == "corpus" else list(c))


def classify(doc: Any, lid: LanguageFilter, keep_code: bool, min_chars: int, sign: Any) -> tuple[list, list]:
    """Each paragraph's verdict (None: kept, else the filter that removed it) and the kept ones' signatures."""
    verdicts, sigs = [], []
    for p in doc.paragraphs:
        if p.kind == "code":
            v = None if keep_code else "code"
        elif len(p.text) < min_chars:
            v = "min_chars"
        elif not lid.keep(p.text, doc.lang):
            v = "langid"
        else:
            v = None
        verdicts.append(v)
        if v is None:
            sigs.append(sign(p.text))
    return verdicts, sigs


class _Part:
    """One task's output: ``<lang>.jsonl`` (``[doc index, record]`` per kept paragraph), ``<lang>.sig`` (exact key
    and MinHash values, fixed size, in step), ``docs.jsonl`` (counts per document) and ``report.json``."""

    def __init__(self, root: Path, num_perm: int):
        self.root, self.num_perm = root, num_perm
        root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, tuple] = {}
        self.docs = open(root / "docs.jsonl", "w", encoding="utf-8")

    def add(self, n: int, lang: str, rec: dict, key: int, sig: np.ndarray | None) -> None:
        if lang not in self.files:
            self.files[lang] = (
                open(self.root / f"{lang}.jsonl", "w", encoding="utf-8"),
                open(self.root / f"{lang}.sig", "wb"),
            )
        text, sigs = self.files[lang]
        text.write(json.dumps([n, rec], ensure_ascii=False) + "\n")
        sigs.write(np.uint64(key).tobytes())
        sigs.write((np.zeros(self.num_perm, np.uint32) if sig is None else sig).tobytes())

    def close(self) -> None:
        self.docs.close()
        for a, b in self.files.values():
            a.close()
            b.close()


@dataclass
class Scope:
    """What pass 1 reads of the params (the ``shared`` and ``corpus`` sections), picklable for the tasks, with
    the two helpers of :class:`~warmstart.config.Params` the sources use."""

    shared: Shared
    corpus: Corpus

    @classmethod
    def of(cls, params: Any) -> Scope:
        shared = Shared(**{k: getattr(params.shared, k) for k in Shared.model_fields})
        return cls(shared, Corpus.model_validate(params.corpus.model_dump()))

    def resolve_lang(self, lang: str) -> str:
        return {"source": self.shared.source_lang, "target": self.shared.target_lang}.get(lang, lang)

    @property
    def languages(self) -> list[str]:
        langs = [self.shared.source_lang, self.shared.target_lang, *self.corpus.extra_languages]
        return list(dict.fromkeys(langs))


class FilterSign(PipelineStep):
    """Pass 1 of the corpus stage as a datatrove step (see the module docstring)."""

    name = "warmstart filter+sign"
    type = "Filter"

    def __init__(self, scope: Scope, spill: str):
        super().__init__()
        self.scope, self.spill = scope, spill

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        from warmstart.data.dedup import Signer
        from warmstart.data.sources import SourceReport, iter_documents

        params = self.scope
        cfg, d = params.corpus, params.corpus.dedup
        lid = LanguageFilter(cfg.langid.threshold, candidates(params))
        sign = Signer(d.exact, d.near_threshold is not None, d.num_perm, d.shingle_chars, params.shared.seed)
        part = _Part(Path(self.spill) / f"part-{rank:05d}", d.num_perm)
        report = SourceReport()
        try:
            for n, doc in enumerate(iter_documents(params, report)):
                if n % world_size != rank:
                    continue
                verdicts, sigs = classify(doc, lid, cfg.keep_code, cfg.min_chars, sign)
                kept = [p for p, v in zip(doc.paragraphs, verdicts) if v is None]
                removed = {f: verdicts.count(f) for f in FILTERS[:3] if f in verdicts}
                part.docs.write(
                    json.dumps(
                        {
                            "n": n,
                            "lang": doc.lang,
                            "doc": doc.doc,
                            "paragraphs": len(doc.paragraphs),
                            "bytes": sum(len(p.text.encode("utf-8")) for p in doc.paragraphs),
                            "kept_bytes": sum(len(p.text.encode("utf-8")) for p in kept),
                            "removed": removed,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                for i, (p, (key, sig)) in enumerate(zip(kept, sigs)):
                    rec = {"id": f"{doc.page}#{i}", "doc": doc.doc, "page": doc.page, "lang": doc.lang, "kind": p.kind}
                    part.add(n, doc.lang, rec | {"text": p.text}, key, sig)
                self.stat_update("documents")
        finally:
            part.close()
        (part.root / "report.json").write_text(json.dumps(report.__dict__, ensure_ascii=False))


def run_pass1(params: Any, spill: Path) -> list[Path]:
    """Run :class:`FilterSign` on ``corpus.executor``; the task parts, in rank order."""
    cfg = params.corpus
    tasks = cfg.executor.tasks or cfg.workers
    step = FilterSign(Scope.of(params), str(spill))
    logs = spill / "logs"
    if cfg.executor.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        LocalPipelineExecutor([step], tasks=tasks, workers=min(cfg.workers, tasks), logging_dir=str(logs)).run()
    else:
        from datatrove.executor import SlurmPipelineExecutor

        ex = SlurmPipelineExecutor([step], tasks=tasks, logging_dir=str(logs), **slurm_arguments(params))
        ex.run()
        while ex.get_incomplete_ranks(skip_completed=True):  # the stage waits for the cluster
            time.sleep(30)
    parts = [spill / f"part-{r:05d}" for r in range(tasks)]
    missing = [p for p in parts if not (p / "report.json").is_file()]
    if missing:
        raise RuntimeError(f"corpus: filter tasks did not finish: {[p.name for p in missing]} (logs in {logs})")
    return parts


def slurm_arguments(params: Any) -> dict:
    """``corpus.executor.slurm`` as ``SlurmPipelineExecutor`` keyword arguments (``partition`` and ``time``
    are required); an argument it does not take is refused by name."""
    import inspect

    from datatrove.executor import SlurmPipelineExecutor

    args = dict(params.corpus.executor.slurm)
    known = set(inspect.signature(SlurmPipelineExecutor.__init__).parameters) - {
        "self",
        "pipeline",
        "tasks",
        "logging_dir",
    }
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(
            f"corpus.executor.slurm: {unknown} are not SlurmPipelineExecutor arguments; known: {sorted(known)}"
        )
    need = [k for k in ("partition", "time") if k not in args]
    if need:
        raise ValueError(f"corpus.executor.slurm needs {need} (the cluster's partition and a time limit)")
    return args


def read_docs(parts: list[Path]) -> Iterator[dict]:
    """Every document's counts, in the sources' order."""

    def one(p: Path) -> Iterator[dict]:
        with open(p / "docs.jsonl", encoding="utf-8") as f:
            yield from (json.loads(line) for line in f)

    return heapq.merge(*(one(p) for p in parts), key=lambda r: r["n"])


def read_paragraphs(parts: list[Path], lang: str, num_perm: int) -> Iterator[tuple[dict, int, np.ndarray]]:
    """One language's kept paragraphs with their (exact key, MinHash values), in the sources' order."""
    size = 8 + 4 * num_perm

    def one(p: Path) -> Iterator[tuple]:
        if not (p / f"{lang}.jsonl").is_file():
            return
        with open(p / f"{lang}.jsonl", encoding="utf-8") as ft, open(p / f"{lang}.sig", "rb") as fs:
            for i, line in enumerate(ft):
                n, rec = json.loads(line)
                raw = fs.read(size)
                yield n, i, rec, int(np.frombuffer(raw[:8], np.uint64)[0]), np.frombuffer(raw[8:], np.uint32)

    for _, _, rec, key, sig in heapq.merge(*(one(p) for p in parts), key=lambda t: (t[0], t[1])):
        yield rec, key, sig
