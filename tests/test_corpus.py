"""Corpus stage units: extraction, filters, dedup, split, mixing, sources, bad input."""

import json

import pytest

from warmstart.config import deep_merge, validate
from warmstart.data import handbook
from warmstart.data.clean import Deduplicator, LanguageFilter, jaccard, langid_code
from warmstart.data.mixing import plan_mixture, take_bytes
from warmstart.data.sources import BadFileError, decode_file, expand_paths
from warmstart.data.split import assign_splits

PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>6.2. apt-get og apt</title>
<link rel="up" href="apt.html" title="Kapittel 6" /></head><body>
<div id="banner"><a href="x"><span class="text">Download the ebook</span></a></div>
<p id="title"><a class="left" href="http://www.debian.org">logo</a></p>
<ul class="docnav top"><li class="previous"><a href="apt.html"><strong>Forrige</strong></a></li></ul>
<div class="section"><div class="titlepage"><h2 class="title">6.2. <code>apt-get</code></h2></div>
<a id="id-1" class="indexterm"></a>
<div class="para">
   <acronym>APT</acronym> er et  stort prosjekt.
   <code class="command">apt</code>-kommandoer finnes.
</div>
<pre class="screen"><code>$ apt update
$ apt install foo   </code></pre>
<div class="para">Første del <pre class="programlisting">echo hei</pre> siste del.</div>
<div class="note"><div class="para">En merknad.</div></div>
</div>
<ul class="docnav"><li class="next"><a href="sect.apt-cache.html"><strong>Neste</strong>6.3</a></li></ul>
</body></html>"""


def test_parse_page_exact():
    page = handbook.parse_page("sect.apt-get", PAGE)
    assert page.chapter == "apt"
    assert page.title == "6.2. apt-get og apt"
    assert [(p.kind, p.text) for p in page.paragraphs] == [
        ("text", "APT er et stort prosjekt. apt-kommandoer finnes."),
        ("code", "$ apt update\n$ apt install foo"),
        ("text", "Første del siste del."),
        ("code", "echo hei"),
        ("text", "En merknad."),
    ]


def test_chapter_page_is_its_own_chapter():
    html = PAGE.replace('href="apt.html" title', 'href="index.html" title')
    assert handbook.parse_page("apt", html).chapter == "apt"


def test_langid_codes_and_filter():
    assert langid_code("nb-NO") == "no" and langid_code("cs-CZ") == "cs" and langid_code("zh-TW") == "zh"
    f = LanguageFilter(0.9, ["en-US", "nb-NO"])
    assert f.keep("Dette er en norsk setning om pakkehåndtering i Debian og programvare.", "nb-NO")
    assert not f.keep("Both tools are built on top of the same library and are very close.", "nb-NO")
    assert f.keep("Both tools are built on top of the same library and are very close.", "en-US")
    with pytest.raises(ValueError, match=r"no language-ID model for \['xx'\]"):
        LanguageFilter(0.9, ["en-US", "xx-XX"])


def test_dedup_keeps_first_copy_exact_and_near():
    d = Deduplicator(exact=True, near_threshold=0.8, num_perm=128, shingle_chars=5, seed=1)
    a = "The quick brown fox jumps over the lazy dog near the river bank today."
    near = a.replace("today", "today!")
    assert jaccard(a, near) > 0.9
    far = "Entirely different text about package management with apt and dpkg tools."
    assert d.check(a) is None
    assert d.check("  THE quick brown fox jumps over the lazy dog near the river bank TODAY. ") == "exact_dup"
    assert d.check(near) == "near_dup"
    assert d.check(far) is None
    only_exact = Deduplicator(exact=True, near_threshold=None)
    assert only_exact.check(a) is None and only_exact.check(near) is None and only_exact.check(a) == "exact_dup"


def test_split_invariants_and_same_docs_across_languages():
    sizes = {f"ch{i:02d}": 100 for i in range(20)}
    s1 = assign_splits(sizes, 0.1, 0.1, seed=7)
    assert sorted(s1) == sorted(sizes)  # every document in exactly one split
    assert sum(v == "test" for v in s1.values()) == 2 and sum(v == "val" for v in s1.values()) == 2
    # the assignment depends only on ids and seed: a second language with the same
    # chapters but different sizes gets the same held-out chapters at equal shares
    assert assign_splits(dict(reversed(list(sizes.items()))), 0.1, 0.1, seed=7) == s1
    assert assign_splits(sizes, 0.1, 0.1, seed=8) != s1
    explicit = assign_splits(sizes, 0.1, 0.1, seed=7, val_documents=["ch00"], test_documents=["ch01", "ch02"])
    assert [d for d, v in explicit.items() if v != "train"] == ["ch00", "ch01", "ch02"]
    with pytest.raises(ValueError, match=r"unknown documents \['nope'\]"):
        assign_splits(sizes, 0.1, 0.1, seed=7, test_documents=["nope"])
    with pytest.raises(ValueError, match="both val and test"):
        assign_splits(sizes, 0.1, 0.1, seed=7, val_documents=["ch00"], test_documents=["ch00"])


def test_split_skips_overshooting_documents():
    sizes = {"big": 900, "a": 50, "b": 50, "c": 50, "d": 50}
    s = assign_splits(sizes, 0.0, 0.1, seed=0)  # 10% of 1100 = 110: big never fits
    assert s["big"] == "train"
    assert sum(sizes[d] for d, v in s.items() if v == "test") in (100, 150)


def test_mixture_exact_proportions():
    plan = plan_mixture({"nb": 100, "en": 1000}, {"nb": 1.0, "en": 1.0}, max_repeats=16, total=1100)
    assert (plan["nb"].target, plan["en"].target) == (550, 550)
    assert plan["nb"].repeats == 5.5 and plan["en"].repeats == 0.55
    capped = plan_mixture({"nb": 100, "en": 1000}, {"nb": 3.0, "en": 1.0}, max_repeats=4, total=2000)
    # nb wants 1500 but the cap is 4 x 100: the rest goes to en
    assert (capped["nb"].target, capped["en"].target) == (400, 1600)
    assert capped["nb"].capped and not capped["en"].capped
    assert capped["nb"].share == 0.2
    allcap = plan_mixture({"a": 10, "b": 10}, {"a": 1, "b": 1}, max_repeats=2, total=1000)
    assert sum(p.target for p in allcap.values()) == 40
    default_total = plan_mixture({"a": 30, "b": 10}, {"a": 1.0, "b": 3.0})
    assert (default_total["a"].target, default_total["b"].target) == (10, 30)
    with pytest.raises(ValueError, match=r"no data: \['de'\]"):
        plan_mixture({"a": 1}, {"de": 1.0})
    with pytest.raises(ValueError, match="finite and > 0"):
        plan_mixture({"a": 1}, {"a": 0.0})


def test_take_bytes_whole_passes_then_partial():
    items = ["aa", "bb", "cc"]  # 6 bytes a pass
    got = take_bytes(items, 14, seed=3)
    assert sorted(got[:3]) == items and sorted(got[3:6]) == items  # two whole passes
    assert len(got) == 7 and sum(map(len, got)) == 14
    assert take_bytes(items, 14, seed=3) == got
    assert take_bytes(items, 0, seed=3) == []


def test_bad_files_are_named(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"abc\x00def")
    (tmp_path / "latin1.txt").write_bytes("blåbær".encode("latin-1"))
    with pytest.raises(BadFileError, match="empty.txt is empty"):
        decode_file(tmp_path / "empty.txt")
    with pytest.raises(BadFileError, match="bin.txt is binary"):
        decode_file(tmp_path / "bin.txt")
    with pytest.raises(BadFileError, match=r"latin1.txt is not UTF-8 text \(byte 0xe5 at offset 2\)"):
        decode_file(tmp_path / "latin1.txt")
    with pytest.raises(FileNotFoundError, match="matches no"):
        expand_paths([str(tmp_path / "*.jsonl")])


def _local_params(params_dict, tmp_path, sources, **corpus):
    over = {
        "shared": {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports")},
        "corpus": {
            "sources": sources,
            "min_chars": 10,
            "min_train_bytes": 0,
            "split": {"val_fraction": 0.2, "test_fraction": 0.2},
            **corpus,
        },
    }
    return validate(deep_merge(params_dict, over))


EN = [
    "The package manager keeps track of installed software on the system.",
    "Configuration files live in the etc directory and are edited by hand.",
    "Services are started by the init system when the machine boots up.",
    "Logs are written by the system journal and can be read with journalctl.",
    "Users and groups control who may read and write each file on disk.",
]
NB = [
    "Pakkehåndtereren holder styr på installert programvare på systemet.",
    "Konfigurasjonsfiler ligger i katalogen etc og redigeres for hånd.",
    "Tjenester startes av init-systemet når maskinen starter opp.",
    "Logger skrives av systemjournalen og kan leses med journalctl.",
    "Brukere og grupper styrer hvem som kan lese og skrive hver fil på disken.",
]


def _write_parallel(tmp_path):
    for lang, texts in (("en", EN), ("nb", NB)):
        d = tmp_path / lang
        d.mkdir()
        for i, t in enumerate(texts):
            (d / f"doc{i}.txt").write_text(t + "\n\n" + t.replace(".", " again.") + "\n")
    return tmp_path


def _parallel_params(params_dict, tmp_path):
    """:func:`_write_parallel`'s documents as local en-US and nb-NO sources, near-duplicate removal off."""
    _write_parallel(tmp_path)
    return _local_params(
        params_dict,
        tmp_path,
        [
            {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en")]},
            {"kind": "local", "lang": "nb-NO", "paths": [str(tmp_path / "nb")]},
        ],
        dedup={"near_threshold": None},
    )


def test_local_sources_build_a_parallel_split(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus, load_split

    _write_parallel(tmp_path)
    p = _local_params(
        params_dict,
        tmp_path,
        [
            {"kind": "local", "lang": "source", "paths": [str(tmp_path / "en")]},
            {"kind": "local", "lang": "target", "paths": [str(tmp_path / "nb" / "*.txt")]},
        ],
        dedup={"near_threshold": None},
    )
    m = build_corpus(p)
    docs = {
        lang: {s: {r["doc"] for r in load_split(p, lang, s)} for s in ("train", "val", "test")} for lang in p.languages
    }
    assert docs["en-US"] == docs["nb-NO"]  # same held-out documents in both languages
    assert set().union(*docs["en-US"].values()) == {f"doc{i}" for i in range(5)}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not docs["en-US"][a] & docs["en-US"][b]
    assert m["languages"]["nb-NO"]["splits"]["test"]["paragraphs"] == 2 * len(docs["nb-NO"]["test"])
    total_words = sum(s["words"] for s in m["languages"]["en-US"]["splits"].values())
    assert total_words == sum(len(t.split()) + len(t.replace(".", " again.").split()) for t in EN)


def test_english_in_target_is_filtered_and_counted(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus, load_texts

    p = _parallel_params(params_dict, tmp_path)
    (tmp_path / "nb" / "doc0.txt").write_text(NB[0] + "\n\n" + EN[1] + "\n")
    m = build_corpus(p)
    assert m["languages"]["nb-NO"]["removed"]["langid"] == 1
    nb_text = sum((load_texts(p, "nb-NO", s) for s in ("train", "val", "test")), [])
    assert EN[1] not in nb_text and NB[0] in nb_text


def test_dedup_prefers_held_out_copy(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus, load_split

    p = _parallel_params(params_dict, tmp_path)
    test_doc = next(
        r["doc"] for r in (build_corpus(p, tmp_path / "probe"), load_split(tmp_path / "probe", "en-US", "test"))[1]
    )
    shared_para = EN[int(test_doc[-1])]
    # put the held-out paragraph into every training document too
    for i in range(5):
        f = tmp_path / "en" / f"doc{i}.txt"
        if f"doc{i}" != test_doc:
            f.write_text(f.read_text() + "\n" + shared_para + "\n")
    m = build_corpus(p)
    assert m["languages"]["en-US"]["removed"]["exact_dup"] == 4
    assert shared_para in [r["text"] for r in load_split(p, "en-US", "test")]
    assert shared_para not in [r["text"] for r in load_split(p, "en-US", "train")]


def test_bad_file_error_or_counted_skip(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus

    _write_parallel(tmp_path)
    (tmp_path / "nb" / "broken.txt").write_bytes(b"\xff\xfe\x00garbage")
    srcs = [
        {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en")]},
        {"kind": "local", "lang": "nb-NO", "paths": [str(tmp_path / "nb")]},
    ]
    p = _local_params(params_dict, tmp_path, srcs)
    with pytest.raises(BadFileError, match="broken.txt is binary.*on_bad_file: skip"):
        build_corpus(p)
    assert not (tmp_path / "data" / "corpus").exists()  # nothing half-written
    m = build_corpus(_local_params(params_dict, tmp_path, srcs, on_bad_file="skip"))
    assert [s["path"].endswith("broken.txt") for s in m["sources"]["skipped_files"]] == [True]


def test_source_language_must_be_a_corpus_language(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus

    _write_parallel(tmp_path)
    p = _local_params(params_dict, tmp_path, [{"kind": "local", "lang": "de-DE", "paths": [str(tmp_path / "en")]}])
    with pytest.raises(ValueError, match=r"'de-DE', not a corpus language.*\['en-US', 'nb-NO'\]"):
        build_corpus(p)


def test_hf_dataset_source_on_local_data(params_dict, tmp_path):
    import datasets

    from warmstart.data.corpus import build_corpus, load_split

    for lang, texts in (("en", EN), ("nb", NB)):
        ds = datasets.Dataset.from_dict({"id": [f"d{i}" for i in range(5)], "text": texts})
        ds.to_json(str(tmp_path / f"{lang}.jsonl"))
        (tmp_path / lang).mkdir()
        (tmp_path / f"{lang}.jsonl").rename(tmp_path / lang / "train.jsonl")
    p = _local_params(
        params_dict,
        tmp_path,
        [
            {"kind": "hf", "lang": "source", "dataset": str(tmp_path / "en"), "id_field": "id"},
            {"kind": "hf", "lang": "target", "dataset": "json", "name": None, "split": "train", "id_field": "id"}
            | {"dataset": str(tmp_path / "nb")},
        ],
        dedup={"near_threshold": None},
    )
    build_corpus(p)
    recs = load_split(p, "nb-NO", "train")
    assert {r["text"] for r in recs} <= set(NB) and all(r["doc"].startswith("d") for r in recs)
    en = {r["doc"] for s in ("train", "val", "test") for r in load_split(p, "en-US", s)}
    assert en == {f"d{i}" for i in range(5)}


def test_jsonl_records_need_text_field(params_dict, tmp_path):
    from warmstart.data.corpus import build_corpus

    _write_parallel(tmp_path)
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "hei"}) + "\n")
    p = _local_params(
        params_dict,
        tmp_path,
        [
            {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en")]},
            {"kind": "local", "lang": "nb-NO", "paths": [str(tmp_path / "x.jsonl")]},
        ],
    )
    with pytest.raises(BadFileError, match=r"x.jsonl:1: record has no 'text' field"):
        build_corpus(p)


def test_malformed_jsonl_line_error_or_counted_skip(params_dict, tmp_path):
    """A broken line stops the stage (naming file and line), or with on_bad_file: skip is skipped and counted."""
    from warmstart.data.corpus import build_corpus, load_split

    _write_parallel(tmp_path)
    lines = [json.dumps({"id": f"doc{i}", "text": t}) for i, t in enumerate(NB)]  # parallel to en/doc{i}.txt
    lines.insert(2, '{"id": "d9", "text": "unterminated')  # line 3
    lines.insert(4, json.dumps(["not", "an", "object"]))  # line 5
    (tmp_path / "nb.jsonl").write_text("\n".join(lines) + "\n")
    srcs = [
        {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en")]},
        {"kind": "local", "lang": "nb-NO", "paths": [str(tmp_path / "nb.jsonl")], "id_field": "id"},
    ]
    with pytest.raises(BadFileError, match=r"nb.jsonl:3: not valid JSON .*on_bad_file: skip"):
        build_corpus(_local_params(params_dict, tmp_path, srcs))
    assert not (tmp_path / "data" / "corpus").exists()  # nothing half-written
    p = _local_params(params_dict, tmp_path, srcs, on_bad_file="skip", dedup={"near_threshold": None})
    m = build_corpus(p)
    src = m["sources"]
    assert src["skipped_line_count"] == 2 and src["skipped_files"] == []
    assert [(x["path"].endswith("nb.jsonl"), x["line"]) for x in src["skipped_lines"]] == [(True, 3), (True, 5)]
    assert "not valid JSON" in src["skipped_lines"][0]["reason"] and "'text' field" in src["skipped_lines"][1]["reason"]
    docs = {r["doc"] for s in ("train", "val", "test") for r in load_split(p, "nb-NO", s)}
    assert docs == {f"doc{i}" for i in range(len(NB))}  # every good record kept, nothing from the bad lines
    assert json.loads(json.dumps(m)) == m  # what run_stage writes to reports/metrics/corpus.json


def test_too_little_target_text_fails_before_writing(params_dict, tmp_path):
    """An untranslated source (all English in the target's folder) must stop the stage, not train on nothing."""
    from warmstart.data.corpus import build_corpus

    for lang, texts in (("en", EN), ("nb", EN)):  # the "Norwegian" files hold English text
        d = tmp_path / lang
        d.mkdir()
        for i, t in enumerate(texts):
            (d / f"doc{i}.txt").write_text(t + "\n\n" + t.replace(".", " again.") + "\n")
    sources = [
        {"kind": "local", "lang": "en-US", "paths": [str(tmp_path / "en")]},
        {"kind": "local", "lang": "nb-NO", "paths": [str(tmp_path / "nb")]},
    ]
    params = _local_params(params_dict, tmp_path, sources, min_train_bytes=100)
    with pytest.raises(
        ValueError, match=r"nb-NO keeps only 0 bytes of training text .* language ID removed 10 of its 10 paragraphs"
    ):
        build_corpus(params)
    assert not (tmp_path / "data" / "corpus").exists()


def test_held_out_readers_stream_the_split_and_hold_only_their_budget(tmp_path):
    """A 20 MB split is read only as far as each reader's byte budget: the texts, the probes' records and a
    jsonl rewrite hold one budget (or one record) in memory, never the split."""
    import itertools
    import tracemalloc

    from warmstart.data.corpus import head_records, held_out_texts, iter_split
    from warmstart.io import iter_jsonl, write_jsonl

    root = tmp_path / "corpus"
    (root / "xx").mkdir(parents=True)
    para = "ord " * 250  # 1,000 bytes
    with open(root / "xx" / "test.jsonl", "w", encoding="utf-8") as f:
        for i in range(20_000):
            f.write(json.dumps({"id": str(i), "doc": f"d{i // 10}", "text": para}) + "\n")
    tracemalloc.start()
    texts = held_out_texts(root, "xx", "test", 32_000)
    recs = head_records(root, "xx", ["test", "val"], 50_000)  # no val split: test alone
    n = write_jsonl(tmp_path / "copy.jsonl", ({"text": r["text"]} for r in iter_split(root, "xx", "test")))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(texts) == 32 and [r["id"] for r in recs] == [str(i) for i in range(50)] and n == 20_000
    assert peak < 2_000_000, peak  # the split is 20 MB
    assert [r["text"] for r in itertools.islice(iter_jsonl(tmp_path / "copy.jsonl"), 2)] == [para, para]
    with pytest.raises(FileNotFoundError, match=r"no corpus split .*xx/val.jsonl"):
        head_records(root, "xx", ["val", "test"], 1000)  # the first split is required


def test_write_jsonl_leaves_the_old_file_when_the_records_fail(tmp_path):
    from warmstart.io import read_jsonl, write_jsonl

    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])

    def records():
        yield {"a": 2}
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        write_jsonl(path, records())
    assert read_jsonl(path) == [{"a": 1}] and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
