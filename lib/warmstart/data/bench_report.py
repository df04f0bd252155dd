"""The data-path benchmark's record (:mod:`warmstart.data.bench`) as markdown, with each goal checked."""

from __future__ import annotations

from pathlib import Path

# the goals of the data-path issue, checked against the record
TOKENIZE_VS_RAW = 0.8
TRAIN_MEMORY_SPREAD_MIB = 300
TRAIN_STARTUP_S = 10
READER_TOKENS_PER_S = 1_000_000
CORPUS_PEAK_MIB = 2048
CORPUS_SPREAD_MIB = 300


def _ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def write_report(rec: dict, path: str | Path) -> None:
    p = rec["provenance"]
    sizes = rec["sizes"]
    lines = [
        f"# Data path at scale: {p['cpu']}, {p['cores']} cores, {p['memory_gib']} GiB",
        "",
        f"`python -m warmstart.data bench` at commit `{p['commit'][:12]}`{' (dirty tree)' if p['dirty'] else ''}; "
        f"Python {p['python']}, torch {p['torch']}, tokenizers {p['tokenizers']}, numpy {p['numpy']}. "
        f"Seeded synthetic corpora (seed {rec['seed']}); every measurement in its own process, one after another "
        "on the same machine; peak memory = largest summed RSS of the process tree (an upper bound).",
        "",
        *(f"Note: {n}" for n in rec.get("notes") or []),  # what the record alone does not say (load, reruns)
        *([""] if rec.get("notes") else []),
    ]
    tok_rows = [(mb, r) for mb, r in sizes.items() if "raw" in r]
    if tok_rows:
        lines += [
            "## Tokenizing (the tokenize stage's writer against raw `encode_batch`, same text, batches and cores)",
            "",
            "| corpus | tokens | raw encode_batch, s | 1 worker, s | ratio | 2 workers, s | ratio | peak MiB (1 / 2) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for _mb, r in tok_rows:
            t1, t2, raw = r["tokenize_1"], r["tokenize_2"], r["raw"]
            lines.append(
                f"| {r['bytes'] / 1e6:,.0f} MB | {t1['tokens']:,} | {raw['work_seconds']:.1f} | {t1['work_seconds']:.1f} | "
                f"{t1['vs_raw']:.2f} | {t2['work_seconds']:.1f} | {t2['vs_raw']:.2f} | {t1['peak_mib']:,.0f} / {t2['peak_mib']:,.0f} |"
            )
        best = min(max(r["tokenize_1"]["vs_raw"], r["tokenize_2"]["vs_raw"]) for _, r in tok_rows)
        lines += [
            "",
            f"Goal: at least {TOKENIZE_VS_RAW}x raw throughput: {_ok(best >= TOKENIZE_VS_RAW)} (worst size {best:.2f}x).",
            "",
        ]
        lines += [
            "## Trainer and reader (memory-mapped shards)",
            "",
            "| corpus | process start to step 1 logged, s | peak MiB | reader tok/s, seq 128 | reader tok/s, seq 4096 |",
            "| --- | --- | --- | --- | --- |",
        ]
        for _mb, r in tok_rows:
            rd = r["reader"]
            lines.append(
                f"| {r['bytes'] / 1e6:,.0f} MB | {r['train']['first_write_s']:.1f} | {r['train']['peak_mib']:,.0f} | "
                f"{rd['128']['tokens_per_s']:,} | {rd['4096']['tokens_per_s']:,} |"
            )
        peaks = [r["train"]["peak_mib"] for _, r in tok_rows]
        spread = max(peaks) - min(peaks)
        startup = max(tok_rows, key=lambda x: x[1]["bytes"])[1]["train"]["first_write_s"]  # at the largest size
        reader = min(min(v["tokens_per_s"] for v in r["reader"].values()) for _, r in tok_rows)
        lines += [
            "",
            f"Goals: peak memory spread across sizes within {TRAIN_MEMORY_SPREAD_MIB} MiB: "
            f"{_ok(spread <= TRAIN_MEMORY_SPREAD_MIB)} ({spread:.0f} MiB); start-up under {TRAIN_STARTUP_S} s at the largest "
            f"size: {_ok(startup < TRAIN_STARTUP_S)} ({startup:.1f} s); reader at least {READER_TOKENS_PER_S:,} tokens/s per "
            f"process: {_ok(reader >= READER_TOKENS_PER_S)} ({reader:,}).",
            "",
        ]
    if rec["corpus"]:
        lines += [
            "## Corpus stage (planted exact copies, near copies with 5% of words replaced, real de/fr paragraphs)",
            "",
            "| corpus | s | MB/s | peak MiB | exact removed | near removed | langid removed | pairs resolved (exact, near) | off-language removed | clean lost |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mb, c in rec["corpus"].items():
            s, rm = c["score"], c["removed"]
            lines.append(
                f"| {sizes[mb]['bytes'] / 1e6:,.0f} MB | {c['seconds']:.0f} | {c['mb_per_s']:.2f} | {c['peak_mib']:,.0f} | "
                f"{rm['exact_dup']:,} | {rm['near_dup']:,} | {rm['langid']:,} | "
                f"{s['exact_pairs_resolved']:,}/{s['exact_pairs']:,}, {s['near_pairs_resolved']:,}/{s['near_pairs']:,} | "
                f"{s['foreign_removed']:,}/{s['foreign']:,} | {s['clean_lost']:,}/{s['clean']:,} |"
            )
        peaks = [c["peak_mib"] for c in rec["corpus"].values()]
        perfect = all(
            c["score"]["exact_pairs_resolved"] == c["score"]["exact_pairs"]
            and c["score"]["near_pairs_resolved"] == c["score"]["near_pairs"]
            and c["score"]["foreign_removed"] == c["score"]["foreign"]
            and c["score"]["clean_lost"] == 0
            for c in rec["corpus"].values()
        )
        lines += [
            "",
            f"Goals: peak under {CORPUS_PEAK_MIB} MiB: {_ok(max(peaks) < CORPUS_PEAK_MIB)} ({max(peaks):,.0f}); spread across "
            f"sizes within {CORPUS_SPREAD_MIB} MiB: {_ok(max(peaks) - min(peaks) <= CORPUS_SPREAD_MIB)} "
            f"({max(peaks) - min(peaks):,.0f}); every planted defect removed and nothing else lost: {_ok(perfect)}.",
            "",
        ]
    Path(path).write_text("\n".join(lines))
