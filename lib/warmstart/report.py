"""The report stage: ``reports/report.pdf`` from the stage fragments, and a model card.

Toolchain: **Typst**, through the ``typst`` package on PyPI (one wheel, a
self-contained compiler with its fonts embedded: no TeX Live, no browser, no
root). The fragments and the provenance are written as ``data.json`` next to a
fixed template (:data:`TEMPLATE`) that reads them with Typst's ``json()``;
text therefore never passes through Typst markup and needs no escaping.
Figures are copied into the build directory, so the PDF does not depend on
where the project lives.

Sections, in order: title, provenance (git commit and dirty flag, package
versions, hardware, date, wall time of each stage), then every fragment
``reports/fragments/NN_<stage>.json`` in ``(order, stage)`` order: its title,
paragraphs, tables, figures and headline numbers. A stage's section exists
exactly when its fragment does.

The model card (``reports/model_card/README.md``) describes the run with the
lowest final target bits per byte (``reports/metrics/eval.json``), in the
style of the seeds' cards: metadata header, architecture, training details
and hyperparameters, tokenizer, evaluation, and a usage example that runs
against the saved model.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warmstart.io import write_text

PACKAGES = ("warmstart", "torch", "transformers", "tokenizers", "accelerate", "datasets", "lm_eval", "sacrebleu",
            "dvc", "papermill", "pandas", "seaborn", "matplotlib", "typst")  # fmt: skip


class ReportError(ValueError):
    """Bad input to the report (a malformed fragment, a missing figure, no evaluated run)."""


TEMPLATE = r"""
#let data = json("data.json")
#set document(title: data.title, author: data.author)
#set page(paper: "a4", margin: (x: 1.8cm, top: 2cm, bottom: 2cm), numbering: "1 / 1",
  header: context { if here().page() > 1 { align(right, text(8pt, fill: luma(90), data.title)) } })
#set text(size: 10pt)
#set par(justify: true)
#set heading(numbering: "1.")
#show heading.where(level: 1): it => { v(0.8em); it; v(0.4em) }
#show figure: set block(breakable: true)
#show figure.where(kind: table): set figure.caption(position: top)
#show figure.caption: set text(size: 9pt)

#let mktable(t) = figure(kind: table, caption: t.caption, text(size: 7.5pt, table(
  columns: t.columns.len(),
  align: (x, y) => if x == 0 { left } else { right },
  stroke: none,
  inset: (x: 4pt, y: 2.5pt),
  table.hline(),
  table.header(..t.columns.map(c => text(weight: "bold", c))),
  table.hline(stroke: 0.5pt),
  ..t.rows.flatten(),
  table.hline(),
)))

#align(center)[
  #text(18pt, weight: "bold", data.title)
  #v(0.2em)
  #text(11pt, data.author + " · " + data.date)
]
#v(1em)
#outline(depth: 1)

#for sec in data.sections {
  heading(level: 1, sec.title)
  for p in sec.paragraphs { par(p) }
  for t in sec.tables { mktable(t) }
  for f in sec.figures { figure(image(f.path, width: 100%), caption: f.caption) }
  if sec.numbers.len() > 0 {
    mktable((caption: "Headline numbers of this stage.", columns: ("key", "value"), rows: sec.numbers))
  }
  if sec.seconds != none { text(8pt, fill: luma(90), "Stage wall time: " + sec.seconds) }
}
"""


# ---------------------------------------------------------------- formatting


def fmt(v: Any) -> str:
    """A table cell as text: floats to 4 significant digits (scientific when large or tiny), None as '–'."""
    if hasattr(v, "item"):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "∞"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def _header(c: str) -> str:
    return str(c).replace("_", " ")


def _seconds(s: Any) -> str | None:
    if s is None:
        return None
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


# ---------------------------------------------------------------- provenance


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def provenance(root: str | Path = ".", fragments: Sequence[Mapping] = (), packages: Sequence[str] = PACKAGES) -> dict:
    """Git commit and dirty flag, package versions, hardware, date, and each stage's wall time."""
    import torch

    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    versions = {}
    for p in packages:
        try:
            versions[p] = md.version(p.replace("_", "-"))
        except md.PackageNotFoundError:
            versions[p] = "not installed"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "commit": commit or "unknown (not a git checkout)",
        "dirty": None if status is None else bool(status),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": None if mem is None else round(mem, 1),
        "gpu": gpu,
        "packages": versions,
        "stages": [{"stage": f["stage"], "seconds": f.get("seconds")} for f in fragments],
    }


