"""Chat fine-tuning (warmstart.chat): the template's loss mask, tokens, data, trainer roles and measures."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_LLAMA, byte_bpe, model_for
from warmstart.chat import data as cd
from warmstart.chat.measure import adherent, generate_ids, reply_text, turn_prompts
from warmstart.chat.template import (
    DEFAULT_TOKENS,
    ChatError,
    add_chat_tokens,
    chat_template,
    check_conversation,
    check_template,
    encode,
    fit_length,
)
from warmstart.data.packing import ROLE_IGNORE, ROLE_PROMPT, ROLE_RESPONSE, ROLE_TEXT, MappedDocuments, PackedStream
from warmstart.data.shards import TokenShards, fingerprint, write_role_shards
from warmstart.train.loop import train
from warmstart.train.objectives import role_weight_table, weighted_ce

TEXTS = [f"the cat sat on mat {i} and the dog ran far away" for i in range(40)]
TWO_TURNS = [
    {"role": "user", "content": "the cat"},
    {"role": "assistant", "content": "sat on"},
    {"role": "user", "content": "the dog"},
    {"role": "assistant", "content": "ran far"},
]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    """A tiny Llama and byte-level BPE with the chat tokens added (mean rows), saved as a HF dir."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("chat")
    tok = byte_bpe(TEXTS, 300)
    model = model_for(tok, **TINY_LLAMA)
    info = add_chat_tokens(model, tok, DEFAULT_TOKENS, "mean", pad_multiple=8)
    model.save_pretrained(root / "m")
    tok.save_pretrained(root / "m")
    return root / "m", info


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_loss_mask_equals_the_hand_computed_mask(chat_dir):
    path, _ = chat_dir
    tok = _tok(path)
    ids, roles, nbytes = encode(tok, TWO_TURNS)
    t = {r: tok.convert_tokens_to_ids(s) for r, s in DEFAULT_TOKENS.items()}
    piece = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    P, R = ROLE_PROMPT, ROLE_RESPONSE
    want_ids, want_roles = [], []
    for who, text in [("user", "the cat"), ("assistant", "sat on"), ("user", "the dog"), ("assistant", "ran far")]:
        body = piece(text)
        want_ids += [t[who], *body, t["end"]]
        # the assistant's start token is prompt; its content and its end token are the response
        want_roles += [P, *([R] * (len(body) + 1))] if who == "assistant" else [P] * (len(body) + 2)
    assert ids == want_ids and roles == want_roles
    assert nbytes == len("sat on") + len("ran far")
    kept = encode(tok, TWO_TURNS, keep_prompt=True)[1]
    assert kept == [ROLE_TEXT if r == P else r for r in want_roles]


