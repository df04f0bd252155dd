from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def params_dict():
    from warmstart.config import read_yaml

    return read_yaml(ROOT / "params.yaml")


# Toy parallel vocabularies for tiny training runs (two "languages").
WORDS_EN = "the cat sat on a mat with some dog and it ran far away from home to see blue sky".split()
WORDS_NB = "en katt satt paa ei matte med noen hunder og den sprang langt hjemmefra for aa se".split()

# The tests' tokenizers' special tokens, ids 0..4 in this order, and the PreTrainedTokenizerFast argument of each.
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
SPECIAL_ARGS = {
    "<pad>": "pad_token",
    "<s>": "bos_token",
    "</s>": "eos_token",
    "<unk>": "unk_token",
    "<mask>": "mask_token",
}
# The tests' tiny Llama's shape (build_model's names; test_flops counts its FLOPs by hand).
TINY_LLAMA = dict(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)


def fast_tokenizer(tok, specials=SPECIALS):
    """A ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast`` with ``specials`` as its special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **{SPECIAL_ARGS[s]: s for s in specials})


def byte_bpe(texts, vocab_size, specials=SPECIALS):
    """A byte-level BPE trained on ``texts``, ``specials`` first (ids 0..), as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return fast_tokenizer(tok, specials)


def model_for(tok, **kw):
    """``build_model`` sized to ``tok`` (its vocabulary, eos and pad ids); ``kw``: the shape and the rest."""
    from warmstart.model import build_model

    return build_model(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)


def assert_acyclic(graph: dict[str, set[str]], what: str) -> None:
    """Fail naming the first cycle (``what: a -> b -> a``) a depth-first walk of ``graph`` finds."""
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                pytest.fail(f"{what}: " + " -> ".join([*path[path.index(m) :], m]))
            if m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and two xdist workers then share 2 cores without oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """The two smoke studies (``test_pipeline*.py``, minutes each) first: with ``--dist loadfile`` xdist
    hands the first file to one worker and the second to the other, so they run at the same time and the
    short tests fill in around them, instead of one study starting last on one worker."""
    items.sort(key=lambda item: 0 if item.path.name.startswith("test_pipeline") else 1)


def pytest_configure(config):
    """Kernel fork servers started by the tests' pipelines (warmstart.notebook.zygote) exit 60 s after their
    last kernel instead of the default 300 s."""
    import os

    os.environ.setdefault("WARMSTART_ZYGOTE_IDLE", "60")
