"""EOS-separated packing, resumable streams, hot-swap/mixing and document masks."""

import json

import pytest
import torch

from warmstart.data.packing import CorpusStream, PackedStream
from warmstart.kernels.masks import additive_mask, document_attention_mask
from warmstart.model import build_model

DOCS = [[1, 2, 3], [4, 5], [6]]


def test_exact_rows_eos_separated():
    s = PackedStream(DOCS, seq_len=4, eos_id=0, shuffle=False, doc_bytes=[3, 2, 1])
    b = s.next_rows(4)
    # stream: 1 2 3 0 | 4 5 0 6 | 0 . 1 2 3 | 0 4 5 0   (epoch 1 restarts the documents)
    assert b.input_ids.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [0, 1, 2, 3], [0, 4, 5, 0]]
    assert b.doc_ids.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], [0, 1, 1, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 0, 1, 2], [0, 0, 1, 2]]
    assert s.state_dict() == {"epoch": 1, "index": 2, "offset": 0}
    # bytes credited in proportion to tokens, integer-exact: 3 | 2 + 1*1//2 | 1 - 0 + 3*3//4 | 3 - 2 + 2
    assert b.bytes == 3 + 2 + (1 + 2) + (1 + 2)
    assert b.input_ids.dtype == torch.int64


def test_one_epoch_holds_every_token_once():
    docs = [list(range(10 * i + 1, 10 * i + 1 + n)) for i, n in enumerate([7, 1, 12, 3, 5])]
    s = PackedStream(docs, seq_len=5, eos_id=0, seed=3)
    total = sum(len(d) + 1 for d in docs)  # 33 tokens incl. separators
    rows = s.next_rows(total // 5 + 1).input_ids.flatten().tolist()[:total]
    assert sorted(rows) == sorted([t for d in docs for t in d] + [0] * len(docs))
    assert s.state_dict()["epoch"] == 1


def test_state_round_trip_gives_identical_continuation():
    docs = [list(range(1, n + 1)) for n in [5, 17, 2, 9, 30, 1, 4]]
    a = PackedStream(docs, seq_len=8, eos_id=0, seed=11)
    a.next_rows(13)
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON (it lives in trainer_state.json)
    cont_a = a.next_rows(20)
    b = PackedStream(docs, seq_len=8, eos_id=0, seed=11)
    b.load_state_dict(state)
    cont_b = b.next_rows(20)
    assert torch.equal(cont_a.input_ids, cont_b.input_ids) and cont_a.bytes == cont_b.bytes
    assert torch.equal(cont_a.doc_ids, cont_b.doc_ids)
    # other seeds shuffle differently
    c = PackedStream(docs, seq_len=8, eos_id=0, seed=12)
    assert not torch.equal(c.next_rows(10).input_ids, PackedStream(docs, 8, 0, seed=11).next_rows(10).input_ids)


def _streams():
    return {
        "a": PackedStream([[1, 2, 3], [4, 5, 6, 7]], seq_len=3, eos_id=0, shuffle=False),
        "b": PackedStream([[101, 102], [103]], seq_len=3, eos_id=0, shuffle=False),
    }


def test_hot_swap_schedule_resumes_each_corpus():
    cs = CorpusStream(_streams(), schedule=[(0, "a"), (3, "b"), (5, "a")])
    got = [cs.next_rows(1, step) for step in range(1, 8)]
    assert [g.corpora[0] for g in got] == ["a", "a", "b", "b", "a", "a", "a"]
    assert [cs.corpus_at(s) for s in (1, 2, 3, 4, 5, 100)] == ["a", "a", "b", "b", "a", "a"]
    a_rows = [g.input_ids[0].tolist() for g in got if g.corpora[0] == "a"]
    assert a_rows == _streams()["a"].next_rows(5).input_ids.tolist()  # a continues where it stopped
    assert [g.input_ids[0].tolist() for g in got[2:4]] == [[101, 102, 0], [103, 0, 101]]
    # state round trip mid-run
    cs2 = CorpusStream(_streams(), schedule=[(0, "a"), (3, "b"), (5, "a")])
    for step in (1, 2, 3):
        cs2.next_rows(1, step)
    state = json.loads(json.dumps(cs2.state_dict()))
    cs3 = CorpusStream(_streams(), schedule=[(0, "a"), (3, "b"), (5, "a")])
    cs3.load_state_dict(state)
    assert [cs3.next_rows(1, s).input_ids.tolist() for s in (4, 5, 6, 7)] == [g.input_ids.tolist() for g in got[3:]]


def test_mixing_proportions_are_exact():
    cs = CorpusStream(_streams(), mix={"a": 1, "b": 3})
    names = cs.next_rows(400, step=1).corpora
    for k in range(1, 401):
        assert abs(names[:k].count("a") - 0.25 * k) < 1  # never off by a whole row
    assert names.count("a") == 100 and names.count("b") == 300
    assert names[:8] == ["b", "a", "b", "b", "b", "a", "b", "b"]
    with pytest.raises(ValueError, match="not both"):
        CorpusStream(_streams(), schedule=[(0, "a")], mix={"a": 1})
    with pytest.raises(ValueError, match="unknown"):
        CorpusStream(_streams(), schedule=[(0, "zz")])


def test_document_mask_exact():
    doc = torch.tensor([[0, 0, 1, 1]])
    causal = document_attention_mask(doc)
    assert causal.shape == (1, 1, 4, 4)
    assert causal[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    bidi = document_attention_mask(doc, bidirectional=True)
    assert bidi[0, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    across = document_attention_mask(doc, causal_across=True)
    assert across[0, 0].int().tolist() == torch.ones(4, 4).tril().int().tolist()
    per_row = document_attention_mask(torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]), torch.tensor([False, True]))
    assert torch.equal(per_row[0], causal[0]) and torch.equal(per_row[1], bidi[0])
    add = additive_mask(causal)
    assert add[0, 0, 0, 0] == 0 and add[0, 0, 0, 1] == torch.finfo(torch.float32).min


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest and never oversubscribes xdist workers
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(vocab_size=50, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_pos=64).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("how", ["4d_causal", "position_ids", "4d_bidirectional"])
def test_doc_mask_blocks_cross_document_attention(tiny_model, how, attn):
    """Changing document B leaves the outputs of documents A and C (same row) unchanged."""
    tiny_model.set_attn_implementation(attn)
    s = PackedStream([[5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16]], seq_len=15, eos_id=1, shuffle=False)
    b = s.next_rows(1)  # A = positions 0..4, B = 5..10, C = 11..14
    ids = b.input_ids
    other = ids.clone()
    other[0, 5:10] = torch.tensor([20, 21, 22, 23, 24])

    def run(x):
        kw = {}
        if how == "position_ids":  # transformers' packed-sequence detection; needs use_cache=False
            kw["position_ids"], kw["use_cache"] = b.position_ids, False
        else:
            mask = document_attention_mask(b.doc_ids, bidirectional=how == "4d_bidirectional")
            kw["attention_mask"] = additive_mask(mask) if attn == "eager" else mask
        with torch.no_grad():
            return tiny_model(input_ids=x, **kw).logits[0]

    out, out2 = run(ids), run(other)
    keep = torch.tensor([i for i in range(15) if not 5 <= i <= 10])
    torch.testing.assert_close(out[keep], out2[keep], rtol=0, atol=1e-6)
    assert not torch.allclose(out[5:11], out2[5:11])  # B itself did change
    if how == "4d_bidirectional":  # within a document, an earlier position sees a later token
        later = ids.clone()
        later[0, 3] = 30
        assert not torch.allclose(run(later)[1], out[1])
    with torch.no_grad():  # control: without a document mask C does see B, and so it does when a cache is on
        plain = tiny_model(input_ids=ids).logits[0], tiny_model(input_ids=other).logits[0]
        cached = [tiny_model(input_ids=x, position_ids=b.position_ids, use_cache=True).logits[0] for x in (ids, other)]
    assert not torch.allclose(plain[0][11:], plain[1][11:])
    assert not torch.allclose(cached[0][11:], cached[1][11:])
    tiny_model.set_attn_implementation("sdpa")
