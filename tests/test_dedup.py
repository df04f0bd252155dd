"""Streaming deduplication (warmstart.data.dedup) and the corpus stage's planted-defect counts."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from test_corpus import EN, NB, _local_params
from warmstart.data.bench import planted_corpus, score
from warmstart.data.clean import Deduplicator
from warmstart.data.dedup import Signer, StreamDeduplicator, U64Index

WORDS = [f"w{i}" for i in range(300)]


def _planted_texts(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
        out.append(t)
        r = rng.random()
        if r < 0.1:
            out.append(t.upper())  # exact after normalisation
        elif r < 0.3:
            w = t.split()
            w[rng.randrange(len(w))] = rng.choice(WORDS)
            out.append(" ".join(w))
    return out


def test_u64_index_finds_every_value_across_runs():
    idx = U64Index(buffer=4)
    keys = [3, 2**63 + 5, 3, 7, 9, 11, 2**64 - 1, 7, 1, 0]
    for v, k in enumerate(keys):
        idx.add(k, v)
    assert idx.runs and idx.recent and idx.size == len(keys)  # entries both in a sorted run and in the buffer
    for k in set(keys):
        assert sorted(idx.get(k)) == [v for v, x in enumerate(keys) if x == k]
        assert k in idx
    assert 4 not in idx and idx.get(4) == []
    small = U64Index(buffer=2, key_bits=32)
    small.add(2**32 + 6, 1)  # 32-bit keys: the low half
    small.add(8, 2)
    assert small.get(6) == [1] and small.runs[0][0].dtype == np.uint32


def test_stream_deduplicator_decides_as_datasketch():
    texts = _planted_texts()
    old = Deduplicator(True, 0.8, 64, 5, 1337)
    sign = Signer(True, True, 64, 5, 1337)
    new = StreamDeduplicator(True, 0.8, 64)
    for t in (new.hashes, *new.tables):
        t.buffer = 16  # many runs
    want = [old.check(t) for t in texts]
    got = [new.check(*sign(t)) for t in texts]
    assert got == want
    assert want.count("exact_dup") > 30 and want.count("near_dup") > 30


def test_verify_drops_chance_candidates_only():
    # with many short bands every pair collides somewhere; verification keeps what is not similar
    texts = _planted_texts(200, 1)
    sign = Signer(True, True, 64, 5, 7)
    loose = StreamDeduplicator(True, 0.2, 64, 0.99)
    checked = StreamDeduplicator(True, 0.2, 64, 0.99, verify=0.7)
    a = [loose.check(*sign(t)) for t in texts]
    b = [checked.check(*sign(t)) for t in texts]
    checked.close()
    assert a.count("near_dup") > b.count("near_dup") > 0
    assert all(x == "near_dup" for x, y in zip(a, b) if x != y)  # verification only ever keeps more


def test_corpus_stage_removes_exactly_the_planted_defects(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus

    foreign = NB * 40  # off-language text planted in the English source
    plant = planted_corpus(tmp_path / "en", 400_000, 3, EN * 40, foreign)
    nb = tmp_path / "nb.jsonl"
    rng, nb_words = random.Random(5), " ".join(NB).replace(".", "").split()
    nb_docs = [" ".join(rng.choice(nb_words) for _ in range(30)) for _ in range(60)]
    nb.write_text("".join(json.dumps({"id": f"nb{i}", "text": t}) + "\n" for i, t in enumerate(nb_docs)))
    dedup = {"near_threshold": 0.6, "num_perm": 256, "false_negative_weight": 0.9, "verify": 0.7}
    sources = [
        {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en" / "part-*.jsonl")], "id_field": "id"},
        {"kind": "local", "lang": "nb-NO", "paths": [str(nb)], "id_field": "id"},
    ]
    outs = {}
    for workers in (1, 2):
        p = _local_params(params_dict, tmp_path / f"w{workers}", sources, dedup=dedup, workers=workers)
        m = build_corpus(p)
        root = tmp_path / f"w{workers}" / "data" / "corpus" / "en-US"
        outs[workers] = {s: (root / f"{s}.jsonl").read_bytes() for s in ("train", "val", "test")}
        kept = {json.loads(line)["doc"] for b in outs[workers].values() for line in b.decode().splitlines()}
        removed = m["languages"]["en-US"]["removed"]
        assert removed["exact_dup"] == len(plant["exact"]) and removed["near_dup"] == len(plant["near"])
        assert removed["langid"] == len(plant["foreign"])
        s = score(plant, kept)
        assert s["exact_pairs_resolved"] == s["exact_pairs"] and s["near_pairs_resolved"] == s["near_pairs"]
        assert s["foreign_removed"] == s["foreign"] > 0 and s["clean_lost"] == 0
    assert outs[1] == outs[2]  # two worker processes write the same corpus


def test_planted_corpus_is_seeded(tmp_path):
    a = planted_corpus(tmp_path / "a", 50_000, 1, EN, NB)
    b = planted_corpus(tmp_path / "b", 50_000, 1, EN, NB)
    assert a == b and (tmp_path / "a/part-00.jsonl").read_bytes() == (tmp_path / "b/part-00.jsonl").read_bytes()
    assert a["bytes"] >= 50_000 and len(a["exact"]) == len(a["near"]) == len(a["foreign"]) == len(a["clean"]) // 20


@pytest.mark.parametrize("bad", [b"", b"\x00\x01binary", b'{"id": 1, "text": "caf\xe9"}\n'])
def test_bad_jsonl_files_are_checked_in_a_stream(tmp_path, bad):
    from warmstart.data.sources import BadFileError, check_file

    f = tmp_path / "x.jsonl"
    f.write_bytes(bad)
    with pytest.raises(BadFileError, match="empty|binary|not UTF-8 text \\(byte 0xe9 at offset 22\\)"):
        check_file(f)
