"""Alfred-40B-1023's chat format as a real Hugging Face chat template, its tokens, and items encoded with roles.

Alfred's conversations read ``<start_system>...<end_message><start_user>...<end_message><start_assistant>
...<end_message>``, and generation stops at ``<end_message>``. Here that format is a Jinja chat template
stored in the tokenizer's config (:func:`chat_template`): every assistant turn's content and its closing
``<end_message>`` sit inside ``{% generation %}`` marks, so ``apply_chat_template(...,
return_assistant_tokens_mask=True)`` gives the loss mask and any library (trl, axolotl) reads the same one.

:func:`add_chat_tokens` adds the four tokens as special tokens and gives their input and output rows a stated
initial value (``mean``: the mean of the existing rows, transformers' own ``mean_resizing`` rule without its
noise; ``related``: ``<end_message>`` starts from the EOS rows, the model's "the text ends here", the role
tokens from the mean). :func:`encode` turns one checked conversation into ids and a loss role per token
(:data:`warmstart.data.packing.ROLES`): ``response`` inside the generation marks, ``prompt`` elsewhere, or
``text`` for the prompts kept under the language-modelling loss (Alfred's "partition of the prompts").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from warmstart.data.packing import ROLE_PROMPT, ROLE_RESPONSE, ROLE_TEXT

CHAT_ROLES = ("system", "user", "assistant")
DEFAULT_TOKENS = {
    "system": "<start_system>",
    "user": "<start_user>",
    "assistant": "<start_assistant>",
    "end": "<end_message>",
}


class ChatError(ValueError):
    """A conversation, chat token or template that cannot be trained on; the message names the item or key."""


def chat_template(tokens: Mapping[str, str] = DEFAULT_TOKENS) -> str:
    """The Jinja chat template of Alfred's format with ``tokens``; assistant content and its end token inside
    ``{% generation %}``; ``add_generation_prompt`` opens an assistant turn."""
    t = {**DEFAULT_TOKENS, **tokens}
    starts = "{% set starts = {" + ", ".join(f"'{r}': '{t[r]}'" for r in CHAT_ROLES) + "} %}"
    return (
        starts
        + "{% for message in messages %}"
        + "{% if message['role'] == 'assistant' %}"
        + f"{t['assistant']}{{% generation %}}{{{{ message['content'] }}}}{t['end']}{{% endgeneration %}}"
        + "{% else %}"
        + f"{{{{ starts[message['role']] }}}}{{{{ message['content'] }}}}{t['end']}"
        + "{% endif %}{% endfor %}"
        + f"{{% if add_generation_prompt %}}{t['assistant']}{{% endif %}}"
    )


def check_template(template: str, prompt_loss_weight: float) -> None:
    """Refuse a template whose assistant turns are not marked while prompt loss is masked: transformers would
    return an all-zero assistant mask and ``assistant_only_loss`` would silently train on nothing."""
    if prompt_loss_weight < 1 and not ("{% generation %}" in template or "{%- generation %}" in template):
        raise ChatError(
            "chat template: no {% generation %} marks, so the assistant-token mask is empty, but "
            f"chat.prompt_loss_weight is {prompt_loss_weight} (< 1 masks the prompts): mark every assistant "
            "turn's content with {% generation %}...{% endgeneration %}"
        )


def check_tokens(tokenizer: Any, tokens: Mapping[str, str]) -> None:
    """Refuse chat tokens that already mean something else: a string that is an ordinary token of the
    vocabulary, another special token (EOS, BOS, pad, ...), or two roles sharing one string."""
    if set(tokens) != set(DEFAULT_TOKENS):
        raise ChatError(f"chat.tokens: give exactly {sorted(DEFAULT_TOKENS)}, got {sorted(tokens)}")
    if len(set(tokens.values())) != len(tokens):
        raise ChatError(f"chat.tokens: every role needs its own token, got {dict(tokens)}")
    vocab = tokenizer.get_vocab()
    named = {v: k for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    for role, tok in tokens.items():
        if not tok or tok != tok.strip():
            raise ChatError(f"chat.tokens.{role}: {tok!r} must be non-empty without surrounding spaces")
        if tok in named:
            raise ChatError(f"chat.tokens.{role}: {tok!r} is already the tokenizer's {named[tok]}; choose another")
        if tok in vocab:
            raise ChatError(
                f"chat.tokens.{role}: {tok!r} already exists in the vocabulary (id {vocab[tok]}) with its own "
                "meaning; choose a string the tokenizer does not have"
            )


def add_chat_tokens(
    model: Any, tokenizer: Any, tokens: Mapping[str, str], init: str = "mean", pad_multiple: int = 64
) -> dict[str, Any]:
    """Add ``tokens`` as special tokens, install the chat template, and set the new rows by ``init``.

    The model grows (to a multiple of ``pad_multiple``) only when a new id is past its embedding matrix (a
    vocabulary padded to a multiple, as vocab_swap pads it, may already have the rows). Returns ``{"ids": {role: id}, "init": init, "resized":
    bool}``. Tied embeddings get their one matrix set."""
    import torch

    if init not in ("mean", "related"):
        raise ChatError(f"chat.token_init: 'mean' or 'related', got {init!r}")
    check_tokens(tokenizer, tokens)
    n_before = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens.values())})
    tokenizer.chat_template = chat_template(tokens)
    ids = {role: tokenizer.convert_tokens_to_ids(t) for role, t in tokens.items()}
    emb = model.get_input_embeddings()
    resized = max(ids.values()) >= emb.weight.shape[0]
    if resized:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_multiple, mean_resizing=False)
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    tied = inp.data_ptr() == out.data_ptr()
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        for matrix in (inp,) if tied else (inp, out):
            if resized:  # the padding rows the resize drew (unseeded) are zero, as vocab_swap pads: reproducible
                matrix[len(tokenizer) :] = 0
            mean = matrix[:n_before].mean(0)
            for role, i in ids.items():
                related = init == "related" and role == "end" and eos is not None
                matrix[i] = matrix[eos] if related else mean
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    return {"ids": ids, "init": init, "resized": resized, "tied": tied}


def check_conversation(messages: Any, where: str, tokens: Mapping[str, str] = DEFAULT_TOKENS) -> list[dict]:
    """The conversation as ``[{"role", "content"}]``, or a :class:`ChatError` naming ``where``: an unknown
    role, no assistant turn, empty or non-string content, or content that holds a chat token (it would forge
    a turn)."""
    if not isinstance(messages, list) or not messages:
        raise ChatError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatError(f"{where}: message {k} is not an object with 'role' and 'content'")
        if m["role"] not in CHAT_ROLES:
            raise ChatError(f"{where}: message {k} has unknown role {m['role']!r}; known: {', '.join(CHAT_ROLES)}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ChatError(f"{where}: message {k} ({m['role']}) has empty or non-string content")
        forged = [t for t in tokens.values() if t in m["content"]]
        if forged:
            raise ChatError(f"{where}: message {k} ({m['role']}) contains the chat token {forged[0]!r}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ChatError(f"{where}: the conversation has no assistant turn (nothing to learn)")
    return out


def encode(tokenizer: Any, messages: Sequence[dict], keep_prompt: bool = False) -> tuple[list[int], list[int], int]:
    """``(ids, roles, utf8_bytes)`` of one conversation through the tokenizer's chat template: roles are
    ``response`` where the template's assistant mask is 1, else ``prompt`` (``text`` with ``keep_prompt``);
    bytes are the UTF-8 bytes of the assistant contents (the text the response bits are per)."""
    enc = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    if not any(mask):
        raise ChatError("the chat template marks no assistant token ({% generation %} missing, or no assistant turn)")
    other = ROLE_TEXT if keep_prompt else ROLE_PROMPT
    roles = [ROLE_RESPONSE if m else other for m in mask]
    nbytes = sum(len(m["content"].encode("utf-8")) for m in messages if m["role"] == "assistant")
    return ids, roles, nbytes


def fit_length(ids: list[int], roles: list[int], seq_len: int, on_long: str) -> tuple[list[int], list[int]] | None:
    """An encoded item that fits a row of ``seq_len`` (one EOS separator included): as is; when longer,
    ``error`` refuses, ``drop`` returns None, ``truncate`` cuts the prompt from the left while every response
    token still fits (else None)."""
    if len(ids) + 1 <= seq_len:
        return ids, roles
    if on_long == "error":
        raise ChatError(
            f"a chat item has {len(ids)} tokens, more than chat.seq_len {seq_len} allows (set chat.on_long to "
            "truncate or drop to count and handle such items)"
        )
    if on_long == "drop":
        return None
    first = roles.index(ROLE_RESPONSE)
    cut = len(ids) + 1 - seq_len
    if cut > first:
        return None
    return ids[cut:], roles[cut:]
