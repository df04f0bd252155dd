"""The data path at scale: seeded synthetic corpora of 10 MB to 1 GB, measured in one run.

    python -m warmstart.data bench [--sizes 10,100,1000] [--corpus-sizes 100,1000] [--out reports/bench/...]

* **tokenizing**: :func:`~warmstart.data.shards.tokenize_files` with 1 and 2 workers against raw
  ``tokenizers`` ``encode_batch`` on the same text, batches and cores (ratio = raw time / ours);
* **trainer**: a 1-step run of a tiny model on the shards (``python -m warmstart.train``): seconds from process
  start to the first step's log line, and peak memory, at each size;
* **reader**: tokens per second of the packed stream over the shards, one process;
* **corpus stage**: :func:`~warmstart.data.corpus.build_corpus` on corpora with planted exact duplicates, near
  duplicates (5% of words replaced) and off-language documents (real German and French handbook paragraphs):
  peak memory, throughput and the exact counts removed, scored against the plant.

Each measurement runs in its own process; peak memory is the largest sum of RSS over its process tree
(polled every 0.1 s; shared pages counted once per process, so an upper bound).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

MB = 1_000_000


# ---------------------------------------------------------------- the planted corpus


def handbook_texts(langs: list[str]) -> dict[str, list[str]]:
    """Paragraphs of the handbook's pages per language that py3langid calls that language (p >= 0.99): real,
    translated text (the handbook leaves some paragraphs in English)."""
    from warmstart.data import handbook
    from warmstart.data.clean import LanguageFilter, langid_code

    deb = handbook.fetch()
    pages = handbook.read_html(deb, langs)
    lid = LanguageFilter(0.99, None)
    out = {}
    for lang in langs:
        paras = [
            p.text for name in sorted(pages[lang]) for p in handbook.parse_page(name, pages[lang][name]).paragraphs
        ]
        want = langid_code(lang)
        out[lang] = [t for t in paras if len(t) > 200 and _is(lid.classify(t), want)]
    return out


def _is(verdict: tuple[str, float], lang: str) -> bool:
    return verdict[0] == lang and verdict[1] >= 0.99


def planted_corpus(out: Path, n_bytes: int, seed: int, english: list[str], foreign: list[str]) -> dict:
    """Synthetic English documents (sentences of words drawn by frequency from ``english``; ~2 KB, one
    paragraph each) into ``out/part-NN.jsonl`` until ``n_bytes``, with planted defects: for every 20 clean
    documents one exact copy, one near copy (5% of the
    words replaced) and one off-language document (consecutive ``foreign`` paragraphs). Returns the plant:
    document ids by kind and, for copies, the id of their original."""
    rng = random.Random(seed)
    counts = Counter(w for t in english for w in re.findall(r"[a-z]+", t.lower()) if len(w) > 1)
    vocab = [w for w, _ in counts.most_common(5000)]
    weights = [counts[w] for w in vocab]

    def doc() -> str:
        sents = []
        for _ in range(rng.randint(14, 24)):
            ws = rng.choices(vocab, weights, k=rng.randint(8, 22))
            sents.append(" ".join([ws[0].capitalize(), *ws[1:]]) + rng.choice(".?!."))
        return " ".join(sents)

    out.mkdir(parents=True, exist_ok=True)
    files = [open(out / f"part-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(4)]
    plant: dict[str, Any] = {"clean": [], "exact": {}, "near": {}, "foreign": []}
    written, n = 0, 0

    def put(i: str, text: str) -> None:
        nonlocal written, n
        line = json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n"
        files[n % 4].write(line)
        written, n = written + len(line.encode()), n + 1

    try:
        while written < n_bytes:
            base = [(f"c{n + k}", doc()) for k in range(20)]
            for i, t in base:
                put(i, t)
                plant["clean"].append(i)
            (ie, te), (iN, tn) = base[0], base[1]
            put(f"x-{ie}", te)
            plant["exact"][f"x-{ie}"] = ie
            ws = tn.split(" ")
            for k in rng.sample(range(len(ws)), max(1, round(0.05 * len(ws)))):
                ws[k] = rng.choice(vocab)
            put(f"n-{iN}", " ".join(ws))
            plant["near"][f"n-{iN}"] = iN
            k, text = rng.randrange(len(foreign)), []
            while sum(map(len, text)) < 1800:
                text.append(foreign[k % len(foreign)])
                k += 1
            i = f"f{n}"
            put(i, " ".join(text))
            plant["foreign"].append(i)
    finally:
        for f in files:
            f.close()
    plant["bytes"], plant["documents"] = written, n
    return plant


def score(plant: dict, kept_ids: set[str]) -> dict:
    """The corpus stage's output against the plant: of each planted pair exactly one kept (held-out text wins
    over train, so either may be the one), every off-language document removed, every clean one kept."""
    pairs = {**plant["exact"], **plant["near"]}
    paired = set(pairs.values())
    lone = [i for i in plant["clean"] if i not in paired]
    return {
        "exact_pairs_resolved": sum((c in kept_ids) + (o in kept_ids) == 1 for c, o in plant["exact"].items()),
        "exact_pairs": len(plant["exact"]),
        "near_pairs_resolved": sum((c in kept_ids) + (o in kept_ids) == 1 for c, o in plant["near"].items()),
        "near_pairs": len(plant["near"]),
        "foreign_removed": sum(i not in kept_ids for i in plant["foreign"]),
        "foreign": len(plant["foreign"]),
        "clean_lost": sum(i not in kept_ids for i in lone),
        "clean": len(lone),
    }


# ---------------------------------------------------------------- measuring a child process


def measured(cmd: list[str], watch: Path | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak summed RSS of its process tree (MiB) and its stdout's last JSON line.
    ``watch``: a file the process appends to; ``first_write_s`` is when it first held a complete line."""
    import tempfile

    import psutil

    out_f, err_f = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # a pipe would fill and block it
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
    root, peak, first = psutil.Process(proc.pid), 0, None
    while proc.poll() is None:
        if watch is not None and first is None and watch.is_file() and b"\n" in watch.read_bytes():
            first = round(time.perf_counter() - t0, 2)
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    out_f.close()
    err_f.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    last = [line for line in out.splitlines() if line.startswith("{")]
    rec = {"seconds": round(time.perf_counter() - t0, 2), "peak_mib": round(peak / 2**20, 1)}
    if watch is not None:
        rec["first_write_s"] = first
    return rec | (json.loads(last[-1]) if last else {})


