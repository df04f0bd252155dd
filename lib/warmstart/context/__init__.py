"""Context-length extension of RoPE models: methods, a retrieval testbed, long-document measures.

The modules (nothing is imported here):

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
:mod:`warmstart.context.testbed_config`
    :class:`~warmstart.context.testbed_config.TestbedConfig`, validated before anything trains.
:mod:`warmstart.context.testbed_seeds`
    The testbed once per training seed (``make testbed-seeds``).
:mod:`warmstart.context.retrieval`
    The long-context retrieval suite for real models (``kv_uuid``, ``topic``, ``line``, ``multidoc``,
    ``passkey``), built from corpus text at any token length.
:mod:`warmstart.context.plan`
    Whether a run fits a device, and with what (``python -m warmstart.context plan``).
:mod:`warmstart.context.finetune`
    The ``context@<method>`` stage's pieces: the adapted model extended (or ``short``), its long documents,
    retrieval suites and measures, the fine-tune's trainer config, the run's record and headline.
:mod:`warmstart.context.summary`
    The context stage's collection: the testbed and the adapted model's extensions, figures and card.

Accuracy intervals (Wilson) come from :mod:`warmstart.evaluate.intervals`.
"""
