"""Context-length extension of RoPE models: methods, a retrieval testbed, long-document measures.

Kept light (nothing is imported here); the modules are:

:mod:`warmstart.context.rope_scaling`
    The registry of extension methods (``none``, ``pi``, ``ntk``,
    ``ntk_margin``, ``dynamic``, ``ntk_parts``, ``yarn``, ``ntk_yarn``,
    ``llama3``, ``theta``), each expressed as transformers' native
    ``rope_parameters``: :func:`~warmstart.context.rope_scaling.rope_config`,
    :func:`~warmstart.context.rope_scaling.extend` (a new model whose rotary
    embeddings are rebuilt), :func:`~warmstart.context.rope_scaling.extend_dir`
    (a model dir, loadable by plain ``AutoModelForCausalLM``) and
    :func:`~warmstart.context.rope_scaling.closed_form` (each method's frequencies
    and attention scaling computed from the published formulas, in float64).
:mod:`warmstart.context.traps`
    The measured pitfalls of RoPE extension (config edits that change
    nothing, dynamic scaling and the KV cache, ...).
:mod:`warmstart.context.tasks`
    Seeded tiny-vocabulary retrieval tasks (passkey, key-value retrieval)
    and their word-level tokenizer.
:mod:`warmstart.context.testbed`
    A small Llama trained on those tasks at ``L`` through the project's
    trainer, every method scored zero-shot and after a short fine-tune at
    ``factor x L`` (:func:`~warmstart.context.testbed.run_testbed`).
:mod:`warmstart.context.measure`
    Bits per byte of long documents by context length and by position.
:mod:`warmstart.context.stats`
    Wilson intervals.

The text suite for real models is :mod:`warmstart.context.retrieval`.
"""