def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "warmstart.data", "_child", *args]


# ---------------------------------------------------------------- the children's work


def child_raw(tok_dir: str, files: str) -> dict:
    """Raw ``encode_batch`` over the corpus texts, batches of 1024, the tokenizer's own threads."""
    from tokenizers import Tokenizer

    from warmstart.data.jsonl import batches, expand, iter_texts

    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    t0, n = time.perf_counter(), 0
    for batch in batches(iter_texts(expand(json.loads(files)), "text"), 1024):
        n += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
    return {"tokens": n, "work_seconds": time.perf_counter() - t0}


def child_tokenize(tok_dir: str, files: str, out: str, workers: str) -> dict:
    from transformers import AutoTokenizer

    from warmstart.data.shards import tokenize_files

    tok = AutoTokenizer.from_pretrained(tok_dir)
    t0 = time.perf_counter()
    m = tokenize_files(json.loads(files), out, tok, workers=int(workers))
    return {"tokens": m["tokens"], "documents": m["documents"], "work_seconds": time.perf_counter() - t0}


def train_config(tok_dir: str, shards: str, out: str, steps: int = 1) -> dict:
    """A tiny Llama's run on the shards, as ``python -m warmstart.train --config`` reads it (no checkpoint,
    export, TensorBoard or progress bar: the process is start-up, the data's opening and the steps)."""
    return {
        "model": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "max_pos": 256},
        "tokenizer_path": tok_dir,
        "train_files": {"corpus": [shards]},
        "seq_len": 256,
        "micro_batch": 8,
        "steps": steps,
        "out_dir": out,
        "checkpoint_every": 0,
        "tag_every": None,
        "export_final": False,
        "progress": False,
        "tensorboard": False,
        "log_every": 1,
    }


def child_reader(tok_dir: str, shards: str, seq_len: str) -> dict:
    """Tokens per second of the packed stream over the shards (one process, 16-row batches)."""
    from transformers import AutoTokenizer

    from warmstart.data.packing import CorpusStream, MappedDocuments, PackedStream
    from warmstart.data.shards import TokenShards, fingerprint

    tok = AutoTokenizer.from_pretrained(tok_dir)
    s = TokenShards(shards, fingerprint(tok), len(tok))
    T = int(seq_len)
    stream = CorpusStream({"c": PackedStream(MappedDocuments(s, tok.eos_token_id), T, tok.eos_token_id, seed=1)})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 10:
        n += stream.next_rows(16, 1).input_ids.numel()
    return {"tokens_per_s": round(n / (time.perf_counter() - t0))}


def child_corpus(params_json: str) -> dict:
    from warmstart.config import validate
    from warmstart.data.corpus import build_corpus

    p = validate(json.loads(params_json))
    m = build_corpus(p)
    return {"metrics": m}


