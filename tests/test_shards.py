"""Token shards (warmstart.data.shards) and the trainer's memory-mapped stream (warmstart.data.stream)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import byte_bpe
from warmstart.data.packing import CorpusStream, ListDocuments, MappedDocuments, PackedStream
from warmstart.data.shards import ShardError, TokenShards, fingerprint, token_dtype, tokenize_files
from warmstart.data.stream import build_stream, open_corpus

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa øre æble på får".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 80))) for _ in range(n)]


def _jsonl(path: Path, texts: list[str], extra: str = "") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        f.write(extra)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    texts = _texts(300)
    # a blank line and an empty text are skipped, as the old reader skipped them
    src = _jsonl(d / "c.jsonl", texts, extra='\n{"text": ""}\n')
    tok = byte_bpe(texts[:80], 300)
    return SimpleNamespace(dir=d, texts=texts, src=src, tok=tok)


def test_round_trip_tokens_boundaries_and_bytes(corpus, tmp_path):
    # small shards: documents never split across shards, several shard files
    m = tokenize_files([str(corpus.src)], tmp_path / "t", corpus.tok, batch_docs=7, shard_tokens=500)
    want = corpus.tok(corpus.texts, add_special_tokens=False)["input_ids"]
    s = TokenShards(tmp_path / "t", fingerprint(corpus.tok), len(corpus.tok))
    assert len(m["shards"]) > 3 and s.documents == len(corpus.texts) == m["documents"]
    assert [s.doc(i).tolist() for i in range(len(s))] == want
    assert [s.nbytes(i) for i in range(len(s))] == [len(t.encode()) for t in corpus.texts]
    assert s.tokens == sum(map(len, want)) and s.bytes == sum(len(t.encode()) for t in corpus.texts)
    assert s.lengths().tolist() == [len(x) for x in want]
    assert m["dtype"] == "uint16" and m["sources"][0]["sha256"] and m["sources"][0]["path"] == str(corpus.src)
    s.verify()


def test_two_workers_write_the_same_shards(corpus, tmp_path):
    tokenize_files([str(corpus.src)], tmp_path / "one", corpus.tok, batch_docs=16)
    tokenize_files([str(corpus.src)], tmp_path / "two", corpus.tok, batch_docs=16, workers=2)
    for ext in ("tokens", "ends", "bytes"):
        assert (tmp_path / "one" / f"00000.{ext}").read_bytes() == (tmp_path / "two" / f"00000.{ext}").read_bytes()


def test_token_width_follows_the_vocabulary():
    assert token_dtype(300) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(1 << 32) == np.uint32
    with pytest.raises(ShardError, match="does not fit uint32"):
        token_dtype((1 << 32) + 1)


def _written(corpus, tmp_path) -> Path:
    out = tmp_path / "t"
    tokenize_files([str(corpus.src)], out, corpus.tok)
    return out


def test_bad_shards_are_refused_by_name(corpus, tmp_path):
    out = _written(corpus, tmp_path)
    fp = fingerprint(corpus.tok)
    with pytest.raises(ShardError, match="another tokenizer"):
        TokenShards(out, "0" * 64)
    with pytest.raises(ShardError, match="cannot hold the ids of a 70,000-token vocabulary"):
        TokenShards(out, fp, 70_000)
    m = json.loads((out / "manifest.json").read_text())
    m["documents"] += 1
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="totals do not add up"):
        TokenShards(out, fp)
    m["documents"] -= 1
    m["shards"][0]["bytes"] += 5
    m["bytes"] += 5
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="index does not match"):
        TokenShards(out, fp)
    m["shards"][0]["bytes"] -= 5
    m["bytes"] -= 5
    (out / "manifest.json").write_text(json.dumps(m))
    TokenShards(out, fp)  # back to the truth: accepted
    tokens = out / "00000.tokens"
    tokens.write_bytes(tokens.read_bytes()[:-6])
    with pytest.raises(ShardError, match=r"00000\.tokens: .* bytes, the manifest says .* \(truncated"):
        TokenShards(out, fp)
    with pytest.raises(ShardError, match="no manifest.json"):
        TokenShards(tmp_path)


def test_bad_sources_fail_before_anything_is_replaced(corpus, tmp_path):
    out = _written(corpus, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    empty = _jsonl(tmp_path / "empty.jsonl", [], extra='\n{"text": ""}\n')
    with pytest.raises(ShardError, match="hold no documents"):
        tokenize_files([str(empty)], out, corpus.tok)
    bad = _jsonl(tmp_path / "bad.jsonl", ["fine"], extra="{not json\n")
    with pytest.raises(ShardError, match=r"bad\.jsonl:2: not a JSON object"):
        tokenize_files([str(bad)], out, corpus.tok)
    (tmp_path / "unreadable.jsonl").mkdir()
    with pytest.raises(ShardError, match="cannot read source"):
        tokenize_files([str(tmp_path / "unreadable.jsonl")], out, corpus.tok)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        tokenize_files([str(tmp_path / "nope-*.jsonl")], out, corpus.tok)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old shards are untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dir left


def _streams(corpus, tmp_path, bos: bool):
    """The same corpus as the old in-memory stream (ids from the tokenizer's batch call) and as shards."""
    ids = corpus.tok(corpus.texts, add_special_tokens=False)["input_ids"]
    nbytes = [len(t.encode()) for t in corpus.texts]
    b = corpus.tok.bos_token_id if bos else None
    old = PackedStream(ListDocuments(ids, corpus.tok.eos_token_id, nbytes, b), 32, corpus.tok.eos_token_id, seed=5)
    shards = open_corpus("c", [str(corpus.src)], corpus.tok, tmp_path / "cache")
    new = PackedStream(MappedDocuments(shards, corpus.tok.eos_token_id, b), 32, corpus.tok.eos_token_id, seed=5)
    return old, new


def _same(a, b) -> None:
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.doc_ids, b.doc_ids)
    assert torch.equal(a.position_ids, b.position_ids) and a.bytes == b.bytes and a.corpora == b.corpora


