"""Model surgery: the swap on tensors, on a model in memory and on a model directory.

:func:`swap_embeddings` works on plain tensors and tokenizers, so a
131072 x 5120 matrix is swapped without building a model
(``python -m warmstart.vocab_swap.bench``). :func:`swap_model` applies it to a
model in memory (embeddings, head and its bias, tied weights, config and
generation config), :func:`swap_model_dir` to a model directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from warmstart.io import atomic_dir
from warmstart.vocab_swap.apply import apply_plan
from warmstart.vocab_swap.hf_default import COVARIANCE_SCALE, resize_rows
from warmstart.vocab_swap.methods import _check_method, build_plan
from warmstart.vocab_swap.plan import PAD_MULTIPLE, REPORT_NAME, InitPlan, SwapReport, _map_specials, padded_size
from warmstart.vocab_swap.sampling import COV_ROWS
from warmstart.vocab_swap.tokdistil import TokDistilOptions, check_layers, distil, num_layers
from warmstart.vocab_swap.tokens import VocabSwapError, _view

log = logging.getLogger("warmstart.vocab_swap")  # the package's logger, as before the split into modules


@dataclass
class SwapResult:
    embed: torch.Tensor
    head: torch.Tensor | None  # None: tied to ``embed``
    report: SwapReport
    plan: InitPlan
    head_plan: InitPlan
    bias: torch.Tensor | None = None  # the head's new bias, when ``old_bias`` was given


def swap_embeddings(
    old_embed: torch.Tensor,
    old_head: torch.Tensor | None,
    old_tok: Any,
    new_tok: Any,
    method: str,
    *,
    seed: int = 0,
    cov_rows: int | None = COV_ROWS,
    old_bias: torch.Tensor | None = None,
    hf_mean_resizing: bool = True,
    hf_initializer_range: float = 0.02,
    **plan_options: Any,
) -> SwapResult:
    """New embedding (and head) matrices for ``new_tok`` made from the old ones.

    ``old_head=None`` means tied: only the embedding is computed and the
    result's ``head`` is None. Rows keep the old dtype; copied rows are bit
    equal to their source. ``cov_rows`` caps the rows the covariance of
    random rows is estimated from (None: all). The head gets the same plan applied to the head
    rows (its own mean/covariance; for ``omp`` its own donor coefficients when
    ``donor_head`` is given).

    ``plan_options`` are :func:`~warmstart.vocab_swap.methods.build_plan`'s:
    ``pad_multiple`` (64), ``texts``, ``fasttext``, ``fasttext_vectors``
    (focus), ``donor_embed``, ``donor_head``, ``omp_k`` (omp).

    ``old_bias``: the head's bias; the result's ``bias`` gets the head plan (one column). ``hf-default``: the
    rest is made by transformers' ``resize_token_embeddings`` (:mod:`~warmstart.vocab_swap.hf_default`) with
    ``hf_mean_resizing`` and, without it, ``hf_initializer_range``. ``tokdistil`` needs the model
    (:func:`swap_model`).
    """
    t0 = time.perf_counter()
    _check_method(method)
    if method == "tokdistil":
        raise VocabSwapError("method 'tokdistil' runs the model: use swap_model or swap_model_dir, not swap_embeddings")
    if old_head is not None and old_head.shape != old_embed.shape:
        raise VocabSwapError(f"embedding {tuple(old_embed.shape)} and head {tuple(old_head.shape)} shapes differ")
    old, new = _view(old_tok), _view(new_tok)
    if old_head is None:  # tied: no head rows, so no donor head coefficients either
        plan_options["donor_head"] = None
    if old_bias is not None and old_head is None:
        raise VocabSwapError("a head bias needs an untied head (old_head)")
    plan, head_plan, extra = build_plan(old, new, method, old_rows=old_embed.shape[0], seed=seed, **plan_options)
    given: tuple[Any, Any, Any] = (None, None, None)
    if plan.sampler == "hf":  # one call: transformers draws the head's rows after the embedding's
        given = resize_rows(
            old_embed,
            old_head,
            old_bias,
            int(plan.random_rows.numel()),
            seed,
            mean_resizing=hf_mean_resizing,
            initializer_range=hf_initializer_range,
        )
        import transformers

        extra["hf"] = {
            "transformers": transformers.__version__,
            "mean_resizing": bool(hf_mean_resizing),
            "covariance_scale": COVARIANCE_SCALE if hf_mean_resizing else None,
            "initializer_range": None if hf_mean_resizing else float(hf_initializer_range),
            "rows": int(plan.random_rows.numel()),
        }
    embed = apply_plan(old_embed, plan, seed, cov_rows, given[0])
    head = apply_plan(old_head, head_plan, seed + 1, cov_rows, given[1]) if old_head is not None else None
    bias = None
    if old_bias is not None:  # same rows as the head (the bias as a 1-column matrix); padding 0
        values = None if given[2] is None else given[2][:, None]
        bias = apply_plan(old_bias.detach()[:, None], head_plan, seed + 2, cov_rows, values)[:, 0]
    specials = {}
    n_mapped = 0
    for nid, (oid, label) in sorted(_map_specials(old, new, old_embed.shape[0]).items()):
        n_mapped += oid is not None
        specials[label] = {
            "new_id": nid,
            "new_token": new.tokens[nid],
            "old_id": oid,
            "old_token": old.tokens[oid] if oid is not None else None,
            "init": "copy" if oid is not None else "mean",
        }
    report = SwapReport(
        method=method,
        old_vocab=len(old.tokenizer),
        old_rows=int(old_embed.shape[0]),
        new_vocab=len(new.tokenizer),
        padded_vocab=plan.n_rows,
        aligned=int(plan.copy_new.numel()) - n_mapped,
        decomposed=len(plan.combo),
        fallback_random=int(plan.random_rows.numel()),
        mean_init=int(plan.mean_rows.numel()),
        specials_mapped=n_mapped,
        padded_rows=int(plan.zero_rows.numel()),
        tied=old_head is None,
        hidden=int(old_embed.shape[1]),
        seed=int(seed),
        specials=specials,
        suppressed_ids=plan.zero_rows.tolist(),
        extra=extra,
    )
    report.seconds = round(time.perf_counter() - t0, 3)
    log.info(
        "vocab swap %s: %d aligned, %d decomposed, %d random, %d mean, %d specials, %d padded (%.1fs)",
        method,
        report.aligned,
        report.decomposed,
        report.fallback_random,
        report.mean_init,
        report.specials_mapped,
        report.padded_rows,
        report.seconds,
    )
    return SwapResult(embed, head, report, plan, head_plan, bias)


# ---------------------------------------------------------------- models


def _is_tied(model: Any) -> bool:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    tied_cfg = bool(getattr(cfg, "tie_word_embeddings", False))
    out = model.get_output_embeddings()
    same = out is not None and out.weight is model.get_input_embeddings().weight
    if tied_cfg != same:
        log.warning(
            "config.tie_word_embeddings=%s but the weights are %s; following the config",
            tied_cfg,
            "shared" if same else "separate",
        )
    return tied_cfg and out is not None


def _set_ids(obj: Any, ids: Mapping[str, int | None]) -> None:
    for role, i in ids.items():
        setattr(obj, f"{role}_token_id", i)


def swap_model(
    model: Any,
    old_tok: Any,
    new_tok: Any,
    method: str,
    *,
    donor: Any = None,
    seed: int = 0,
    cov_rows: int | None = COV_ROWS,
    **plan_options: Any,
) -> SwapReport:
    """Swap ``model``'s vocabulary in place (embeddings, head, config, generation config).

    ``donor`` (for ``omp``) is a model that uses ``new_tok``: its input
    embeddings give the coefficients, and its head too when both it and
    ``model`` are untied. ``seed``, ``cov_rows`` and ``plan_options`` as
    for :func:`swap_embeddings` (``donor_embed`` and ``donor_head`` come
    from ``donor``; ``hf_initializer_range`` from the model's config).

    ``tokdistil`` (options: ``tokdistil=``:class:`~warmstart.vocab_swap.tokdistil.TokDistilOptions`, target
    ``texts``): the start method's swap, then the model (still the old one) distils the new rows
    (:func:`~warmstart.vocab_swap.tokdistil.distil`); its record is ``report.extra["tokdistil"]``.
    """
    t0 = time.perf_counter()
    _check_method(method)
    opts = _tokdistil_options(plan_options.pop("tokdistil", None))
    if method == "tokdistil":  # every check before any work
        check_layers(opts.layers, num_layers(model.config))
        if plan_options.get("texts") is None:
            raise VocabSwapError("method 'tokdistil' needs target texts to take snippets from (texts=..., --texts)")
        if opts.start == "focus" and iter(plan_options["texts"]) is plan_options["texts"]:
            plan_options["texts"] = list(plan_options["texts"])  # read twice: fastText, then the snippets
    emb_mod = model.get_input_embeddings()
    out_mod = model.get_output_embeddings()
    tied = _is_tied(model)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    plan_options.setdefault("hf_initializer_range", getattr(cfg, "initializer_range", None) or 0.02)
    donor_embed = donor_head = None
    if donor is not None:
        donor_embed = donor.get_input_embeddings().weight
        if not _is_tied(donor) and donor.get_output_embeddings() is not None:
            donor_head = donor.get_output_embeddings().weight
    elif method == "omp":
        raise VocabSwapError("method 'omp' needs a donor model that uses the new tokenizer (--donor DIR)")
    old_head = None if tied or out_mod is None else out_mod.weight
    old_bias = getattr(out_mod, "bias", None) if out_mod is not None else None
    texts = plan_options.get("texts")
    if method == "tokdistil" and opts.start != "focus":
        plan_options["texts"] = None  # the start does not read them
    res = swap_embeddings(
        emb_mod.weight,
        old_head,
        old_tok,
        new_tok,
        opts.start if method == "tokdistil" else method,
        seed=seed,
        cov_rows=cov_rows,
        donor_embed=donor_embed,
        donor_head=donor_head,
        old_bias=None if tied else old_bias,
        **plan_options,
    )
    n_rows = res.embed.shape[0]
    new = _view(new_tok)
    if method == "tokdistil":
        rows = sorted(set(res.plan.combo.rows.tolist()) | set(res.plan.random_rows.tolist()))
        res.report.method = "tokdistil"
        res.report.extra["start"] = opts.start
        res.report.extra["tokdistil"] = _distil(
            model, old_tok, new_tok, rows, res, emb_mod.weight, old_head, old_bias, texts, opts, seed
        )
    grad = emb_mod.weight.requires_grad
    emb_mod.weight = torch.nn.Parameter(res.embed, requires_grad=grad)
    if hasattr(emb_mod, "num_embeddings"):
        emb_mod.num_embeddings = n_rows
    if getattr(emb_mod, "padding_idx", None) is not None:
        pad = new.roles.get("pad")
        emb_mod.padding_idx = pad if pad is not None and pad < n_rows else None
    if out_mod is not None:
        if tied:
            out_mod.weight = emb_mod.weight
        else:
            assert res.head is not None
            out_mod.weight = torch.nn.Parameter(res.head, requires_grad=out_mod.weight.requires_grad)
        if hasattr(out_mod, "out_features"):
            out_mod.out_features = n_rows
        bias = getattr(out_mod, "bias", None)
        if bias is not None:  # same rows as the head (bias as a 1-column matrix); padding 0
            nb = res.bias
            if nb is None:  # tied head with a bias of its own
                nb = apply_plan(bias.detach()[:, None], res.head_plan, seed + 2, cov_rows)[:, 0]
            out_mod.bias = torch.nn.Parameter(nb, requires_grad=bias.requires_grad)
    ids = {r: new.roles.get(r) for r in ("bos", "eos", "pad")}
    for c in {id(cfg): cfg, id(model.config): model.config}.values():
        c.vocab_size = n_rows
        _set_ids(c, ids)
    if hasattr(model, "vocab_size"):
        model.vocab_size = n_rows
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        _set_ids(gc, ids)
        # ids of the old vocabulary mean nothing now
        for name in (
            "bad_words_ids",
            "begin_suppress_tokens",
            "forced_bos_token_id",
            "forced_eos_token_id",
            "sequence_bias",
        ):
            if getattr(gc, name, None) is not None:
                log.info("generation_config.%s referred to the old vocabulary: cleared", name)
                setattr(gc, name, None)
        gc.suppress_tokens = res.report.suppressed_ids or None
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    res.report.seconds = round(time.perf_counter() - t0, 3)
    return res.report


def _tokdistil_options(opts: Any) -> TokDistilOptions:
    if opts is None:
        return TokDistilOptions()
    if isinstance(opts, TokDistilOptions):
        return opts
    if isinstance(opts, Mapping):
        return TokDistilOptions(**opts)
    raise VocabSwapError(f"tokdistil options must be TokDistilOptions or a mapping, not {type(opts).__name__}")


def _distil(
    model: Any,
    old_tok: Any,
    new_tok: Any,
    rows: list[int],
    res: SwapResult,
    old_embed: torch.Tensor,
    old_head: torch.Tensor | None,
    old_bias: torch.Tensor | None,
    texts: Any,
    opts: TokDistilOptions,
    seed: int,
) -> dict[str, Any]:
    """:func:`~warmstart.vocab_swap.tokdistil.distil` on the old ``model``, frozen and in eval mode meanwhile."""
    training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        return distil(
            model,
            _view(old_tok),
            _view(new_tok),
            rows,
            res.embed,
            res.head,
            old_embed,
            old_head,
            None if old_head is None else old_bias,
            res.bias,
            texts,
            opts,
            seed,
        )
    finally:
        for p, g in grads:
            p.requires_grad_(g)
        model.train(training)


def _load_model_dir_check(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} directory {str(path)!r} does not exist")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} directory {str(path)!r} has no config.json (not a Hugging Face model directory)"
        )
    return p


def _load_model(path: str | Path, what: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    p = _load_model_dir_check(path, what)
    return AutoModelForCausalLM.from_pretrained(
        str(p), use_safetensors=True, trust_remote_code=trust_remote_code, dtype="auto"
    )


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_tokenizer(path: str | Path, what: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} directory {str(path)!r} does not exist")
    # transformers 5 builds an empty tokenizer for a directory without one: check first
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer in {what} directory {str(path)!r}: none of {', '.join(_TOKENIZER_FILES)}"
        )
    try:
        return AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"no tokenizer could be loaded from {what} directory {str(path)!r}: {e}") from e


def swap_model_dir(
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    method: str,
    *,
    old_tokenizer_dir: str | Path | None = None,
    donor_dir: str | Path | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> SwapReport:
    """Load a model dir and a tokenizer dir, swap, and write ``out_dir``:
    the model (safetensors), the new tokenizer and ``swap_report.json``.
    The old tokenizer is read from ``model_dir`` unless ``old_tokenizer_dir`` is given.
    ``options`` are :func:`swap_model`'s (``seed``, ``cov_rows``, ``pad_multiple``,
    ``texts``, ``fasttext``, ``omp_k``, ...); the donor model comes from ``donor_dir``."""
    t0 = time.perf_counter()
    _check_method(method)
    if method == "omp" and donor_dir is None:
        raise VocabSwapError("method 'omp' needs a donor model that uses the new tokenizer (--donor DIR)")
    if method == "focus" and options.get("texts") is None:
        raise VocabSwapError("method 'focus' needs target texts to train fastText on (--fasttext-texts PATH)")
    padded_size(1, options.get("pad_multiple", PAD_MULTIPLE))
    if method == "tokdistil":  # every check before loading anything big
        if options.get("texts") is None:
            raise VocabSwapError("method 'tokdistil' needs target texts to take snippets from (texts=..., --texts)")
        opts = _tokdistil_options(options.get("tokdistil"))
        from transformers import AutoConfig

        _load_model_dir_check(model_dir, "model")
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
        check_layers(opts.layers, num_layers(config))
    model = _load_model(model_dir, "model", trust_remote_code)
    old_tok = _load_tokenizer(old_tokenizer_dir or model_dir, "old tokenizer (model)", trust_remote_code)
    new_tok = _load_tokenizer(tokenizer_dir, "tokenizer", trust_remote_code)
    donor = None
    if donor_dir is not None:
        donor = _load_model(donor_dir, "donor", trust_remote_code)
        dtok_dir = Path(donor_dir)
        if (dtok_dir / "tokenizer.json").is_file() or (dtok_dir / "tokenizer_config.json").is_file():
            dtok = _load_tokenizer(dtok_dir, "donor", trust_remote_code)
            if dtok.get_vocab() != new_tok.get_vocab():
                raise VocabSwapError(f"the donor's tokenizer in {str(donor_dir)!r} differs from the new tokenizer")
    report = swap_model(model, old_tok, new_tok, method, donor=donor, **options)
    report.seconds = round(time.perf_counter() - t0, 3)
    report.extra.update({"model": str(model_dir), "tokenizer": str(tokenizer_dir)})
    if donor_dir is not None:
        report.extra["donor"] = str(donor_dir)

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        new_tok.save_pretrained(str(tmp))
        report.write(tmp / REPORT_NAME)
    return report