def test_template_round_trip_in_a_fresh_process(chat_dir):
    path, info = chat_dir
    tok = _tok(path)
    want = tok.apply_chat_template(TWO_TURNS[:3], tokenize=True, add_generation_prompt=True, return_dict=True)
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(path)!r})
model = AutoModelForCausalLM.from_pretrained({str(path)!r})
enc = tok.apply_chat_template({TWO_TURNS[:3]!r}, tokenize=True, add_generation_prompt=True, return_dict=True)
mask = tok.apply_chat_template({TWO_TURNS!r}, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
ids = torch.tensor([enc["input_ids"]])
out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
print(json.dumps({{"ids": list(enc["input_ids"]), "mask": list(mask["assistant_masks"]),
                  "specials": tok.extra_special_tokens, "gen": out[0].tolist()}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["ids"] == list(want["input_ids"])
    assert got["specials"] == list(DEFAULT_TOKENS.values())
    assert [int(r == ROLE_RESPONSE) for r in encode(tok, TWO_TURNS)[1]] == got["mask"]
    from warmstart.model import load_model

    ids = torch.tensor([got["ids"]])
    here = load_model(path).generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert here[0].tolist() == got["gen"]


def test_new_rows_start_from_the_stated_rule():
    torch.manual_seed(0)
    tok = byte_bpe(TEXTS, 300)
    model = model_for(tok, **TINY_LLAMA)
    n = len(tok)
    inp, out = model.get_input_embeddings().weight.clone(), model.get_output_embeddings().weight.clone()
    info = add_chat_tokens(model, tok, DEFAULT_TOKENS, "related", pad_multiple=64)
    assert info["resized"] and model.config.vocab_size == 320 and len(tok) == n + 4
    e, o = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert e.shape[0] > len(tok) and not e[len(tok) :].any() and not o[len(tok) :].any()  # padding: zero rows
    for role, i in info["ids"].items():
        if role == "end":  # related: the end token starts as EOS, in and out
            assert torch.equal(e[i], inp[tok.eos_token_id]) and torch.equal(o[i], out[tok.eos_token_id])
        else:
            assert torch.allclose(e[i], inp[:n].mean(0)) and torch.allclose(o[i], out[:n].mean(0))


def test_adding_chat_tokens_is_reproducible_whatever_the_global_seed():
    mats = []
    for seed in (1, 2):
        torch.manual_seed(0)
        tok = byte_bpe(TEXTS, 300)
        model = model_for(tok, **TINY_LLAMA)
        torch.manual_seed(seed)  # the resize must not draw from the global generator
        add_chat_tokens(model, tok, DEFAULT_TOKENS, "mean", pad_multiple=64)
        mats.append([model.get_input_embeddings().weight.clone(), model.get_output_embeddings().weight.clone()])
    assert all(torch.equal(a, b) for a, b in zip(*mats))


def _role_shards(tok, root, n=30):
    items = []
    for k in range(n):
        msgs = [{"role": "user", "content": f"the cat {k}"}, {"role": "assistant", "content": "sat on the mat"}]
        items.append(encode(tok, msgs))
    write_role_shards(iter(items), root, tok, name="chat", batch_docs=7)
    return items


def test_role_shards_round_trip_and_pack_with_ignored_separators(chat_dir, tmp_path):
    path, _ = chat_dir
    tok = _tok(path)
    items = _role_shards(tok, tmp_path / "s")
    sh = TokenShards(tmp_path / "s", fingerprint(tok))
    assert sh.has_roles and len(sh) == len(items) and sh.manifest["shards"][0]["documents"] == len(items)
    for i, (ids, roles, nb) in enumerate(items):
        s, a, b = sh.span(i)
        assert sh.doc(i).tolist() == ids and sh.shard_roles(s)[a:b].tolist() == roles and sh.nbytes(i) == nb
    docs = MappedDocuments(sh, tok.eos_token_id, bos_id=tok.bos_token_id)
    stream = PackedStream(docs, 24, tok.eos_token_id, shuffle=False, with_roles=True)
    rows = [stream.next_row() for _ in range(6)]
    ids = np.concatenate([r[0] for r in rows]).tolist()
    roles = np.concatenate([r[4] for r in rows]).tolist()
    want_ids, want_roles = [], []
    for x, rr, _ in items:
        want_ids += [tok.bos_token_id, *x, tok.eos_token_id]
        want_roles += [ROLE_IGNORE, *rr, ROLE_IGNORE]
    assert ids == want_ids[: len(ids)] and roles == want_roles[: len(roles)]


def test_plain_shards_are_role_text_and_role_shards_need_role_weights(chat_dir, tmp_path):
    from warmstart.data.shards import tokenize_files
    from warmstart.data.stream import build_stream
    from warmstart.train.config import TrainConfig

    path, _ = chat_dir
    tok = _tok(path)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:5]))
    tokenize_files([str(tmp_path / "t.jsonl")], tmp_path / "plain", tok)
    docs = MappedDocuments(TokenShards(tmp_path / "plain"), tok.eos_token_id)
    row = PackedStream(docs, 16, tok.eos_token_id, shuffle=False, with_roles=True).next_row()
    assert set(row[4].tolist()) == {ROLE_TEXT}
    _role_shards(tok, tmp_path / "s")
    cfg = TrainConfig(
        model_path=str(path),
        train_files={"chat": [str(tmp_path / "s")]},
        seq_len=16,
        micro_batch=2,
        steps=1,
        out_dir=str(tmp_path / "o"),
    )
    with pytest.raises(ValueError, match="holds chat items with token roles; the run needs role_weights"):
        build_stream(cfg, tok)


def test_replay_shards_of_the_extended_tokenizer_are_read_as_they_are(chat_dir, tmp_path):
    from warmstart.data.shards import extends, tokenize_files
    from warmstart.data.stream import open_corpus

    path, _ = chat_dir
    chat_tok, base = _tok(path), byte_bpe(TEXTS, 300)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:5]))
    tokenize_files([str(tmp_path / "t.jsonl")], tmp_path / "sh", base)
    assert extends(chat_tok, tmp_path / "sh") and not extends(base, tmp_path / "sh")
    shards = open_corpus("replay", [str(tmp_path / "sh")], chat_tok, tmp_path / "cache")
    assert shards.doc(0).tolist() == chat_tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    other = byte_bpe(TEXTS, 300)
    other.add_tokens(["plainword"])  # an ordinary added token changes how text splits: not an extension
    assert not extends(other, tmp_path / "sh")