@pytest.mark.parametrize("bos", [False, True])
def test_mapped_stream_equals_the_in_memory_stream_across_epochs(corpus, tmp_path, bos):
    old, new = _streams(corpus, tmp_path, bos)
    while new.epoch < 2:  # two epochs of the 300 documents, and into the third
        _same(old.next_rows(64), new.next_rows(64))
    _same(old.next_rows(64), new.next_rows(64))
    assert old.state_dict() == new.state_dict()


def test_resume_mid_document_is_exact(corpus, tmp_path):
    _, a = _streams(corpus, tmp_path, False)
    a.next_rows(13)
    state = a.state_dict()
    assert state["offset"] > 0  # mid-document
    rest = a.next_rows(40)
    _, b = _streams(corpus, tmp_path, False)
    b.load_state_dict(state)
    _same(rest, b.next_rows(40))


def test_ranks_read_disjoint_rows_whose_union_is_the_batch(corpus, tmp_path):
    world, mb, accum = 2, 3, 2
    rows = world * mb * accum

    def stream():
        s = open_corpus("c", [str(corpus.src)], corpus.tok, tmp_path / "cache")
        return CorpusStream({"c": PackedStream(MappedDocuments(s, corpus.tok.eos_token_id), 16, 2, seed=1)})

    full, ranks = stream(), [stream() for _ in range(world)]
    for step in range(1, 6):
        whole = full.next_rows(rows, step)
        got = torch.zeros_like(whole.input_ids)
        seen = set()
        for r, s in enumerate(ranks):
            mine = {(a * world + r) * mb + i for a in range(accum) for i in range(mb)}
            assert not seen & mine
            seen |= mine
            part = s.next_rows(rows, step, read=mine)
            assert part.bytes == whole.bytes  # every rank counts the global batch's bytes
            idx = sorted(mine)
            assert torch.equal(part.input_ids[idx], whole.input_ids[idx])
            others = sorted(set(range(rows)) - mine)
            assert not part.input_ids[others].any()  # the other ranks' rows were never read
            got[idx] = part.input_ids[idx]
        assert seen == set(range(rows)) and torch.equal(got, whole.input_ids)
    assert all(s.state_dict() == full.state_dict() for s in ranks)


def test_mixture_proportions_are_exact_over_a_window(corpus, tmp_path):
    s = open_corpus("c", [str(corpus.src)], corpus.tok, tmp_path / "cache")
    streams = {k: PackedStream(MappedDocuments(s, corpus.tok.eos_token_id), 16, 2, seed=i) for i, k in enumerate("ab")}
    cs = CorpusStream(streams, mix={"a": 1, "b": 3})
    names = cs.next_rows(400, 1).corpora
    assert names.count("a") == 100 and names.count("b") == 300
    for k in range(1, 401):  # after every prefix each corpus is within one row of its share
        assert abs(names[:k].count("a") - k / 4) < 1


