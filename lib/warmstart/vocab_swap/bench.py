"""Benchmark: swap a Mistral-Nemo-shaped vocabulary (131072 x 5120, untied) to 51,200 tokens.

Only the matrices and the tokenizers are built, not a model:
:func:`warmstart.vocab_swap.swap_embeddings` works on plain tensors.

1. Text: ``data/corpus/*/train.jsonl`` (field ``text``) when present, else a
   seeded synthetic multilingual sample (nine made-up languages with their
   own alphabets and Zipf-distributed lexicons).
2. Tokenizers: byte-level BPE, ``--old-vocab`` on every language ("old"),
   ``--new-vocab`` on the target languages ("new"); cached in ``--work-dir``.
3. Each method runs in a fresh process (so peak RSS is its own): build the
   two old matrices (seeded, chunked, ``--dtype``), swap, and report wall
   time, ``ru_maxrss`` and its ratio to the two old matrices' bytes.

Goals (2 cores): fvt <= 60 s, focus <= 10 min, peak RSS <= 3x the matrices.

``tokdistil`` needs a model body: the worker builds Mistral-Nemo-shaped decoder layers (hidden 5120, 14336
intermediate, 32 heads, 8 KV heads; ``--tokdistil-model-layers`` of them, fp32), starts from the ``fvt`` swap,
and distils ``--tokdistil-tokens`` sampled new tokens at the deepest built layer with the study's snippet and
step settings. It reports the measured CPU cost per token (snippet mining, a fixed cost, apart) and FLOPs per
token, then projects, from the FLOPs, distilling at layer ``--tokdistil-target-layer`` of the full 40-layer
model: CPU time per token at the FLOP rate just measured, and GPU time for a 131,072-token vocabulary (and for
this swap's new tokens) at the H100's bf16 dense peak (989 TFLOP/s, :data:`warmstart.flops.GPU_PEAK_BF16`),
both at 100% of peak (a lower bound) and at ``--tokdistil-mfu``.

    python -m warmstart.vocab_swap.bench [--methods fvt,focus,tokdistil] [--dtype bfloat16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.vocab_swap.tokens import train_byte_bpe

GOALS = {"fvt": 60.0, "focus": 600.0}
MEM_GOAL = 3.0
TARGET_LANGS = ("nb", "sv", "da", "en")  # NorMistral-style: Scandinavian + English

# made-up languages: (consonants, vowels)
_LANGS: dict[str, tuple[str, str]] = {
    "en": ("bcdfghjklmnprstvwy", "aeiou"),
    "nb": ("bdfghjklmnprstv", "aeiouyæøå"),
    "sv": ("bdfghjklmnprstv", "aeiouyåäö"),
    "da": ("bdfghjklmnprstv", "aeiouyæøå"),
    "cs": ("bcdfhjklmnprstvzčďňřšťž", "aeiouyáéíóúůý"),
    "fr": ("bcdfgjlmnprstv", "aeiouéèêàç"),
    "de": ("bdfghklmnprstwzß", "aeiouäöü"),
    "ru": ("бвгджзклмнпрстфхцчшщ", "аеиоуыэюя"),
    "el": ("βγδζθκλμνξπρστφχψ", "αεηιουωάέήίόύώ"),
}


# ---------------------------------------------------------------- text


def _lexicon(rng: np.random.Generator, cons: str, vows: str, n: int) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        syl = []
        for _ in range(int(rng.integers(1, 5))):
            s = ""
            if rng.random() < 0.8:
                s += cons[int(rng.integers(len(cons)))]
            s += vows[int(rng.integers(len(vows)))]
            if rng.random() < 0.4:
                s += cons[int(rng.integers(len(cons)))]
            syl.append(s)
        w = "".join(syl)
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def synthetic_texts(lang: str, n_words: int, lexicon: int, seed: int) -> list[str]:
    """Documents of ~200 words in made-up language ``lang`` (Zipf word frequencies)."""
    digest = hashlib.sha256(f"{seed}:{lang}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    cons, vows = _LANGS[lang]
    lex = np.array(_lexicon(rng, cons, vows, lexicon), dtype=object)
    ranks = np.arange(1, lexicon + 1, dtype=np.float64)
    p = 1.0 / (ranks + 2.7) ** 1.07
    p /= p.sum()
    words = lex[rng.choice(lexicon, size=n_words, p=p)]
    punct = rng.random(n_words)
    docs, doc = [], []
    for i, w in enumerate(words):
        if not doc or doc[-1].endswith("."):
            w = w.capitalize()
        if punct[i] < 0.06:
            w += "."
        elif punct[i] < 0.12:
            w += ","
        elif punct[i] < 0.13:
            w += f" {int(punct[i] * 1e5) % 2025}"
        doc.append(w)
        if len(doc) >= 200:
            docs.append(" ".join(doc))
            doc = []
    if doc:
        docs.append(" ".join(doc))
    return docs


def corpus_texts(root: Path) -> dict[str, list[str]] | None:
    files = sorted(glob.glob(str(root / "data" / "corpus" / "*" / "train.jsonl")))
    if not files:
        return None
    out: dict[str, list[str]] = {}
    for f in files:
        lang = Path(f).parent.name
        with open(f, encoding="utf-8") as fh:
            out[lang] = [json.loads(line)["text"] for line in fh if line.strip()]
    return out


# ---------------------------------------------------------------- tokenizers


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Tokenizers and fastText text in ``work_dir`` (reused when the settings match)."""
    work = Path(args.work_dir)
    key = hashlib.sha256(
        json.dumps(
            [
                args.old_vocab,
                args.new_vocab,
                args.words_per_lang,
                args.lexicon,
                args.fasttext_words,
                args.old_target_share,
                args.seed,
                args.text,
            ]
        ).encode()
    ).hexdigest()[:12]
    d = work / key
    meta_path = d / "meta.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = Path(__file__).resolve().parents[2]
    by_lang = None if args.text == "synthetic" else corpus_texts(root)
    if args.text == "corpus" and by_lang is None:
        raise SystemExit(f"error: --text corpus but no {root}/data/corpus/*/train.jsonl (run `dvc repro corpus`)")
    source = "data/corpus" if by_lang else "synthetic"
    if by_lang is None:
        by_lang = {lang: synthetic_texts(lang, args.words_per_lang, args.lexicon, args.seed) for lang in _LANGS}
    t_text = time.perf_counter() - t0
    targets = [lang for lang in by_lang if lang.split("-")[0] in TARGET_LANGS] or list(by_lang)[-1:]
    ft_langs = [lang for lang in targets if not lang.startswith("en")] or targets
    # the old tokenizer sees only a small share of the new languages (as
    # Mistral-Nemo's saw little Norwegian); English is shared in full
    all_texts = []
    for lang, texts in by_lang.items():
        n = len(texts) if lang not in ft_langs else max(1, int(len(texts) * args.old_target_share))
        all_texts.extend(texts[:n])
    target_texts = [t for lang in targets for t in by_lang[lang]]
    t1 = time.perf_counter()
    old = train_byte_bpe(all_texts, args.old_vocab, d / "old", min_frequency=2)
    t_old = time.perf_counter() - t1
    t1 = time.perf_counter()
    new = train_byte_bpe(target_texts, args.new_vocab, d / "new", min_frequency=2)
    t_new = time.perf_counter() - t1
    per_lang = args.fasttext_words // len(ft_langs)  # words of fastText text per language
    ft_words = 0
    with open(d / "focus_texts.jsonl", "w", encoding="utf-8") as fh:
        for lang in ft_langs:
            n = 0
            for t in by_lang[lang]:
                if n >= per_lang:
                    break
                fh.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
                n += len(t.split())
            ft_words += n
    meta = {
        "dir": str(d),
        "text_source": source,
        "languages": list(by_lang),
        "target_languages": targets,
        "fasttext_languages": ft_langs,
        "text_bytes": sum(len(t.encode()) for t in all_texts),
        "old_target_share": args.old_target_share,
        "target_text_bytes": sum(len(t.encode()) for t in target_texts),
        "fasttext_words": ft_words,
        "old_vocab_trained": len(old),
        "new_vocab_trained": len(new),
        "seconds_text": round(t_text, 1),
        "seconds_old_tokenizer": round(t_old, 1),
        "seconds_new_tokenizer": round(t_new, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


# ---------------------------------------------------------------- worker


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _random_matrix(rows: int, cols: int, dtype: torch.dtype, seed: int, chunk: int = 4096) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.empty(rows, cols, dtype=dtype)
    for a in range(0, rows, chunk):
        b = min(a + chunk, rows)
        m[a:b] = (torch.randn(b - a, cols, generator=g) * 0.02).to(dtype)
    return m


def worker(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from warmstart import vocab_swap as vs

    method = args.worker
    d = Path(args.prepared)
    old_tok = AutoTokenizer.from_pretrained(str(d / "old"))
    new_tok = AutoTokenizer.from_pretrained(str(d / "new"))
    dtype = getattr(torch, args.dtype)
    rows = max(args.old_vocab, len(old_tok))
    embed = _random_matrix(rows, args.hidden, dtype, args.seed)
    head = _random_matrix(rows, args.hidden, dtype, args.seed + 1)
    if method == "tokdistil":
        from warmstart.vocab_swap.tokdistil_bench import tokdistil_worker

        return {"method": method, "matrix_shape": [rows, args.hidden], "dtype": args.dtype} | tokdistil_worker(
            args, old_tok, new_tok, embed, head
        )
    kw: dict[str, Any] = {}
    if method == "focus":
        kw["texts"] = vs.load_texts([d / "focus_texts.jsonl"])
        kw["fasttext"] = vs.FastTextOptions(
            dim=args.fasttext_dim,
            epochs=args.fasttext_epochs,
            min_count=args.fasttext_min_count,
            workers=args.fasttext_workers,
        )
    if method == "omp":
        kw["donor_embed"] = _random_matrix(len(new_tok), args.donor_hidden, torch.float32, args.seed + 2)
        kw["omp_k"] = args.omp_k
    matrix_bytes = 2 * embed.numel() * embed.element_size()
    rss_before = _rss()
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss())

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    res = vs.swap_embeddings(embed, head, old_tok, new_tok, method, seed=args.seed, pad_multiple=64, **kw)
    seconds = time.perf_counter() - t0
    stop.set()
    th.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    r = res.report
    return {
        "method": method,
        "seconds": round(seconds, 2),
        "goal_seconds": GOALS.get(method),
        "matrix_shape": [rows, args.hidden],
        "dtype": args.dtype,
        "two_matrices_gib": round(matrix_bytes / 2**30, 3),
        "rss_before_swap_gib": round(rss_before / 2**30, 3),
        "peak_rss_sampled_during_swap_gib": round(peak[0] / 2**30, 3),
        "peak_rss_process_gib": round(maxrss / 2**30, 3),
        "peak_ratio": round(maxrss / matrix_bytes, 3),
        "swap_extra_gib": round((peak[0] - rss_before) / 2**30, 3),
        "new_shape": list(res.embed.shape),
        "aligned": r.aligned,
        "decomposed": r.decomposed,
        "fallback_random": r.fallback_random,
        "mean_init": r.mean_init,
        "specials_mapped": r.specials_mapped,
        "padded_vocab": r.padded_vocab,
        "extra": r.extra,
    }


# ---------------------------------------------------------------- driver


def _env() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "tokenizers", "gensim", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "versions": versions,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m warmstart.vocab_swap.bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--methods",
        default="fvt,focus",
        help="comma-separated methods (random,exact,fvt,focus,omp,hf-default,tokdistil)",
    )
    p.add_argument("--old-vocab", type=int, default=131072)
    p.add_argument("--new-vocab", type=int, default=51200)
    p.add_argument("--hidden", type=int, default=5120)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--words-per-lang", type=int, default=1_500_000, help="synthetic text: words per language")
    p.add_argument("--lexicon", type=int, default=60_000, help="synthetic text: distinct words per language")
    p.add_argument("--fasttext-words", type=int, default=3_000_000, help="focus: words of target text for fastText")
    p.add_argument(
        "--old-target-share", type=float, default=0.05, help="share of the new languages' text the old tokenizer sees"
    )
    p.add_argument("--fasttext-dim", type=int, default=100)
    p.add_argument("--fasttext-epochs", type=int, default=3)
    p.add_argument("--fasttext-min-count", type=int, default=10)
    p.add_argument("--fasttext-workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--omp-k", type=int, default=8)
    p.add_argument("--donor-hidden", type=int, default=1024, help="omp: hidden size of the (synthetic) donor")
    p.add_argument("--intermediate", type=int, default=14336, help="tokdistil: MLP width of the built layers")
    p.add_argument("--heads", type=int, default=32, help="tokdistil: attention heads (head dim: hidden / heads)")
    p.add_argument("--kv-heads", type=int, default=8, help="tokdistil: key/value heads")
    p.add_argument("--tokdistil-tokens", type=int, default=4, help="tokdistil: new tokens distilled on this CPU")
    p.add_argument("--tokdistil-model-layers", type=int, default=2, help="tokdistil: decoder layers built")
    p.add_argument("--tokdistil-full-layers", type=int, default=40, help="tokdistil: layers of the full model")
    p.add_argument(
        "--tokdistil-target-layer", type=int, default=14, help="tokdistil: distilled layer of the full model"
    )
    p.add_argument("--tokdistil-mfu", type=float, default=0.4, help="tokdistil: the GPU projection's assumed MFU")
    p.add_argument(
        "--tokdistil-lr", type=float, default=1e-4, help="tokdistil: learning rate (the reference's, for real models)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--text",
        choices=["auto", "corpus", "synthetic"],
        default="auto",
        help="tokenizer text: the project's data/corpus (auto: when present) or the seeded synthetic "
        "nine-language sample (large enough for the full 131,072 / 51,200 vocabularies)",
    )
    p.add_argument("--work-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "warmstart-bench-swap"))
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    t0 = time.perf_counter()
    meta = prepare(args)
    print(
        f"tokenizers: old {meta['old_vocab_trained']} / new {meta['new_vocab_trained']} tokens "
        f"({meta['text_source']} text, {meta['text_bytes'] / 1e6:.0f} MB; prepared in {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    results = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        cmd = [sys.executable, "-m", "warmstart.vocab_swap.bench", "--worker", method, "--prepared", meta["dir"]]
        for k in (
            "old_vocab",
            "hidden",
            "dtype",
            "seed",
            "fasttext_dim",
            "fasttext_epochs",
            "fasttext_min_count",
            "fasttext_workers",
            "omp_k",
            "donor_hidden",
            "intermediate",
            "heads",
            "kv_heads",
            "tokdistil_tokens",
            "tokdistil_model_layers",
            "tokdistil_full_layers",
            "tokdistil_target_layer",
            "tokdistil_mfu",
            "tokdistil_lr",
        ):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{method}: worker failed (rc={proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
            results.append({"method": method, "error": proc.stderr[-3000:]})
            continue
        r = json.loads(lines[-1][len("RESULT ") :])
        results.append(r)
        if method == "tokdistil":
            pr = r["projection"]
            gpu = ", ".join(f"{v:.2f} h {k.replace('_', ' ')}" for k, v in pr["gpu_hours_131072_tokens"].items())
            print(
                f"tokdistil {r['distilled']} tokens at layer {r['model_layers_built']} of {r['model_layers_built']} "
                f"built: {r['cpu_seconds_per_token']:.1f} s/token on CPU ({r['flops_per_token'] / 1e12:.2f} TFLOP, "
                f"{r['cpu_flop_rate'] / 1e9:.0f} GFLOP/s; snippets {r['snippet_seconds']:.0f} s once)  full model, "
                f"layer {pr['target_layer']} of {pr['full_layers']}: {pr['flops_per_token'] / 1e12:.1f} TFLOP/token, "
                f"{pr['cpu_seconds_per_token']:.0f} s/token on CPU; 131,072 tokens on one {pr['gpu']}: {gpu}",
                flush=True,
            )
            continue
        goal = GOALS.get(method)
        ok_t = "" if goal is None else (f" (goal <= {goal:.0f}s: " + ("ok" if r["seconds"] <= goal else "MISSED") + ")")
        ok_m = "ok" if r["peak_ratio"] <= MEM_GOAL else "MISSED"
        print(
            f"{method:6s} {r['seconds']:8.1f}s{ok_t}  peak RSS {r['peak_rss_process_gib']:.2f} GiB = "
            f"{r['peak_ratio']:.2f}x the two {r['dtype']} matrices ({r['two_matrices_gib']:.2f} GiB; goal <= {MEM_GOAL}x: {ok_m})  "
            f"aligned {r['aligned']} decomposed {r['decomposed']} random {r['fallback_random']}  extra {r['extra']}",
            flush=True,
        )
    out = {
        "env": _env(),
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "prepared")},
        "prepared": meta,
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