def provenance_section(prov: Mapping) -> dict:
    """The provenance as a fragment-shaped section (order 0)."""
    dirty = {None: "unknown", True: "yes (uncommitted changes)", False: "no"}[prov.get("dirty")]
    env = [["git commit", prov["commit"]], ["working tree dirty", dirty], ["date", prov["date"]],
           ["python", prov["python"]], ["platform", prov["platform"]], ["CPU", f"{prov['cpu']} ({prov['cpu_count']} cores)"],
           ["memory", fmt(prov.get("memory_gib")) + " GiB"], ["GPU", prov["gpu"]]]  # fmt: skip
    pk = [[k, v] for k, v in prov["packages"].items()]
    st = [[s["stage"], _seconds(s["seconds"]) or "–"] for s in prov["stages"]]
    return {
        "stage": "provenance", "order": 0, "title": "Provenance",
        "paragraphs": ["Where, when and with what this report was built. Wall times are those each stage "
                       "recorded in its fragment."],
        "tables": [{"caption": "Environment.", "columns": ["item", "value"], "rows": env},
                   {"caption": "Package versions.", "columns": ["package", "version"], "rows": pk},
                   {"caption": "Wall time of each stage.", "columns": ["stage", "wall time"], "rows": st}],
        "figures": [], "numbers": {}, "seconds": None,
    }  # fmt: skip


# ---------------------------------------------------------------- the PDF


def _check_fragment(f: Mapping) -> None:
    for k in ("stage", "order", "title"):
        if k not in f:
            raise ReportError(f"fragment {f.get('stage', '?')!r} lacks {k!r}")
    for t in f.get("tables", []):
        if not {"caption", "columns", "rows"} <= set(t):
            raise ReportError(f"fragment {f['stage']!r}: a table needs caption, columns and rows")
        for r in t["rows"]:
            if len(r) != len(t["columns"]):
                raise ReportError(f"fragment {f['stage']!r}, table {t['caption']!r}: a row has {len(r)} cells, "
                                  f"expected {len(t['columns'])}")  # fmt: skip
    for fig in f.get("figures", []):
        if not Path(fig["path"]).is_file():
            raise ReportError(f"fragment {f['stage']!r}: figure {fig['path']} does not exist")


def document_data(fragments: Sequence[Mapping], title: str, author: str, prov: Mapping | None, build_dir: Path) -> dict:
    """The template's ``data.json``: every cell a string, every figure copied into ``build_dir``."""
    sections = [provenance_section(prov)] if prov else []
    sections += sorted(fragments, key=lambda f: (f["order"], f["stage"]))
    out, n_fig = [], 0
    for f in sections:
        _check_fragment(f)
        figs = []
        for fig in f.get("figures", []):
            dst = f"fig{n_fig:03d}{Path(fig['path']).suffix}"
            shutil.copyfile(fig["path"], build_dir / dst)
            figs.append({"path": dst, "caption": str(fig.get("caption", ""))})
            n_fig += 1
        out.append({
            "title": str(f["title"]),
            "paragraphs": [str(p) for p in f.get("paragraphs", [])],
            "tables": [{"caption": str(t["caption"]), "columns": [_header(c) for c in t["columns"]],
                        "rows": [[fmt(c) for c in r] for r in t["rows"]]} for t in f.get("tables", [])],
            "figures": figs,
            "numbers": [[str(k), fmt(v)] for k, v in (f.get("numbers") or {}).items()],
            "seconds": _seconds(f.get("seconds")),
        })  # fmt: skip
    date = (prov or {}).get("date") or dt.date.today().isoformat()
    return {"title": title, "author": author, "date": date, "sections": out}