def test_build_stream_tokenizes_jsonl_once_into_the_cache(corpus, tmp_path):
    cfg = SimpleNamespace(
        train_files={"c": [str(corpus.src)]},
        text_field="text",
        add_bos=False,
        seq_len=32,
        seed=5,
        shuffle=True,
        corpus_schedule=[],
        mix=None,
        token_cache=str(tmp_path / "cache"),
        out_dir=str(tmp_path / "run"),
    )
    a = build_stream(cfg, corpus.tok).next_rows(4, 1)
    (cached,) = (p for p in (tmp_path / "cache").iterdir() if p.is_dir())  # (and the cache's lock file)
    stamp = (cached / "manifest.json").stat().st_mtime_ns
    b = build_stream(cfg, corpus.tok).next_rows(4, 1)
    assert (cached / "manifest.json").stat().st_mtime_ns == stamp  # read, not tokenized again
    _same(a, b)
    # a tokenized split is used as it is, and refused for another tokenizer
    cfg.train_files = {"c": [str(cached)]}
    _same(a, build_stream(cfg, corpus.tok).next_rows(4, 1))
    other = byte_bpe(corpus.texts[:50], 280)
    with pytest.raises(ShardError, match="another tokenizer"):
        build_stream(cfg, other)
    shutil.rmtree(cached)


def test_a_shared_cache_is_tokenized_once_while_the_other_runs_wait(corpus, tmp_path, monkeypatch):
    """Runs that share a token cache (the stability workers) take turns: one writes it, the others wait on the
    lock and then read it; none tokenizes again, and none replaces the directory another has put in place."""
    import threading

    import warmstart.data.stream as st

    cache = tmp_path / "cache"
    path = cache / f"c-{st.cache_key([str(corpus.src)], 'text', fingerprint(corpus.tok))}"
    real, calls, done = st.tokenize_files, [], []
    monkeypatch.setattr(st, "tokenize_files", lambda *a, **k: calls.append(a) or real(*a, **k))
    with st.cache_lock(path):  # another run holds the lock while it tokenizes
        t = threading.Thread(target=lambda: done.append(st.open_corpus("c", [str(corpus.src)], corpus.tok, cache)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not done  # this run waits
        real([str(corpus.src)], path, corpus.tok, name="c")  # the other run puts its shards in place
    t.join(60)
    assert not t.is_alive() and calls == []  # read, not tokenized again
    assert Path(done[0].path) == path and done[0].tokens == TokenShards(path).tokens


def test_documents_view_equals_the_joined_documents_tokenized(corpus, tmp_path):
    """``documents=True`` shards each whole document (the records of one ``doc``, wherever they are, joined by a blank
    line; a record without ``doc`` stands alone by its ``id``): the same ids, bytes and rows as tokenizing a
    jsonl of the joined texts, which the context fine-tune used to write and tokenize in every run."""
    recs, joined = [], []
    for i in range(0, 120, 3):
        paras = corpus.texts[i : i + 3]
        recs += [{"id": f"{i}-{k}", "doc": f"d{i}", "text": t} for k, t in enumerate(paras)]
        joined.append("\n\n".join(paras))
    recs.append({"id": "loose", "text": corpus.texts[200]})
    joined.append(corpus.texts[200])
    recs.append({"id": "late", "doc": "d0", "text": corpus.texts[201]})  # d0 again, after the others
    joined[0] += "\n\n" + corpus.texts[201]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    m = tokenize_files([str(src)], tmp_path / "docs", corpus.tok, documents=True)
    ref = tokenize_files([str(_jsonl(tmp_path / "joined.jsonl", joined))], tmp_path / "ref", corpus.tok)
    assert m["unit"] == "document" and "unit" not in ref
    assert (m["documents"], m["tokens"], m["bytes"]) == (ref["documents"], ref["tokens"], ref["bytes"])
    a, b = TokenShards(tmp_path / "docs"), TokenShards(tmp_path / "ref")
    assert len(a) == len(joined) == 41
    for i in (0, 17, 40):
        assert a.doc(i).tolist() == b.doc(i).tolist()
        assert a.doc(i).tolist() == corpus.tok(joined[i], add_special_tokens=False)["input_ids"]


def test_batches_end_at_a_character_budget_and_the_shards_do_not_change(corpus, tmp_path):
    from warmstart.data.jsonl import batches

    assert list(batches(["aaaa", "bb", "c", "dddddd", "e"], 3, max_chars=5)) == [["aaaa", "bb"], ["c", "dddddd"], ["e"]]
    assert list(batches(["aaaa", "bb", "c"], 2)) == [["aaaa", "bb"], ["c"]]
    small = tokenize_files([str(corpus.src)], tmp_path / "small", corpus.tok, batch_chars=200)
    whole = tokenize_files([str(corpus.src)], tmp_path / "whole", corpus.tok)
    assert small["shards"] == whole["shards"]  # same tokens, ends and bytes: batching changes no id
    for ext in ("tokens", "ends", "bytes"):
        a, b = (sorted((tmp_path / d).glob(f"*.{ext}")) for d in ("small", "whole"))
        assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    with pytest.raises(ShardError, match="batch_chars must be >= 1"):
        tokenize_files([str(corpus.src)], tmp_path / "bad", corpus.tok, batch_chars=0)
