"""Token strings: every token reduced to the UTF-8 bytes it stands for.

GPT-2 style byte-level symbols are mapped back through the byte-to-unicode
table, SentencePiece's ``▁`` (or the tokenizer's Metaspace replacement)
becomes a space, byte-fallback tokens ``<0x41>`` become the byte ``0x41``.
:class:`TokenizerView` holds those keys, the byte tokens, the special tokens
and their roles; :meth:`TokenizerView.segment` is FVT's decomposition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Special-token roles mapped explicitly. When one token has several roles
#: (GPT-2's ``<|endoftext|>`` is bos, eos and unk) the first role with an old
#: counterpart wins: eos first, the row whose head logit ends generation.
ROLES: tuple[str, ...] = ("eos", "bos", "pad", "unk", "mask")

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class VocabSwapError(ValueError):
    """Bad input to a vocabulary swap (unknown method, missing donor, ...)."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode symbol table (what ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_UNICODE: dict[int, str] = _bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def _walk(node: Any) -> Iterable[dict[str, Any]]:
    """Every dict in a tokenizer.json component (Sequence components nest)."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


@dataclass
class TokenizerView:
    """A tokenizer's vocabulary reduced to what a swap needs.

    ``keys[i]`` is the normalised byte string of token ``i`` (None for special
    tokens and for ids without a token); ``byte_ids`` maps a byte value to the
    id of the single-byte token that stands for it (``<0xNN>`` byte-fallback
    tokens, or a byte-level symbol); ``roles`` maps bos/eos/... to ids.
    """

    tokenizer: Any
    size: int  # max id + 1
    tokens: list[str | None]
    keys: list[bytes | None]
    kind: str  # "byte_level" | "metaspace" | "plain"
    marker: str | None  # the space marker of metaspace tokenizers
    byte_fallback_ids: set[int]
    byte_ids: dict[int, int]
    special_ids: set[int]
    special_by_content: dict[str, int]
    roles: dict[str, int]
    unk_id: int | None
    _index: dict[bytes, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.size

    @property
    def index(self) -> dict[bytes, int]:
        """key -> id; a regular piece wins over a byte-fallback token, lower ids first."""
        if self._index is None:
            idx: dict[bytes, int] = {}
            for i, k in enumerate(self.keys):
                if k is not None and i not in self.byte_fallback_ids:
                    idx.setdefault(k, i)
            for i in sorted(self.byte_fallback_ids):
                k = self.keys[i]
                if k is not None:
                    idx.setdefault(k, i)
            self._index = idx
        return self._index

    def text(self, i: int) -> str:
        """Readable form of token ``i`` (its key decoded, or the special token)."""
        if not 0 <= i < self.size:
            return ""
        k = self.keys[i]
        if k is None:
            return self.tokens[i] or ""
        return k.decode("utf-8", errors="backslashreplace")

    def surface(self, key: bytes) -> str | None:
        """``key`` written in this tokenizer's model alphabet (None if it cannot be)."""
        if self.kind == "byte_level":
            return "".join(BYTE_TO_UNICODE[b] for b in key)
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text.replace(" ", self.marker) if self.marker else text

    def segment(self, key: bytes) -> list[int]:
        """Ids this tokenizer's model segments ``key`` into (FVT's decomposition).

        The model is run on the string directly (no normaliser, no
        pre-tokenizer, so no prefix space is added). Bytes that are not valid
        UTF-8 for a non-byte-level tokenizer are spelled with its byte tokens.
        Unknown and special pieces are dropped; an empty list means "cannot".
        """
        surface = self.surface(key)
        if surface is None:
            ids = [self.byte_ids.get(b) for b in key]
            return [] if any(i is None for i in ids) else [int(i) for i in ids]  # type: ignore[arg-type]
        backend = self.tokenizer.backend_tokenizer
        try:
            ids = [t.id for t in backend.model.tokenize(surface)]
        except Exception:  # e.g. a model that cannot tokenize without its pre-tokenizer
            ids = backend.encode(key.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        return [i for i in ids if i != self.unk_id and i not in self.special_ids and 0 <= i < self.size]


def tokenizer_view(tok: Any) -> TokenizerView:
    """Build the :class:`TokenizerView` of a transformers fast tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise VocabSwapError(f"a fast (tokenizers-backed) tokenizer is needed, got {type(tok).__name__}")
    spec = json.loads(backend.to_str())
    model_spec = spec.get("model") or {}
    parts = [spec.get("decoder"), spec.get("pre_tokenizer")]
    types = {d.get("type") for d in _walk(parts)}
    marker: str | None = None
    if "ByteLevel" in types:
        kind = "byte_level"
    else:
        kind = "plain"
        for d in _walk(parts + [spec.get("normalizer")]):
            if d.get("type") == "Metaspace":
                marker = d.get("replacement", "\u2581")
                break
            if d.get("type") == "Replace" and isinstance(d.get("pattern"), dict):
                pat = d["pattern"].get("String")
                if pat == "\u2581" and d.get("content") == " ":  # decoder: ▁ -> space
                    marker = pat
                    break
                if pat == " " and d.get("content"):  # normaliser: space -> ▁
                    marker = d["content"]
                    break
        if marker:
            kind = "metaspace"
    byte_fallback = bool(model_spec.get("byte_fallback", False))

    vocab: dict[str, int] = tok.get_vocab()
    size = max(vocab.values()) + 1 if vocab else 0
    tokens: list[str | None] = [None] * size
    for s, i in vocab.items():
        tokens[i] = s
    added = dict(getattr(tok, "added_tokens_decoder", {}) or {})
    special_ids = {int(i) for i, a in added.items() if getattr(a, "special", False)}
    special_ids |= {int(i) for i in getattr(tok, "all_special_ids", []) if i is not None}
    special_ids = {i for i in special_ids if 0 <= i < size}
    special_by_content = {tokens[i]: i for i in sorted(special_ids, reverse=True) if tokens[i] is not None}
    added_content = {int(i): a.content for i, a in added.items()}

    keys: list[bytes | None] = [None] * size
    byte_fallback_ids: set[int] = set()
    byte_ids: dict[int, int] = {}
    for i, s in enumerate(tokens):
        if s is None or i in special_ids:
            continue
        if i in added_content:  # non-special added token: raw text
            keys[i] = added_content[i].encode("utf-8")
            continue
        if kind == "byte_level":
            keys[i] = b"".join(bytes([UNICODE_TO_BYTE[c]]) if c in UNICODE_TO_BYTE else c.encode("utf-8") for c in s)
            if len(keys[i]) == 1 and len(s) == 1:
                byte_ids.setdefault(keys[i][0], i)
            continue
        m = _BYTE_TOKEN.match(s) if byte_fallback else None
        if m:
            b = int(m.group(1), 16)
            keys[i] = bytes([b])
            byte_fallback_ids.add(i)
            byte_ids[b] = i
            continue
        keys[i] = (s.replace(marker, " ") if marker else s).encode("utf-8")
    roles: dict[str, int] = {}
    for role in ROLES:
        rid = getattr(tok, f"{role}_token_id", None)
        if isinstance(rid, int) and 0 <= rid < size:
            roles[role] = rid
    unk = model_spec.get("unk_token")
    unk_id = vocab.get(unk) if isinstance(unk, str) else None
    if unk_id is None and isinstance(model_spec.get("unk_id"), int):
        unk_id = model_spec["unk_id"]
    return TokenizerView(
        tokenizer=tok,
        size=size,
        tokens=tokens,
        keys=keys,
        kind=kind,
        marker=marker,
        byte_fallback_ids=byte_fallback_ids,
        byte_ids=byte_ids,
        special_ids=special_ids,
        special_by_content=special_by_content,
        roles=roles,
        unk_id=unk_id,
    )


def _view(tok: Any) -> TokenizerView:
    return tok if isinstance(tok, TokenizerView) else tokenizer_view(tok)


def train_byte_bpe(
    texts: list[str], vocab_size: int, out_dir: str | Path, *, unk_token: str | None = None, min_frequency: int = 0
) -> Any:
    """A GPT-2 style byte-level BPE tokenizer (``<pad> <s> </s> <unk> <mask>`` specials) trained on ``texts``,
    saved to ``out_dir`` as a Hugging Face tokenizer; returns it (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.save_pretrained(str(out_dir))
    return fast
