"""fastText vectors of the new tokenizer's tokens: FOCUS's auxiliary embedding space."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.vocab_swap.tokens import VocabSwapError, _view

log = logging.getLogger("warmstart.vocab_swap")

#: CPU features an OpenBLAS core type's kernels need (numpy's names); a core type not listed is run as asked.
_CORETYPE_NEEDS = {"haswell": ("AVX2", "FMA3"), "zen": ("AVX2", "FMA3")}


@dataclass(frozen=True)
class FastTextOptions:
    """gensim FastText settings for FOCUS's auxiliary token vectors.

    Defaults follow FOCUS's reference code (deepfocus: 100 dimensions,
    3 epochs, min_count 10; fastText's skip-gram, window 5, n-grams 3-6);
    ``bucket`` is smaller than fastText's 2M to keep memory modest.
    ``workers=1`` makes training reproducible on one machine: the same bits
    whatever ``PYTHONHASHSEED`` and the thread counts (``workers > 1`` races
    and changes the vectors run to run).

    ``blas_coretype`` makes it reproducible across machines: gensim's training
    loop calls the ``sdot``/``saxpy`` of scipy's OpenBLAS, whose kernel
    OpenBLAS picks per CPU when it loads, and the kernels round differently
    (the SkylakeX ``sdot`` of AVX-512 CPUs sums in another order than the
    Haswell/Zen ``sdot`` of AVX2 CPUs; the last-bit differences grow over the
    epochs: FOCUS's step-0 bits per byte moved by 5e-6). So training runs in
    a child process with ``OPENBLAS_CORETYPE`` set to it: ``"Haswell"``, the
    kernel of every x86-64 CPU with AVX2 and FMA, is the one the study's
    numbers were made with (AVX2 machines pick it, or its twin ``Zen``, by
    themselves). ``None``, or a CPU that cannot run it, trains in this
    process with the kernel OpenBLAS picked. The report's ``fasttext_blas``
    names the kernel that trained the vectors.
    """

    dim: int = 100
    epochs: int = 3
    window: int = 5
    min_count: int = 10
    minn: int = 3
    maxn: int = 6
    bucket: int = 200_000
    workers: int = 1
    sg: int = 1
    blas_coretype: str | None = "Haswell"


def blas_kernels() -> list[str]:
    """The BLAS libraries loaded in this process with their version and kernel (OpenBLAS: the core type
    it picked for this CPU, or ``OPENBLAS_CORETYPE``), e.g. ``"openblas 0.3.30 SkylakeX"``; empty when
    threadpoolctl is missing. gensim's fastText vectors depend on the kernel, so the report records it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - depends on the environment
        return []
    return sorted(
        {
            " ".join(str(x) for x in (d.get("internal_api"), d.get("version"), d.get("architecture")) if x)
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        }
    )


def _stable_hash(s: str) -> int:
    """Process-independent replacement for ``hash`` (gensim seeds vectors with it)."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def _fit(sentences: list[list[str]], opts: FastTextOptions, seed: int) -> Any:
    """gensim fastText trained on ``sentences`` (lists of token strings), in this process."""
    try:
        from gensim.models import FastText
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise VocabSwapError("method 'focus' needs gensim (pip install gensim)") from e
    model = FastText(
        vector_size=opts.dim,
        window=opts.window,
        min_count=opts.min_count,
        min_n=opts.minn,
        max_n=opts.maxn,
        bucket=opts.bucket,
        sg=opts.sg,
        workers=opts.workers,
        seed=int(seed),
        hashfxn=_stable_hash,
    )
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=opts.epochs)
    return model.wv


def _runs_here(coretype: str) -> bool:
    """Whether this CPU can run OpenBLAS's ``coretype`` kernels (x86-64 with the features they need)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return all(features.get(f, False) for f in _CORETYPE_NEEDS.get(coretype.lower(), ()))


def _running(coretype: str) -> bool:
    """Whether this process's OpenBLAS already runs ``coretype``'s kernels (then a child would add nothing)."""
    import gensim.models.word2vec_inner  # noqa: F401  (loads scipy's BLAS, the one gensim trains with)

    kernels = [b for b in blas_kernels() if b.startswith("openblas ")]
    return bool(kernels) and all(b.rsplit(" ", 1)[-1].lower() == coretype.lower() for b in kernels)


def _child(job_path: str) -> None:
    """The child process of :func:`_fit_pinned`: train, save the vectors and the BLAS kernels."""
    job = pickle.loads(Path(job_path).read_bytes())
    wv = _fit(job["sentences"], job["opts"], job["seed"])
    wv.save(job["out"])
    Path(job["out"] + ".blas.json").write_text(json.dumps(blas_kernels()), encoding="utf-8")


def _fit_pinned(sentences: list[list[str]], opts: FastTextOptions, seed: int, coretype: str) -> tuple[Any, list[str]]:
    """:func:`_fit` in a child process whose OpenBLAS runs ``coretype``'s kernels; (vectors, BLAS kernels)."""
    from gensim.models.fasttext import FastTextKeyedVectors

    lib = str(Path(__file__).resolve().parents[2])  # the child imports this very package
    code = f"import sys; sys.path.insert(0, {lib!r}); import warmstart.vocab_swap.fasttext as f; f._child(sys.argv[1])"
    with tempfile.TemporaryDirectory(prefix="warmstart-fasttext-") as d:
        job, out = Path(d) / "job.pkl", str(Path(d) / "vectors")
        job.write_bytes(pickle.dumps({"sentences": sentences, "opts": opts, "seed": int(seed), "out": out}))
        env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
        r = subprocess.run([sys.executable, "-c", code, str(job)], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise VocabSwapError(
                f"fastText training with OPENBLAS_CORETYPE={coretype} failed (exit {r.returncode}); "
                f"FastTextOptions(blas_coretype=None) trains in this process:\n{r.stderr[-3000:]}"
            )
        return FastTextKeyedVectors.load(out), json.loads(Path(out + ".blas.json").read_text(encoding="utf-8"))


def train_fasttext(
    texts: Iterable[str],
    new_tok: Any,
    opts: FastTextOptions = FastTextOptions(),
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> Any:
    """gensim ``KeyedVectors`` of the new tokenizer's token strings, trained on ``texts``
    tokenised with the new tokenizer (FOCUS's auxiliary embedding space).

    With ``opts.blas_coretype`` (and a CPU that runs it) training runs on that OpenBLAS kernel, in a
    child process unless this one runs it already, so the vectors are the same bits on every such
    machine. ``info``, when given, gets ``"blas"``: the kernels that trained them (:func:`blas_kernels`)."""
    view = _view(new_tok)
    tok = view.tokenizer
    names = view.tokens
    backend = tok.backend_tokenizer
    sentences: list[list[str]] = []
    batch: list[str] = []
    max_len = 10_000  # gensim truncates longer sentences

    def flush() -> None:
        for enc in backend.encode_batch(batch, add_special_tokens=False):
            ids = [i for i in enc.ids if i not in view.special_ids]
            for a in range(0, len(ids), max_len):
                sentences.append([names[i] for i in ids[a : a + max_len]])  # type: ignore[misc]
        batch.clear()

    for t in texts:
        if t:
            batch.append(t)
            if len(batch) >= 1024:
                flush()
    if batch:
        flush()
    if not sentences:
        raise VocabSwapError("method 'focus' needs target-language texts to train fastText on; got none")
    coretype = opts.blas_coretype
    if coretype and not _runs_here(coretype):
        log.warning(
            "focus: this CPU cannot run OpenBLAS's %s kernels; fastText trains on the kernel OpenBLAS "
            "picked, and its vectors may differ in the last bits from other machines'",
            coretype,
        )
        coretype = None
    if coretype and not _running(coretype):
        wv, blas = _fit_pinned(sentences, opts, seed, coretype)
    else:
        wv = _fit(sentences, opts, seed)
        blas = blas_kernels()
    if info is not None:
        info["blas"] = blas
    return wv


def _vectors_for(vectors: Any, names: Sequence[str]) -> tuple[list[int], torch.Tensor]:
    """(positions of ``names`` that have a vector, their vectors as float32)."""
    if hasattr(vectors, "key_to_index"):  # gensim KeyedVectors: only tokens seen in training
        k2i = vectors.key_to_index
        pos = [j for j, s in enumerate(names) if s in k2i]
        arr = vectors.vectors[[k2i[names[j]] for j in pos]] if pos else np.zeros((0, vectors.vector_size))
    else:  # a mapping token string -> vector
        pos = [j for j, s in enumerate(names) if s in vectors]
        arr = np.stack([np.asarray(vectors[names[j]], dtype=np.float32) for j in pos]) if pos else np.zeros((0, 1))
    return pos, torch.as_tensor(np.asarray(arr, dtype=np.float32))