def render_pdf(fragments: Sequence[Mapping], out_path: str | Path, title: str, author: str,
               prov: Mapping | None = None) -> Path:  # fmt: skip
    """Typeset the fragments (and the provenance) into ``out_path``; written atomically."""
    import typst

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        build = Path(tmp)
        data = document_data(fragments, title, author, prov, build)
        (build / "data.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        (build / "main.typ").write_text(TEMPLATE, encoding="utf-8")
        try:
            pdf = typst.compile(str(build / "main.typ"), root=str(build))
        except Exception as err:  # typst raises its own error types; keep the message
            raise ReportError(f"typst could not compile the report: {err}") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(f".{out_path.name}.tmp")
    tmp_out.write_bytes(pdf)
    os.replace(tmp_out, out_path)
    return out_path


# ---------------------------------------------------------------- model card


def _lang(code: str) -> str:
    return code.split("-")[0]


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def example_code(model_path: str, tokenizer_path: str, prompt: str, max_new_tokens: int = 32) -> str:
    """The card's usage example (runs from the project root against the saved model)."""
    return f'''import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({tokenizer_path!r})
model = AutoModelForCausalLM.from_pretrained({model_path!r}, use_safetensors=True).eval()

# NorMistral-style zero-shot translation prompt; documents start after an EOS token, as in training
prompt = {prompt!r}
ids = [tokenizer.eos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids
with torch.no_grad():
    out = model.generate(torch.tensor([ids]), max_new_tokens={max_new_tokens}, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
print(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).split("\\n")[0].strip())
'''


def model_card(params: Any, run: Mapping, eval_json: Mapping, fragments: Sequence[Mapping] = ()) -> str:
    """The README.md of the best run's final model."""
    from warmstart.evaluate import translation_prompt

    sh = params.shared
    final = run["final"]
    cfg_path = Path(final, "config.json")
    if not cfg_path.is_file():
        raise ReportError(f"the best run's final model {final} has no config.json")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    ev = eval_json["runs"][run["name"]]
    last = sorted(run["checkpoints"], key=lambda c: c["step"])[-1]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run["tokenizer"])
    base = params.base.model_id if params.base.source == "hf" else None
    method = run.get("method") or run["kind"]
    header = ["---", "license: apache-2.0", "language:", f"  - {_lang(sh.target_lang)}", f"  - {_lang(sh.source_lang)}"]
    if base:
        header += ["base_model:", f"  - {base}"]
    header += ["library_name: transformers", "pipeline_tag: text-generation", "tags:", "  - warmstart",
               f"  - {method}", "  - vocabulary-swap" if run["kind"] == "swap" else f"  - {run['kind']}", "---"]  # fmt: skip
    name = f"warmstart-{_lang(sh.target_lang)}-{run['name']}"
    arch = [["architecture", cfg.get("architectures", [cfg.get("model_type")])[0]],
            ["layers", cfg.get("num_hidden_layers")], ["hidden dimension", cfg.get("hidden_size")],
            ["intermediate dimension", cfg.get("intermediate_size")],
            ["query heads / key-value heads", f"{cfg.get('num_attention_heads')} / {cfg.get('num_key_value_heads')}"],
            ["vocabulary size", cfg.get("vocab_size")], ["max positions", cfg.get("max_position_embeddings")],
            ["RoPE theta", cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta")],
            ["tied embeddings", bool(cfg.get("tie_word_embeddings"))], ["parameters", run.get("params_count")]]  # fmt: skip
    pt = params.pretrain
    train = [["initialisation", f"{run['kind']}" + (f" ({run['method']})" if run.get("method") else "")],
             ["training tokens", last.get("tokens")], ["training text", f"{last['bytes'] / 1e6:.2f} MB (UTF-8)"],
             ["steps", last["step"]], ["sequence length", run.get("seq_len", pt.seq_len)],
             ["batch", f"{pt.micro_batch * pt.grad_accum} × {pt.seq_len} tokens (sequences × length)"],
             ["phase 1 (embeddings + head)", f"{pt.phase1.steps} steps, lr {pt.phase1.lr:g}, {pt.phase1.lr_schedule}"
              if run["kind"] != "scratch" else "skipped (scratch)"],
             ["phase 2 (full model)", f"{pt.phase2.steps} steps, lr {pt.phase2.lr:g}, {pt.phase2.lr_schedule}, "
              f"warm-up {pt.phase2.warmup_steps}, min lr ratio {pt.phase2.min_lr_ratio:g}"],
             ["optimizer", f"{pt.phase2.optimizer}, weight decay {pt.phase2.weight_decay:g}, clip {pt.phase2.max_grad_norm}"],
             ["masked share (hybrid objective)", run.get("masked_share", pt.masked_share)],
             ["theoretical compute", fmt(float(run["flops_per_token"]) * last["tokens"]) + " FLOP"
              if run.get("flops_per_token") and last.get("tokens") else "–"],
             ["wall time", _seconds(run.get("seconds")) or "–"], ["MFU", f"{100 * run['mean_mfu']:.2f}%"
              if run.get("mean_mfu") is not None else "–"]]  # fmt: skip
    toknums = next((f.get("numbers") or {} for f in fragments if f.get("stage") == "tokenizer"), {})
    tok_rows = [["kind", params.tokenizer.kind], ["vocabulary", len(tok)], ["path", run["tokenizer"]]]
    tok_rows += [[k, v] for k, v in toknums.items()]
    ev_rows = []
    for rn, d in eval_json["runs"].items():
        ev_rows.append([("**" + rn + "**") if rn == run["name"] else rn, d.get("bpb_target"), d.get("bpb_source"),
                        d.get("cloze_acc_target"), d.get("cloze_acc_norm_target"), d.get("chrf"), d.get("masked_acc")])  # fmt: skip
    prompt = translation_prompt("To install a package on Debian, use apt.", sh.source_lang, sh.target_lang)
    code = example_code(final, run["tokenizer"], prompt)
    tgt_name = _lang_name(sh.target_lang)
    parts = [
        "\n".join(header),
        f"# {name}",
        f"{name} is a tiny {cfg.get('model_type', 'causal')} language model adapted from {sh.source_lang} to "
        f"{sh.target_lang} ({tgt_name}) by the warmstart study: the source model's vocabulary was "
        + (f"swapped for a {sh.target_lang} tokenizer with the `{run['method']}` initialisation, then " if run["kind"] == "swap"
           else "kept, then " if run["kind"] == "original" else "not used (trained from scratch); ")
        + "it was trained on the Debian Administrator's Handbook. It is the study's best model by held-out "
        f"{sh.target_lang} bits per byte ({fmt(ev.get('bpb_target'))}).",
        "*Disclaimer*: a research artefact trained on a few megabytes of text; it is not a useful language model "
        "and not finetuned to follow instructions.",
        "## Model details\n\n" + _md_table(["", "value"], arch),
        "## Training details\n\n" + _md_table(["", "value"], train),
        "## Tokenizer\n\n" + _md_table(["", "value"], tok_rows),
        "## Evaluation\n\nHeld-out test chapters (never trained on, in any language). Bits per byte (lower is "
        "better) on target and source text; cloze: HellaSwag-style accuracy (chance 0.25); chrF of the zero-shot "
        "translation probe; masked-token accuracy for the hybrid objective.\n\n"
        + _md_table(["run", f"bpb {sh.target_lang}", f"bpb {sh.source_lang}", "cloze acc", "cloze acc_norm", "chrF",
                     "masked acc"], ev_rows),  # fmt: skip
        "## Example usage\n\nRun from the project root (the paths are the study's outputs):\n\n```python\n" + code + "```",
        "## License\n\nApache-2.0 for the weights; the training text (debian-handbook) is GPL-2+ or CC-BY-SA-3.0.",
    ]
    return "\n\n".join(parts) + "\n"


def _lang_name(code: str) -> str:
    from warmstart.evaluate import ENGLISH_NAMES

    return ENGLISH_NAMES.get(code, code)


def example_from_card(card: str) -> str:
    """The python block of a model card (for running the example)."""
    start = card.index("```python\n") + len("```python\n")
    return card[start : card.index("```", start)]


# ---------------------------------------------------------------- the stage


def run_stage(params: Any, root: str | Path = ".") -> dict:
    """Write ``reports/report.pdf`` and ``reports/model_card/README.md``; returns paths and the best run."""
    from warmstart.evaluate import best_run, load_run
    from warmstart.fragments import read_fragments

    t0 = time.perf_counter()
    frags = read_fragments(params.shared.reports_dir)
    if not frags:
        raise ReportError(f"no fragments under {params.report_path('fragments')} (run the earlier stages)")
    prov = provenance(root, frags)
    pdf = render_pdf(frags, params.report_path("report.pdf"), params.report.title, params.report.author, prov)
    out: dict[str, Any] = {"pdf": pdf, "fragments": [f["stage"] for f in frags], "provenance": prov}
    ev_path = params.report_path("metrics", "eval.json")
    if ev_path.is_file():
        ev = json.loads(ev_path.read_text(encoding="utf-8"))
        best = best_run(ev)
        run = load_run(params.path("runs", best))
        card = model_card(params, run, ev, frags)
        write_text(params.report_path("model_card", "README.md"), card)
        out.update(best=best, card=params.report_path("model_card", "README.md"))
    out["seconds"] = time.perf_counter() - t0
    return out