def split_corpus(path: Path, n_bytes: int, seed: int, per_doc: int = 5, docs: int = 1000) -> int:
    """A corpus split as the corpus stage writes it, ~1 KB paragraphs until ``n_bytes``, whose documents
    interleave (blocks of ``per_doc`` paragraphs cycle through ``docs`` documents, as the handbook's pages
    interleave its chapters). Returns the paragraph count."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    path.parent.mkdir(parents=True, exist_ok=True)
    n, written = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < n_bytes:
            text = " ".join(rng.choices(words, k=200))
            doc = f"d{(n // per_doc) % docs}"
            line = json.dumps({"id": str(n), "doc": doc, "page": f"{doc}-p{n // per_doc}", "text": text}) + "\n"
            f.write(line)
            n, written = n + 1, written + len(line)
    return n


def child_documents(tok_dir: str, src: str, out: str, how: str) -> dict:
    """The ``train-documents`` view: ``streamed`` (the tokenize stage's two passes) or ``in_memory`` (every
    document's text grouped in a dict first, as the context stage used to)."""
    from collections import defaultdict

    from transformers import AutoTokenizer

    from warmstart.data.shards import tokenize_files

    tok = AutoTokenizer.from_pretrained(tok_dir)
    t0 = time.perf_counter()
    if how == "streamed":
        m = tokenize_files([src], out, tok, documents=True)
        return {"documents": m["documents"], "tokens": m["tokens"], "work_seconds": time.perf_counter() - t0}
    docs: dict[str, list[str]] = defaultdict(list)
    with open(src, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            docs[r["doc"]].append(r["text"])
    texts = ["\n\n".join(p) for p in docs.values()]
    n = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])  # one batch, the tokenizer's threads
    return {"documents": len(docs), "tokens": n, "work_seconds": time.perf_counter() - t0}


def child_held_out(root: str) -> dict:
    """The held-out readers at the default budgets: bits per byte's 32 KB, the probes' 16 MB."""
    from warmstart.data.corpus import head_records, held_out_texts

    t0 = time.perf_counter()
    texts = held_out_texts(root, "xx", "test", 32_000)
    recs = head_records(root, "xx", ["test", "val"], 16_000_000)
    return {"texts": len(texts), "records": len(recs), "work_seconds": time.perf_counter() - t0}


CHILDREN = {
    "raw": child_raw,
    "tokenize": child_tokenize,
    "reader": child_reader,
    "corpus": child_corpus,
    "documents": child_documents,
    "held_out": child_held_out,
}


def run_readers(sizes_mb: list[int], tok_dir: Path, work: Path, seed: int = 1234) -> dict:
    """The split readers at each size, one process each: the documents view (streamed, and grouped in memory
    for contrast) and the held-out readers."""
    record: dict[str, Any] = {"provenance": _provenance(), "seed": seed, "tokenizer": str(tok_dir), "sizes": {}}
    for mb in sizes_mb:
        src = work / "corpus" / "xx" / "test.jsonl"
        n = split_corpus(src, mb * MB, seed)
        row: dict[str, Any] = {"bytes": src.stat().st_size, "paragraphs": n}
        for how in ("streamed", "in_memory"):
            row[how] = measured(_child("documents", str(tok_dir), str(src), str(work / "docs"), how))
        row["held_out"] = measured(_child("held_out", str(work / "corpus")))
        record["sizes"][str(mb)] = row
        subprocess.run(["rm", "-rf", str(work / "corpus"), str(work / "docs")])
    return record


def readers_report(record: dict) -> str:
    """The readers record as markdown."""
    p = record["provenance"]
    lines = [
        f"# Corpus-split readers at scale: {p['cpu']}, {p['cores']} cores, {p['memory_gib']} GiB",
        "",
        f"`python -m warmstart.data readers` at commit `{p['commit'][:12]}`{' (dirty)' if p['dirty'] else ''}; "
        f"Python {p['python']}, torch {p['torch']}, tokenizers {p['tokenizers']}. Tokenizer: `{record['tokenizer']}`. "
        "A synthetic split of ~1 KB paragraphs whose 1,000 documents interleave in blocks of 5; each measurement "
        "in its own process; seconds of the work itself (imports excluded); peak = the process tree's largest RSS.",
        "",
        "| split | paragraphs | documents view, streamed: s / peak | grouped in memory: s / peak | held-out readers: s / peak |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in record["sizes"].values():
        cells = [
            f"{r[k]['work_seconds']:.1f} s / {r[k]['peak_mib']} MiB" for k in ("streamed", "in_memory", "held_out")
        ]
        lines.append(f"| {r['bytes'] / MB:,.0f} MB | {r['paragraphs']:,} | " + " | ".join(cells) + " |")
    same = all(r["in_memory"]["tokens"] == r["streamed"]["tokens"] for r in record["sizes"].values())
    lines += ["", f"The two ways give the same token count at every size: {same}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the benchmark


def _provenance() -> dict:
    import numpy
    import tokenizers
    import torch

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], capture_output=True, text=True)
        return r.stdout.strip()

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