def test_weighted_ce_exact_on_a_tiny_batch():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 1] = math.log(3.0)  # p(1) = 3/6 at position 0
    labels = torch.tensor([[0, 1, 2]])
    table = role_weight_table({"prompt": 0.5})
    roles = torch.tensor([[ROLE_IGNORE, ROLE_PROMPT, ROLE_RESPONSE]])
    got = weighted_ce(logits, labels, table[roles])
    # position 0 predicts label 1 (prompt, weight 0.5, -log 1/2); position 1 predicts label 2 (weight 1, -log 1/4)
    want = (0.5 * math.log(2) + 1.0 * math.log(4)) / 1.5
    assert float(got) == pytest.approx(want, abs=1e-6)
    none = weighted_ce(logits, labels, torch.zeros(1, 3))
    assert float(none) == 0.0
    with pytest.raises(ValueError, match="unknown roles"):
        role_weight_table({"assistant": 1.0})


def _chat_cfg(path, shards, out, **kw):
    cfg = dict(
        model_path=str(path),
        train_files={"chat": [str(shards)]},
        seq_len=32,
        micro_batch=4,
        steps=6,
        lr=1e-2,
        warmup_steps=1,
        out_dir=str(out),
        log_every=1,
        progress=False,
        tensorboard=False,
        role_weights={"prompt": 0.0},
        doc_mask=True,
        seed=3,
    )
    return {**cfg, **kw}


