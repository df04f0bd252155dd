"""The ``tokdistil`` method: Token Distillation (Dobler, Elliott & de Melo, ICLR 2026, arXiv 2505.20133).

A heuristic gives every new token a starting row (``start``: ``fvt`` or ``focus``); then each new token's INPUT
row is learned, with the whole model frozen, so that the model's hidden states at the chosen ``layers`` on
snippets of target text that contain the token match those the same model produces on the same snippet with the
token's old multi-piece tokenization. As in the reference code (github.com/konstantinjdobler/token-distillation,
``train_loop.py``):

- snippets are windows of the target text tokenized with the OLD tokenizer in which the token's old pieces
  (:meth:`~warmstart.vocab_swap.tokens.TokenizerView.segment`, FVT's decomposition) occur; the window is centred
  on one occurrence (``snippet_len`` old tokens); the student sequence is the same window with every occurrence
  of the pieces merged into the one new token, the teacher sequence is the window as it is;
- the objective is the mean squared error between the student's hidden states and the teacher's at the aligned
  positions (every unmerged position, and the merged token against the teacher's LAST piece), from the first
  merged position on (the positions before it are the same in both); ``layers`` index ``output_hidden_states``
  (1..L; L = -1 is the last layer after the final norm, the reference's default ``target_layer=-1``); several
  layers are averaged;
- output rows: the method learns input rows only; the paper leaves output rows to other methods, and the
  reference README recommends combining Token Distillation with another method for them. ``output: start``
  (the default) keeps the start heuristic's head rows (a tied head is the input row). The reference code's
  default for an untied head (``OutputEmbeddingInit.TRAIN_WITH_CE``: head rows by next-token cross-entropy, a
  backward pass into the head only) is ``output: ce`` here, restricted so that each token stays independent: the
  head row of token ``t`` is trained by the cross-entropy over the old vocabulary plus ``t`` at the teacher's
  (old-tokenization) contexts of its snippets (positive where the next old tokens are its pieces, negative
  elsewhere; the old logits are constants, one dot product a position). In the default study (fvt start, last
  layer) it raised the swapped model's step-0 nb-NO bits per byte to 3.27, against 3.10 for fvt and 3.07 for
  the distilled input rows with fvt's head rows (each new token's head row competes with the old vocabulary
  only, not with the other new tokens, and comes out too confident), so it is off by default.

Every token's loss depends on its own row only, and the loss is the SUM over tokens of each token's mean error,
so ``batch_tokens`` tokens (all their snippets, one padded batch, one forward of the frozen model with the rows as
the only trainable parameters) train together exactly as they would alone; Adam (per-coordinate, so per-row)
with a cosine learning-rate decay over ``steps`` full-batch steps, and each token keeps the row (and head row)
with the lowest objective seen (the start row included). Snippets are streamed: the texts are read once, and per
token at most ``snippets`` windows are kept (reservoir sampling, seeded), never the corpus. A token with no
snippet (its pieces never occur, or it has none) keeps its starting row and is counted.

Deterministic: the same texts, rows and options give the same rows (same thread count). The objective curve
(mean over distilled tokens at each step, the last entry after the last step), the counts, the time and the
FLOPs spent (:func:`forward_flops`: per position ``2 N_l + 4 l d T``; backward counted as one more forward, since
the frozen body needs input gradients only) go into the swap report's ``extra["tokdistil"]``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from warmstart.vocab_swap.snippets import _build_batch, collect_snippets
from warmstart.vocab_swap.tokens import TokenizerView, VocabSwapError

log = logging.getLogger("warmstart.vocab_swap")

#: Heuristics tokdistil can start from.
STARTS: tuple[str, ...] = ("fvt", "focus")
#: What happens to the new tokens' rows of an untied LM head.
OUTPUTS: tuple[str, ...] = ("ce", "start")
_LOGIT_ROWS = 1 << 24  # floats of old-vocabulary logits per chunk (the head's log-partition)


@dataclass(frozen=True)
class TokDistilOptions:
    """Token Distillation's settings (``vocab_swap.tokdistil`` in params.yaml)."""

    start: str = "focus"  # the heuristic whose rows it starts from: fvt | focus
    layers: tuple[int, ...] = (1,)  # output_hidden_states indices: 1..L or -L..-1 (-1: last, after the norm)
    snippets: int = 8  # per token, at most
    snippet_len: int = 16  # old-tokenizer tokens per snippet
    steps: int = 6  # full-batch Adam steps per batch of tokens
    lr: float = 0.03  # peak learning rate (cosine decay to 0)
    batch_tokens: int = 256  # tokens per optimisation step (all their snippets in one forward)
    output: str = "start"  # start: the heuristic's head rows | ce: head rows by next-token cross-entropy

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.start not in STARTS:
            raise VocabSwapError(
                f"tokdistil start method {self.start!r} is not available: it starts from one of {', '.join(STARTS)}"
            )
        if self.output not in OUTPUTS:
            raise VocabSwapError(f"tokdistil output {self.output!r}: allowed {', '.join(OUTPUTS)}")
        if not self.layers or 0 in self.layers:
            raise VocabSwapError(
                f"tokdistil layers {list(self.layers)}: give hidden-state indices 1..L or -L..-1 (0 is the input)"
            )
        for name, low in (("snippets", 1), ("snippet_len", 2), ("steps", 1), ("batch_tokens", 1)):
            if int(getattr(self, name)) < low:
                raise VocabSwapError(f"tokdistil {name} must be >= {low}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise VocabSwapError(f"tokdistil lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def num_layers(config: Any) -> int:
    """Decoder layers of a (text) model config."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(cfg, name, None)
        if isinstance(n, int):
            return n
    raise VocabSwapError(f"cannot tell how many layers a {type(config).__name__} has")


def check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """``layers`` as sorted positive hidden-state indices (1..n_layers), or a clear error."""
    out = set()
    for layer in layers:
        if not (1 <= layer <= n_layers or -n_layers <= layer <= -1):
            raise VocabSwapError(
                f"tokdistil layer {layer} is outside the model: it has {n_layers} layers, so a layer is one of "
                f"1..{n_layers} or -{n_layers}..-1 (output_hidden_states indices; -1 is the last, after the norm)"
            )
        out.add(layer if layer > 0 else n_layers + 1 + layer)
    return sorted(out)


# ---------------------------------------------------------------- the frozen model


class _Stop(Exception):
    pass


class Frozen:
    """The model's body as a function from input embeddings to hidden states at chosen layers.

    ``layers`` are hidden-state indices 1..L as ``output_hidden_states`` numbers them (L: after the final norm).
    When every layer asked for is below L and the decoder layers are found (``layers`` / ``h`` of the base
    model), the forward stops after the deepest one (hooks), so early layers cost only the layers up to them.
    """

    def __init__(self, model: Any):
        self.model = model
        self.base = model.base_model
        self.n_layers = num_layers(model.config)
        blocks = None
        for name in ("layers", "h", "blocks"):
            m = getattr(self.base, name, None)
            if isinstance(m, torch.nn.ModuleList) and len(m) == self.n_layers:
                blocks = m
                break
        self.blocks = blocks
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype

    def __call__(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        deepest = max(layers)
        if deepest == self.n_layers or self.blocks is None:
            out = self.base(inputs_embeds=x, output_hidden_states=True, use_cache=False)
            return [out.hidden_states[layer] for layer in layers]
        got: dict[int, torch.Tensor] = {}
        handles = []

        def hook(index: int):
            def fn(_m: Any, _i: Any, output: Any) -> None:
                got[index] = output[0] if isinstance(output, tuple) else output
                if index == deepest:
                    raise _Stop

            return fn

        for layer in layers:
            handles.append(self.blocks[layer - 1].register_forward_hook(hook(layer)))
        try:
            self.base(inputs_embeds=x, use_cache=False)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return [got[layer] for layer in layers]

    def matmul_params(self, upto: int) -> int:
        """Matmul weights of the decoder layers 1..``upto`` (all 2-D parameters of the base model but its
        embeddings when the layers are not found)."""
        if self.blocks is not None:
            return sum(p.numel() for b in list(self.blocks)[:upto] for p in b.parameters() if p.dim() == 2)
        emb = {id(p) for m in self.base.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        total = sum(p.numel() for p in self.base.parameters() if p.dim() == 2 and id(p) not in emb)
        return total * upto // max(self.n_layers, 1)


def forward_flops(matmul_params: int, layers: int, hidden: int, seq_len: int, vocab: int = 0) -> int:
    """Forward FLOPs per position: ``2 N + 4 l d T`` (PaLM's count, full T x T attention square, as
    :mod:`warmstart.flops`), plus ``2 d V`` for logits over ``vocab`` tokens."""
    return 2 * matmul_params + 4 * layers * hidden * seq_len + 2 * hidden * vocab


def _lse(h: torch.Tensor, head: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """log-sum-exp of the old logits ``h @ head.T + bias`` per row of ``h``, in row chunks."""
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    step = max(1, _LOGIT_ROWS // max(head.shape[0], 1))
    w = head.to(h.dtype)
    for a in range(0, h.shape[0], step):
        logits = (h[a : a + step] @ w.T).float()
        if bias is not None:
            logits += bias.float()
        out[a : a + step] = torch.logsumexp(logits, dim=-1)
    return out


# ---------------------------------------------------------------- distillation


def _segment_mean(values: torch.Tensor, owner: torch.Tensor, counts: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, owner, values) / counts.clamp_min(1)


def distil(
    model: Any,
    old: TokenizerView,
    new: TokenizerView,
    tokens: Sequence[int],
    embed: torch.Tensor,
    head: torch.Tensor | None,
    old_embed: torch.Tensor,
    old_head: torch.Tensor | None,
    old_bias: torch.Tensor | None,
    head_bias: torch.Tensor | None,
    texts: Iterable[str],
    opts: TokDistilOptions,
    seed: int = 0,
) -> dict[str, Any]:
    """Distil the rows of new ``tokens`` into ``embed`` (and ``head``, untied, with ``output: ce``) in place.

    ``model`` is the OLD model (its body is run frozen, on input embeddings); ``old_embed`` / ``old_head`` /
    ``old_bias`` its matrices (``old_head`` None: tied); ``embed`` / ``head`` / ``head_bias`` the new ones holding
    the start rows. Returns what the report records (:mod:`this module <warmstart.vocab_swap.tokdistil>`)."""
    t_all = time.perf_counter()
    frozen = Frozen(model)
    layers = check_layers(opts.layers, frozen.n_layers)
    learn_head = head is not None and opts.output == "ce"
    old_rows = old_embed.shape[0]
    pieces: dict[int, list[int]] = {}
    no_pieces = 0
    for t in tokens:
        key = new.keys[t]
        p = [i for i in old.segment(key) if i < old_rows] if key is not None else []
        if p:
            pieces[t] = p
        else:
            no_pieces += 1
    snips = collect_snippets(texts, old.tokenizer, pieces, opts.snippets, opts.snippet_len, seed)
    todo = sorted(t for t in pieces if snips.windows.get(t))
    info: dict[str, Any] = {
        **opts.to_dict(),
        "layers_resolved": layers,
        "tokens": len(tokens),
        "distilled": len(todo),
        "without_snippet": len(tokens) - len(todo),
        "without_pieces": no_pieces,
        "texts": snips.texts,
        "old_tokens": snips.old_tokens,
        "occurrences": int(sum(snips.occurrences.values())),
        "snippets_used": int(sum(len(snips.windows[t]) for t in todo)),
    }
    log.info(
        "tokdistil: %d of %d new tokens have snippets (%d without, %d of them without old pieces); %.1fs",
        len(todo),
        len(tokens),
        len(tokens) - len(todo),
        no_pieces,
        snips.seconds,
    )
    curve = torch.zeros(opts.steps + 1, dtype=torch.float64)
    head_curve = torch.zeros(opts.steps + 1, dtype=torch.float64)
    kept_sum = kept_head_sum = 0.0
    dev, dt = frozen.device, frozen.dtype
    old_e = old_embed.detach().to(dev)
    head_w = (old_embed if old_head is None else old_head).detach().to(dev)
    hidden = old_embed.shape[1]
    deepest = max(layers)
    f_student = forward_flops(frozen.matmul_params(deepest), deepest, hidden, opts.snippet_len)
    f_teacher = forward_flops(
        frozen.matmul_params(frozen.n_layers if learn_head else deepest),
        frozen.n_layers if learn_head else deepest,
        hidden,
        opts.snippet_len,
        head_w.shape[0] if learn_head else 0,
    )
    flops = pos_teacher = pos_student = 0
    t_teacher = t_train = 0.0
    lrs = [opts.lr * 0.5 * (1 + math.cos(math.pi * k / opts.steps)) for k in range(opts.steps)]
    teacher_layers = sorted({*layers, frozen.n_layers}) if learn_head else layers
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        bar = tqdm(range(0, len(todo), opts.batch_tokens), desc="tokdistil", unit="batch", disable=None)
        for a in bar:
            batch = _build_batch(todo[a : a + opts.batch_tokens], snips.windows, pieces)
            nb = len(batch.tokens)
            ids = torch.tensor(batch.tokens, dtype=torch.long)
            n, ls = batch.s_ids.shape
            lt = batch.t_ids.shape[1]
            t0 = time.perf_counter()
            with torch.no_grad():
                hs = frozen(old_e[batch.t_ids.to(dev)].to(dt), teacher_layers)
                rows = torch.arange(n, device=dev)[:, None]
                t_pos = batch.t_pos.to(dev)
                targets = [hs[teacher_layers.index(layer)][rows, t_pos].float() for layer in layers]
                if learn_head:
                    lab = batch.t_label.to(dev)
                    sel = lab >= 0
                    h_last = hs[-1][sel]
                    lse = _lse(h_last, head_w, old_bias.to(dev) if old_bias is not None else None)
                    pos = lab[sel] == 1
                    h_owner = batch.owner.to(dev)[:, None].expand(n, lt)[sel]
                    h_counts = torch.zeros(nb, device=dev).index_add_(0, h_owner, torch.ones_like(lse))
                    h_bias = head_bias[ids].to(dev).float() if head_bias is not None else None
                    h_last = h_last.float()
                del hs
            flops += n * lt * f_teacher
            pos_teacher += n * lt
            t_teacher += time.perf_counter() - t0
            t0 = time.perf_counter()
            x0 = old_e[batch.s_ids.to(dev)].to(dt)
            mask = batch.loss_mask.to(dev)
            owner = batch.owner.to(dev)
            counts = batch.counts.to(dev) * len(layers)
            new_at = (batch.new_at[0].to(dev), batch.new_at[1].to(dev))
            new_owner = batch.new_owner.to(dev)
            w = torch.nn.Parameter(embed[ids].to(dev, torch.float32))
            params = [w]
            best_w, best = w.detach().clone(), torch.full((nb,), math.inf, device=dev)
            if learn_head:
                wh = torch.nn.Parameter(head[ids].to(dev, torch.float32))  # type: ignore[index]
                params.append(wh)
                best_wh, best_h = wh.detach().clone(), torch.full((nb,), math.inf, device=dev)
            opt = torch.optim.Adam(params, lr=opts.lr)
            for k in range(opts.steps + 1):
                last = k == opts.steps
                with torch.set_grad_enabled(not last):
                    x = x0.index_put(new_at, w[new_owner].to(dt))
                    out = frozen(x, layers)
                    err = sum(((o.float() - tg) ** 2).mean(-1) for o, tg in zip(out, targets))
                    per_tok = _segment_mean((err * mask).sum(1), owner, counts, nb)
                    loss = per_tok.sum()
                    if learn_head:
                        logit = (h_last * wh[h_owner]).sum(-1)
                        if h_bias is not None:
                            logit = logit + h_bias[h_owner]
                        ce = torch.nn.functional.softplus(torch.where(pos, lse - logit, logit - lse))
                        per_head = _segment_mean(ce, h_owner, h_counts, nb)
                        loss = loss + per_head.sum()
                with torch.no_grad():
                    better = per_tok < best
                    best = torch.where(better, per_tok, best)
                    best_w[better] = w.detach()[better]
                    curve[k] += float(per_tok.sum())
                    if learn_head:
                        hb = per_head < best_h
                        best_h = torch.where(hb, per_head, best_h)
                        best_wh[hb] = wh.detach()[hb]
                        head_curve[k] += float(per_head.sum())
                if last:
                    break
                for g in opt.param_groups:
                    g["lr"] = lrs[k]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            flops += n * ls * f_student * (2 * opts.steps + 1)
            pos_student += n * ls
            t_train += time.perf_counter() - t0
            with torch.no_grad():
                embed[ids] = best_w.to(embed.device, embed.dtype)
                kept_sum += float(best.sum())
                if learn_head:
                    head[ids] = best_wh.to(head.device, head.dtype)  # type: ignore[index]
                    kept_head_sum += float(best_h.sum())
    m = max(len(todo), 1)
    obj = (curve / m).tolist()
    info.update(
        {
            "objective": obj,  # mean over distilled tokens of each token's MSE, at steps 0..steps
            "objective_kept": kept_sum / m,  # of the rows kept (each token's best step)
            "monotone": all(b <= a for a, b in zip(obj, obj[1:])),
            "head_objective": (head_curve / m).tolist() if learn_head else None,
            "head_objective_kept": kept_head_sum / m if learn_head else None,
            "output_rows": "ce" if learn_head else ("tied" if head is None else "start"),
            "flops": int(flops),
            "flops_per_token": int(flops // m),
            "positions_teacher": int(pos_teacher),  # padded positions run once by the teacher
            "positions_student": int(pos_student),  # ... and by the student, 2 steps + 1 forward equivalents each
            "seconds_snippets": round(snips.seconds, 3),
            "seconds_teacher": round(t_teacher, 3),
            "seconds_train": round(t_train, 3),
        }
    )
    info["seconds"] = round(time.perf_counter() - t_all, 3)
    info["seconds_per_token"] = info["seconds"] / m
    return info