def run_bench(
    sizes_mb: list[int], corpus_mb: list[int], work: Path, seed: int = 1234, partial: Path | None = None
) -> dict:
    """Every measurement of the module docstring; ``work`` holds the corpora and shards (deleted per size).
    ``partial``: the record so far is written there after each size."""
    from warmstart.config import load_params
    from warmstart.tokenizer import train_tokenizer

    hb = handbook_texts(["en-US", "de-DE", "fr-FR", "nb-NO"])
    foreign = hb["de-DE"] + hb["fr-FR"]
    params = load_params("params.yaml")
    tok_dir = work / "tokenizer"
    record: dict[str, Any] = {"provenance": _provenance(), "seed": seed, "sizes": {}, "corpus": {}}
    for mb in sorted(set(sizes_mb) | set(corpus_mb)):
        src = work / f"c{mb}"
        plant = planted_corpus(src, mb * MB, seed, hb["en-US"], foreign)
        files = json.dumps([str(src / "part-*.jsonl")])
        if not tok_dir.exists():  # the study's tokenizer config (8,192 tokens) on the first 10 MB
            from warmstart.data.jsonl import expand, iter_texts

            sample = []
            for t in iter_texts(expand([str(src / "part-*.jsonl")]), "text"):
                sample.append(t)
                if len(sample) > 5000:
                    break
            train_tokenizer(sample, params.tokenizer, tok_dir)
        row: dict[str, Any] = {"bytes": plant["bytes"], "documents": plant["documents"]}
        if mb in sizes_mb:
            raw = measured(_child("raw", str(tok_dir), files))
            for w in (1, 2):
                row[f"tokenize_{w}"] = measured(_child("tokenize", str(tok_dir), files, str(work / f"t{w}"), str(w)))
                row[f"tokenize_{w}"]["vs_raw"] = round(raw["work_seconds"] / row[f"tokenize_{w}"]["work_seconds"], 3)
            row["raw"] = raw
            shards = str(work / "t1")
            run_yaml = work / "run.yaml"
            run_yaml.write_text(json.dumps(train_config(str(tok_dir), shards, str(work / f"run{mb}"))))
            # process start to the first step's log line (log_every 1): imports, model, opening the shards, step 1
            cmd = [sys.executable, "-m", "warmstart.train", "--config", str(run_yaml)]
            row["train"] = measured(cmd, watch=work / f"run{mb}" / "log.jsonl")
            row["reader"] = {str(T): measured(_child("reader", str(tok_dir), shards, str(T))) for T in (128, 4096)}
        if mb in corpus_mb:
            row_c = _bench_corpus(params, src, work / "corpus-out", plant, hb["nb-NO"])
            record["corpus"][str(mb)] = row_c
        record["sizes"][str(mb)] = row
        if partial is not None:
            partial.write_text(json.dumps(record, indent=2) + "\n")
        subprocess.run(["rm", "-rf", str(src), str(work / "t1"), str(work / "t2"), str(work / "corpus-out")])
    return record


def _bench_corpus(params: Any, src: Path, out: Path, plant: dict, nb: list[str]) -> dict:
    """The corpus stage on the planted corpus (English source; a small real nb-NO target from the handbook)."""
    nb_file = out.parent / "nb.jsonl"
    with open(nb_file, "w", encoding="utf-8") as f:
        for i, t in enumerate(nb):
            f.write(json.dumps({"id": f"nb{i}", "text": t}, ensure_ascii=False) + "\n")
    over = params.model_dump(mode="json")
    over["shared"] |= {"data_dir": str(out), "reports_dir": str(out / "reports")}
    over["corpus"] |= {
        "sources": [
            {"kind": "local", "lang": "source", "paths": [str(src / "part-*.jsonl")], "id_field": "id"},
            {"kind": "local", "lang": "target", "paths": [str(nb_file)], "id_field": "id"},
        ],
        "min_train_bytes": 0,
        "workers": 2,
        "langid": {"threshold": 0.9, "candidates": "all"},
        # recall for pairs at character 5-gram Jaccard >= 0.82 (5% of words replaced): 42 bands of 6, verified
        "dedup": {
            "exact": True,
            "near_threshold": 0.6,
            "num_perm": 256,
            "shingle_chars": 5,
            "false_negative_weight": 0.9,
            "verify": 0.7,
        },
    }
    res = measured(_child("corpus", json.dumps(over)))
    m = res.pop("metrics")
    kept = set()
    for split in ("train", "val", "test"):
        with open(out / "corpus" / "en-US" / f"{split}.jsonl", encoding="utf-8") as f:
            kept.update(json.loads(line)["doc"] for line in f)
    removed = m["languages"]["en-US"]["removed"]
    return res | {
        "mb_per_s": round(plant["bytes"] / MB / res["seconds"], 3),
        "removed": removed,
        "score": score(plant, kept),
        "digest": hashlib.sha256(json.dumps(sorted(kept)).encode()).hexdigest()[:16],
    }