def test_new_token_rows_receive_gradient_and_move(chat_dir, tmp_path):
    path, info = chat_dir
    _role_shards(_tok(path), tmp_path / "s")
    train(_chat_cfg(path, tmp_path / "s", tmp_path / "r"))
    before, after = load_file(path / "model.safetensors"), load_file(tmp_path / "r/final/model.safetensors")
    for role in ("user", "assistant", "end"):
        i = info["ids"][role]
        assert not torch.equal(before["model.embed_tokens.weight"][i], after["model.embed_tokens.weight"][i]), role
    # the end token is a response label: its output row is trained; the user token is never a weighted label
    end, user = info["ids"]["end"], info["ids"]["user"]
    assert not torch.equal(before["lm_head.weight"][end], after["lm_head.weight"][end])
    log = [json.loads(x) for x in (tmp_path / "r/log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log) and user != end


def test_chat_resume_is_bit_identical(chat_dir, tmp_path):
    path, _ = chat_dir
    _role_shards(_tok(path), tmp_path / "s")
    kw = dict(lr_schedule="constant", checkpoint_every=3)
    train(_chat_cfg(path, tmp_path / "s", tmp_path / "ref", **kw))
    train(_chat_cfg(path, tmp_path / "s", tmp_path / "res", **{**kw, "steps": 3}))
    train(_chat_cfg(path, tmp_path / "s", tmp_path / "res", **kw), resume=True)
    a, b = load_file(tmp_path / "ref/final/model.safetensors"), load_file(tmp_path / "res/final/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_generation_stops_at_end_message(chat_dir):
    from warmstart.model import load_model

    path, info = chat_dir
    tok, model = _tok(path), load_model(path)
    end = info["ids"]["end"]
    with torch.no_grad():  # after two tokens the end token wins: a bias the model cannot have learnt
        model.lm_head.weight[end] = 0
    prompts = turn_prompts(tok, [{"messages": TWO_TURNS[:2]}, {"messages": TWO_TURNS}])
    free = generate_ids(model, tok, prompts, 5, None)
    assert all(len(g) == 5 for g in free)
    with torch.no_grad():
        model.lm_head.weight[end] = 50 * model.model.embed_tokens.weight.mean(0).sign()
    gens = generate_ids(model, tok, prompts, 12, end)
    assert all(g[-1] == end and g.count(end) == 1 and len(g) <= 12 for g in gens)
    assert reply_text(tok, gens[0], end) == tok.decode(gens[0][:-1], skip_special_tokens=True).strip()


def test_adherence_needs_the_end_token_and_no_role_token():
    assert adherent([5, 6, 9], 9, [1, 2, 3])
    assert not adherent([5, 6, 7], 9, [1, 2, 3])  # never ended within the limit
    assert not adherent([5, 2, 9], 9, [1, 2, 3])  # a stray role token before the end
    assert adherent([9, 2], 9, [1, 2, 3])  # what follows the end token is not part of the turn


# ---------------------------------------------------------------- bad input


def test_bad_conversations_are_refused_by_name():
    with pytest.raises(ChatError, match="x.jsonl:3: message 0 has unknown role 'bot'"):
        check_conversation([{"role": "bot", "content": "hi"}], "x.jsonl:3")
    with pytest.raises(ChatError, match="has no assistant turn"):
        check_conversation([{"role": "user", "content": "hi"}], "item")
    with pytest.raises(ChatError, match="contains the chat token '<end_message>'"):
        check_conversation([{"role": "user", "content": "a<end_message>"}, {"role": "assistant", "content": "b"}], "i")
    with pytest.raises(ChatError, match="empty or non-string content"):
        check_conversation([{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}], "i")


def test_a_chat_token_with_another_meaning_is_refused():
    tok = byte_bpe(TEXTS, 300)
    model = model_for(tok, **TINY_LLAMA)
    with pytest.raises(ChatError, match=r"chat.tokens.end: '</s>' is already the tokenizer's eos_token"):
        add_chat_tokens(model, tok, {**DEFAULT_TOKENS, "end": "</s>"})
    word = next(t for t in tok.get_vocab() if t.isalpha() and len(t) > 2)
    with pytest.raises(ChatError, match=f"chat.tokens.user: '{word}' already exists in the vocabulary"):
        add_chat_tokens(model, tok, {**DEFAULT_TOKENS, "user": word})
    with pytest.raises(ChatError, match="every role needs its own token"):
        add_chat_tokens(model, tok, {**DEFAULT_TOKENS, "user": "<start_system>"})
    assert len(tok) == 300 and model.config.vocab_size == 300  # the refused calls added nothing


def test_a_template_without_generation_marks_is_refused_when_prompts_are_masked():
    plain = chat_template().replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(ChatError, match=r"no \{% generation %\} marks.*prompt_loss_weight is 0.1"):
        check_template(plain, 0.1)
    check_template(plain, 1.0)  # nothing is masked: the mask is not needed
    check_template(chat_template(), 0.0)


def test_long_items_are_refused_truncated_or_dropped():
    ids, roles = list(range(10)), [ROLE_PROMPT] * 6 + [ROLE_RESPONSE] * 4
    assert fit_length(ids, roles, 11, "error") == (ids, roles)  # 10 tokens + the separator fit 11
    with pytest.raises(ChatError, match="a chat item has 10 tokens, more than chat.seq_len 8 allows"):
        fit_length(ids, roles, 8, "error")
    assert fit_length(ids, roles, 8, "drop") is None
    assert fit_length(ids, roles, 8, "truncate") == (ids[3:], roles[3:])  # the prompt cut from the left
    assert fit_length(ids, roles, 4, "truncate") is None  # the response itself does not fit


# ---------------------------------------------------------------- data


def test_alignment_and_sentence_pairs_exact():
    a = ["x" * 100, "y" * 10, "z" * 50]
    b = ["X" * 95, "Z" * 55]
    assert cd.align(a, b) == [(0, 0), (2, 1)]
    assert cd.align(["a" * 10], ["b" * 40]) == []  # beyond the ratio: no pair
    assert cd.sentences("Det er en katt. Den sitter! Hvor? Her.") == ["Det er en katt.", "Den sitter!", "Hvor?", "Her."]
    assert cd.split_paragraph("One two. Three four. Five.") == ("One two.", "Three four. Five.")
    assert cd.split_paragraph("Only one sentence here.") is None
    pairs = cd.sentence_pairs("En katt. To hunder.", "One cat. Two dogs.", 1.6)
    assert pairs == [("En katt.", "One cat."), ("To hunder.", "Two dogs.")]
    assert cd.sentence_pairs("En katt. To.", "One cat.", 1.6) == [("En katt. To.", "One cat.")]


def test_corpus_items_and_user_items(tmp_path):
    rec = lambda page, text: json.dumps({"id": page, "doc": page, "page": page, "text": text}) + "\n"  # noqa: E731
    (tmp_path / "nb.jsonl").write_text(rec("p1", "En katt satt. Den sov godt.") + rec("p2", "Hunden løp langt bort."))
    (tmp_path / "en.jsonl").write_text(rec("p1", "A cat sat. It slept well.") + rec("p2", "The dog ran far away."))
    p = cd.phrases("nb-NO")
    items = list(cd.corpus_items(tmp_path / "nb.jsonl", tmp_path / "en.jsonl", "nb-NO", "en-US", p))
    kinds = [it["kind"] for it in items]
    assert kinds.count("translate") == 6 and kinds.count("continue") == 1  # 2 sentence pairs + 1 paragraph, x2
    first = items[0]
    assert first["messages"][0]["content"] == "Oversett til Engelsk:\n\nEn katt satt."
    assert first["messages"][1]["content"] == "A cat sat." and first["direction"] == "nb-NO>en-US"
    cont = next(it for it in items if it["kind"] == "continue")
    assert cont["messages"][1]["content"] == "Den sov godt."
    (tmp_path / "user.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "hei"}, {"role": "assistant", "content": "hallo"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "robot", "content": "x"}]})
        + "\n"
    )
    it = cd.user_items({"kind": "jsonl", "path": str(tmp_path / "user.jsonl")}, DEFAULT_TOKENS)
    assert next(it)["messages"][1]["content"] == "hallo"
    with pytest.raises(ChatError, match="user.jsonl:2: message 0 has unknown role 'robot'"):
        next(it)
    with pytest.raises(ChatError, match="no built-in instruction wording for 'fi-FI'"):
        cd.phrases("fi-FI")
    assert cd.split_of("a", 0.0) == "train" and {cd.split_of(str(k), 0.5) for k in range(50)} == {"train", "test"}


def test_reservoir_and_first_paragraphs_hold_only_what_they_return(tmp_path):
    items = [{"n": i} for i in range(1000)]
    a = cd.reservoir(iter(items), 10, "s")
    assert len(a) == 10 and a == cd.reservoir(iter(items), 10, "s") and a != cd.reservoir(iter(items), 10, "t")
    assert [x["n"] for x in a] == sorted(x["n"] for x in a)  # in stream order
    assert cd.reservoir(iter(items[:3]), 10, "s") == items[:3]
    rec = lambda i: json.dumps({"id": str(i), "page": f"p{i // 3}", "text": "x" * 100}) + "\n"  # noqa: E731
    (tmp_path / "c.jsonl").write_text("".join(rec(i) for i in range(20)))
    assert len(cd.first_paragraphs(tmp_path / "c.jsonl", 250)) == 3  # stops once 250 bytes are in
    assert [p for p, _ in cd.pages(tmp_path / "c.jsonl")] == [f"p{k}" for k in range(7)]


def test_chat_params_validate():
    from warmstart.config.downstream import Chat

    with pytest.raises(ValueError, match=r"long_len \(300\) must be <= seq_len \(256\)"):
        Chat(long_len=300)
    with pytest.raises(ValueError, match="not the chat run's prompt_loss_weight"):
        Chat(ablation=[0.0, 1.0])
    with pytest.raises(ValueError, match="a jsonl source gives path"):
        Chat(sources=[{"kind": "jsonl"}])
    assert Chat().mix == {"short": 0.5, "long": 0.45, "replay": 0.05}


def test_stage_module_declares_what_it_reads():
    from warmstart.stages import chat

    assert "chat" in chat.PARAMS and Path(chat.__file__).name == "chat.py"


def test_a_mix_part_without_items_is_refused_by_name(chat_dir, tmp_path):
    from types import SimpleNamespace

    from warmstart.chat.run import build_shards
    from warmstart.config.downstream import Chat

    path, _ = chat_dir
    msgs = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on"}]
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "t:1", "kind": "translate", "messages": msgs}) + "\n")
    params = SimpleNamespace(chat=Chat(seq_len=64, long_len=48))
    with pytest.raises(ChatError, match=r"chat.mix.long is 0.45 but no long training item fits .*chat.long_len 48"):
        build_shards(params, _tok(path), tmp_path / "train.jsonl", tmp_path / "shards")
    params = SimpleNamespace(chat=Chat(seq_len=64, long_len=48, mix={"short": 0.9, "replay": 0.1}))
    out = build_shards(params, _tok(path), tmp_path / "train.jsonl", tmp_path / "shards")
    assert list(out["parts"]) == ["short"] and out["stats"]["short"]["items"] == 1
