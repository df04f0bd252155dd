"""Command line: ``python -m warmstart.vocab_swap``.

::

    python -m warmstart.vocab_swap --model DIR --tokenizer DIR --method fvt --out DIR
        [--donor DIR] [--seed N] [--pad-multiple 64] [--omp-k 8]
        [--texts PATH ...] [--fasttext-dim 100] [--cov-rows 16384] [--no-hf-mean-resizing]
        [--tokdistil-start fvt] [--tokdistil-layers 1] [--tokdistil-steps 6] ...
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from warmstart.vocab_swap.fasttext import FastTextOptions
from warmstart.vocab_swap.methods import METHODS, _check_method
from warmstart.vocab_swap.plan import PAD_MULTIPLE
from warmstart.vocab_swap.sampling import COV_ROWS
from warmstart.vocab_swap.surgery import swap_model_dir
from warmstart.vocab_swap.tokdistil import OUTPUTS, STARTS, TokDistilOptions
from warmstart.vocab_swap.tokens import VocabSwapError

#: FastTextOptions fields the CLI sets, each by ``--fasttext-<field>`` (in this order in --help).
_FASTTEXT_FLAGS = ("dim", "epochs", "window", "min_count", "bucket", "workers")
#: TokDistilOptions fields the CLI sets, each by ``--tokdistil-<field>``.
_TOKDISTIL_FLAGS = ("start", "layers", "snippets", "snippet_len", "steps", "lr", "batch_tokens", "output")


def load_texts(paths: Sequence[str | Path], text_field: str = "text") -> list[str]:
    """Texts from files, directories or globs: ``.jsonl`` (one JSON object a line,
    ``text_field``) or plain text (one text per non-empty line)."""
    files: list[Path] = []
    for p in paths:
        hits = sorted(glob.glob(str(p), recursive=True)) or [str(p)]
        for h in hits:
            hp = Path(h)
            if hp.is_dir():
                files.extend(sorted(q for q in hp.rglob("*") if q.is_file()))
            elif hp.is_file():
                files.append(hp)
            else:
                raise FileNotFoundError(f"text file {str(h)!r} does not exist")
    out: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            if f.suffix == ".jsonl":
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        obj = json.loads(line)
                        if text_field not in obj:
                            raise VocabSwapError(f"{f}:{n}: no field {text_field!r}")
                        out.append(str(obj[text_field]))
            else:
                out.extend(line.rstrip("\n") for line in fh if line.strip())
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m warmstart.vocab_swap",
        description="Swap a Hugging Face causal LM's vocabulary for a new tokenizer.",
    )
    p.add_argument(
        "--model", required=True, help="model directory (AutoModelForCausalLM, safetensors, with its tokenizer)"
    )
    p.add_argument("--tokenizer", required=True, help="new tokenizer directory (AutoTokenizer)")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--old-tokenizer", default=None, help="old tokenizer directory (default: --model)")
    p.add_argument("--donor", default=None, help="omp: a model directory that uses the new tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pad-multiple", type=int, default=PAD_MULTIPLE)
    p.add_argument("--omp-k", type=int, default=8)
    p.add_argument(
        "--cov-rows", type=int, default=COV_ROWS, help="rows the covariance of random rows is estimated from (0: all)"
    )
    d = FastTextOptions()
    p.add_argument(
        "--texts",
        "--fasttext-texts",
        dest="texts",
        nargs="+",
        default=None,
        help="focus, tokdistil: target texts (.jsonl or .txt files, dirs, globs)",
    )
    p.add_argument("--text-field", default="text", help="field of .jsonl texts")
    for name in _FASTTEXT_FLAGS:  # --fasttext-dim ... --fasttext-workers
        p.add_argument(f"--fasttext-{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument(
        "--hf-mean-resizing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hf-default: resize_token_embeddings(mean_resizing=...) (transformers' default: on)",
    )
    t = TokDistilOptions()
    kinds = {"start": {"choices": STARTS}, "output": {"choices": OUTPUTS}, "layers": {"type": int, "nargs": "+"}}
    for name in _TOKDISTIL_FLAGS:  # --tokdistil-start ... --tokdistil-output
        default = getattr(t, name)
        kw = kinds.get(name, {"type": type(default)})
        p.add_argument(
            f"--tokdistil-{name.replace('_', '-')}",
            default=list(default) if name == "layers" else default,
            help="tokdistil (default " + (" ".join(map(str, default)) if name == "layers" else str(default)) + ")",
            **kw,
        )
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        _check_method(args.method)
        td = TokDistilOptions(**{name: getattr(args, f"tokdistil_{name}") for name in _TOKDISTIL_FLAGS})
        texts = load_texts(args.texts, args.text_field) if args.texts else None
        ft = FastTextOptions(**{name: getattr(args, f"fasttext_{name}") for name in _FASTTEXT_FLAGS})
        same = {
            name: getattr(args, name)
            for name in ("seed", "pad_multiple", "omp_k", "trust_remote_code", "hf_mean_resizing")
        }
        report = swap_model_dir(
            args.model,
            args.tokenizer,
            args.out,
            args.method,
            old_tokenizer_dir=args.old_tokenizer,
            donor_dir=args.donor,
            texts=texts,
            fasttext=ft,
            tokdistil=td,
            cov_rows=args.cov_rows or None,
            **same,
        )
    except (VocabSwapError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in report.to_dict().items() if k not in ("specials", "suppressed_ids", "extra")}
    print(json.dumps(summary, indent=2))
    return 0
