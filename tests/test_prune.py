"""warmstart.prune: Minitron importance, GQA-aware plans, slicing == masking, reload, bad input."""

import importlib
import json
import subprocess
import sys

import pytest
import torch

from warmstart.model import build_model
from warmstart.prune import (
    Importance,
    PruneTarget,
    check_model,
    count_params,
    estimate_importance,
    make_plan,
    mask_model,
    masking_check,
    params_of,
    prune_model,
    random_importance,
    save_pruned,
    target_for_budget,
)

VOCAB = 200


def _randomise_vectors(model, seed=0):
    """Norm weights away from 1 and biases away from 0, so channel rescaling and bias slicing matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model


def _from_config(config_cls, model_cls, seed: int, **extra):
    """:func:`make`'s shape built straight from a transformers config (with ``extra``), seeded."""
    cfg = config_cls(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        initializer_range=0.1,
        **extra,
    )
    torch.manual_seed(seed)
    return model_cls(cfg).float()


def make(kind: str, seed: int = 0):
    """Tiny real HF models: GQA Llama (untied/tied), Llama with biases, Mistral, Qwen3 (q/k norms)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    kw = dict(
        vocab_size=VOCAB, hidden=64, layers=3, heads=4, kv_heads=2, intermediate=96, seed=seed, initializer_range=0.1
    )
    if kind == "llama":
        m = build_model(**kw)
    elif kind == "llama-tied":
        m = build_model(**kw, tie_embeddings=True)
    elif kind == "mistral":
        m = build_model(arch="mistral", **kw)
    elif kind == "llama-bias":
        m = _from_config(LlamaConfig, LlamaForCausalLM, seed, attention_bias=True, mlp_bias=True)
    elif kind == "qwen3":
        m = _from_config(Qwen3Config, Qwen3ForCausalLM, seed, head_dim=24, tie_word_embeddings=False)
    else:
        raise KeyError(kind)
    return _randomise_vectors(m, seed).eval()


def calib(n=3, bs=4, T=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (bs, T), generator=g) for _ in range(n)]


# --------------------------------------------------------------------------- importance


def _dead_model():
    """MHA Llama with known dead units: neurons, heads, hidden channels, and an identity layer."""
    m = build_model(
        vocab_size=VOCAB, hidden=64, layers=3, heads=4, kv_heads=4, intermediate=96, seed=3, initializer_range=0.1
    )
    dead = {"neurons": [3, 17, 50], "heads": {0: 2, 1: 1, 2: 3}, "hidden": [5, 40], "layer": 1}
    hd = 16
    with torch.no_grad():
        for i, layer in enumerate(m.model.layers):
            layer.mlp.up_proj.weight[dead["neurons"]] = 0  # act(gate) * 0 = 0 enters down_proj
            h = dead["heads"][i]
            layer.self_attn.v_proj.weight[h * hd : (h + 1) * hd] = 0  # the head's output is 0
            layer.self_attn.o_proj.weight[dead["hidden"]] = 0
            layer.mlp.down_proj.weight[dead["hidden"]] = 0
        m.model.embed_tokens.weight[:, dead["hidden"]] = 0  # residual channels stay exactly 0
        idle = m.model.layers[dead["layer"]]
        idle.self_attn.o_proj.weight.zero_()
        idle.mlp.down_proj.weight.zero_()  # the layer is the identity
    return m.eval(), dead


def test_importance_ranks_dead_units_last():
    m, dead = _dead_model()
    imp = estimate_importance(m, calib())
    assert imp.samples == 12 and imp.tokens == 12 * 24 and imp.method == "activation"
    for i in range(3):
        assert sorted(imp.order("neurons", i)[:3]) == dead["neurons"]
        assert imp.neurons[i, dead["neurons"]].abs().max() == 0 and imp.order("neurons", i)[3] not in dead["neurons"]
        assert imp.neurons[i].sort().values[3] > 1e-4
        assert imp.order("heads", i)[0] == dead["heads"][i] and imp.heads[i, dead["heads"][i]] == 0
        assert imp.heads[i].sort().values[1] > 1e-4
    assert sorted(imp.order("hidden")[:2]) == dead["hidden"] and imp.hidden[dead["hidden"]].abs().max() == 0
    assert imp.hidden.sort().values[2] > 1e-3
    assert imp.order("layers")[0] == dead["layer"]
    assert imp.layers[dead["layer"]] < 1e-6 and imp.layers.sort().values[1] > 1e-4


@pytest.mark.parametrize("seq_agg,batch_agg", [("mean", "l2"), ("l2", "mean"), ("max", "max")])
def test_importance_aggregation_matches_hand_computation(seq_agg, batch_agg):
    """Neuron scores = batch_agg over samples of seq_agg over tokens of |input of down_proj|; batches stream."""
    m = make("llama")
    batches = calib(n=2, bs=3, T=16)
    seen = []
    h = m.model.layers[1].mlp.down_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach().abs()))
    with torch.no_grad():
        m.model(input_ids=torch.cat(batches))
    h.remove()
    a = seen[0]  # [6, 16, 96]
    s = {"mean": a.mean(1), "l2": a.pow(2).sum(1).sqrt(), "max": a.amax(1)}[seq_agg]
    want = {"l2": s.pow(2).sum(0).sqrt(), "mean": s.mean(0), "max": s.amax(0)}[batch_agg]
    imp = estimate_importance(m, batches, seq_agg=seq_agg, batch_agg=batch_agg)
    torch.testing.assert_close(imp.neurons[1], want, rtol=1e-5, atol=1e-7)
    # heads: L2 over head_dim of the o_proj input, then the same aggregation
    seen.clear()
    h = m.model.layers[2].self_attn.o_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach()))
    with torch.no_grad():
        m.model(input_ids=torch.cat(batches))
    h.remove()
    a = seen[0].reshape(6, 16, 4, 16).norm(dim=-1)
    s = {"mean": a.mean(1), "l2": a.pow(2).sum(1).sqrt(), "max": a.amax(1)}[seq_agg]
    want = {"l2": s.pow(2).sum(0).sqrt(), "mean": s.mean(0), "max": s.amax(0)}[batch_agg]
    torch.testing.assert_close(imp.heads[2], want, rtol=1e-5, atol=1e-7)


def test_importance_json_and_random():
    m = make("qwen3")
    imp = estimate_importance(m, calib(n=1))
    back = Importance.from_json(imp.to_json())
    again = Importance.from_json(json.dumps(imp.to_json()))  # from the file's text too
    for axis in ("neurons", "heads", "hidden", "layers"):
        assert torch.equal(getattr(back, axis), getattr(imp, axis)) and torch.equal(
            getattr(again, axis), getattr(imp, axis)
        )
    assert (back.samples, back.seq_agg, back.batch_agg) == (4, "mean", "l2")
    r0, r0b, r1 = random_importance(m, 0), random_importance(m, 0), random_importance(m, 1)
    assert r0.method == "random" and torch.equal(r0.neurons, r0b.neurons) and not torch.equal(r0.neurons, r1.neurons)
    assert r0.heads.shape == imp.heads.shape == (3, 4) and r0.hidden.shape == (64,) and r0.layers.shape == (3,)


# --------------------------------------------------------------------------- slicing == masking

TARGETS = {
    "heads": dict(heads=2),
    "kv_heads": dict(kv_heads=1),
    "neurons": dict(intermediate=40),
    "hidden": dict(hidden=40),
    "layers": dict(layers=2),
    "all": dict(hidden=48, intermediate=64, heads=2, kv_heads=1, layers=2),
}


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "llama-bias", "mistral", "qwen3"])
@pytest.mark.parametrize("axis", list(TARGETS))
def test_sliced_equals_masked(kind, axis):
    m = make(kind)
    imp = estimate_importance(m, calib(n=1))
    target = TARGETS[axis]
    small = prune_model(m, imp, target)
    masked = mask_model(m, imp, target)
    x = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full, a, b = m(x).logits, small(x).logits, masked(x).logits
    assert (a - b).abs().max().item() < 1e-5
    assert (full - b).abs().max().item() > 1e-3  # the masking changed the model: the check is not vacuous
    d = check_model(small)
    want = {"hidden": 64, "intermediate": 96, "heads": 4, "kv_heads": 2, "layers": 3}
    want.update({k: v for k, v in target.items()})
    if axis == "kv_heads":
        want["heads"] = 2  # whole groups dropped
    assert (d.hidden, d.intermediate, d.heads, d.kv_heads, d.layers) == tuple(
        want[k] for k in ("hidden", "intermediate", "heads", "kv_heads", "layers")
    )
    assert d.head_dim == check_model(m).head_dim and type(small) is type(m)
    assert count_params(small) == params_of(d) and count_params(m) == params_of(check_model(m))
    if kind == "llama-tied":
        assert small.lm_head.weight is small.model.embed_tokens.weight
    if kind == "qwen3":
        assert len(small.config.layer_types) == d.layers
    assert [lay.self_attn.layer_idx for lay in small.model.layers] == list(range(d.layers))
    # the source model is untouched by either operation
    with torch.no_grad():
        assert torch.equal(m(x).logits, full)


def test_sliced_equals_masked_with_random_importance():
    m = make("llama")
    imp = random_importance(m, seed=5)
    t = TARGETS["all"]
    x = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert (prune_model(m, imp, t)(x).logits - mask_model(m, imp, t)(x).logits).abs().max() < 1e-5


# --------------------------------------------------------------------------- GQA


def test_gqa_heads_ranked_within_groups():
    m = make("llama")  # 4 query heads, 2 KV groups of 2
    imp = random_importance(m, 0)
    imp.heads[:] = torch.tensor([0.9, 0.8, 0.2, 0.1])  # globally, heads 0 and 1 are best
    plan = make_plan(m, imp, PruneTarget(heads=2))
    assert plan.heads.tolist() == [[0, 2]] * 3  # one per group: the best of each
    assert plan.kv_heads.tolist() == [[0, 1]] * 3
    plan = make_plan(m, imp, PruneTarget(kv_heads=1))
    assert plan.heads.tolist() == [[0, 1]] * 3 and plan.kv_heads.tolist() == [[0]] * 3
    imp.heads[1] = torch.tensor([0.1, 0.2, 0.9, 0.8])  # layer 1 prefers group 1 (and head 2 in it)
    plan = make_plan(m, imp, PruneTarget(heads=1, kv_heads=1))
    assert plan.heads.tolist() == [[0], [2], [0]] and plan.kv_heads.tolist() == [[0], [1], [0]]
    # the sliced model maps each kept query head to its own KV head: equal to masking
    small = prune_model(m, imp, PruneTarget(heads=1, kv_heads=1))
    assert small.config.num_attention_heads == 1 and small.config.num_key_value_heads == 1
    hd = 16
    assert torch.equal(small.model.layers[1].self_attn.k_proj.weight, m.model.layers[1].self_attn.k_proj.weight[hd:])
    assert torch.equal(
        small.model.layers[1].self_attn.q_proj.weight, m.model.layers[1].self_attn.q_proj.weight[2 * hd : 3 * hd]
    )


# --------------------------------------------------------------------------- budgets


def test_count_params_and_target_for_budget():
    # the embedded default's tiny shape
    m = build_model(vocab_size=8192, hidden=128, layers=4, heads=4, kv_heads=2, seed=0)
    c = count_params(m)
    assert c == {"total": 726144 + 2 * 8192 * 128, "embedding": 2 * 8192 * 128, "non_embedding": 726144}
    assert count_params(build_model(vocab_size=8192, hidden=128, tie_embeddings=True))["embedding"] == 8192 * 128
    half = c["non_embedding"] // 2
    t = target_for_budget(m.config, half, axis="width")
    assert t == PruneTarget(hidden=88, intermediate=216)  # keep ratios 0.69 and 0.63, multiples of 8
    small = prune_model(m, random_importance(m, 0), t)
    got = count_params(small)["non_embedding"]
    assert abs(got - half) / half < 0.02 and got == params_of(check_model(small))["non_embedding"]
    t = target_for_budget(m.config, half, axis="depth")
    assert t == PruneTarget(layers=2)
    t = target_for_budget(m.config, half, axis="width", heads=2)
    assert t == PruneTarget(hidden=88, intermediate=256, heads=2)  # fewer attention params: a wider MLP


# --------------------------------------------------------------------------- bad input


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))


@pytest.mark.parametrize(
    "target,message",
    [
        (dict(hidden=65), r"target hidden=65 is larger than the model's hidden \(64\)"),
        (dict(intermediate=97), r"target intermediate=97 is larger than the model's intermediate \(96\)"),
        (dict(layers=4), r"target layers=4 is larger than the model's layers \(3\)"),
        (dict(heads=5), r"target heads=5 is larger"),
        (dict(kv_heads=3), r"target kv_heads=3 is larger"),
        (dict(heads=3), r"target heads \(3\) is not divisible by the 2 KV groups"),
        (dict(heads=4, kv_heads=1), r"4 query heads per KV group, but the model's groups have 2"),
        (dict(layers=0), r"layers=0 would prune every layer"),
        (dict(layers=-1), r"would prune every layer"),
        (dict(neurons=3), r"Extra inputs are not permitted"),
    ],
)
def test_bad_targets(target, message, tmp_path):
    m = make("llama")
    imp = random_importance(m, 0)
    x = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        before = m(x).logits
    for fn in (prune_model, mask_model):
        with pytest.raises(ValueError, match=message):
            fn(m, imp, target)
    with torch.no_grad():
        assert torch.equal(m(x).logits, before)  # nothing was modified
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    m = make("llama")
    imp = random_importance(m, 0)
    with pytest.raises(ValueError, match=r"importance.neurons has shape \(3, 96\), the model needs \(2, 96\)"):
        prune_model(build_model(vocab_size=VOCAB, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96), imp, {})
    with pytest.raises(ValueError, match=r"budget of 10,000,000 non-embedding parameters is larger than the model's"):
        target_for_budget(m.config, 10_000_000)
    with pytest.raises(ValueError, match=r"would prune every layer"):
        target_for_budget(m.config, 100, axis="depth")
    with pytest.raises(ValueError, match=r"too small for width pruning"):
        target_for_budget(m.config, 100, axis="width")
    with pytest.raises(ValueError, match=r"seq_agg must be one of"):
        estimate_importance(m, calib(n=1), seq_agg="median")
    with pytest.raises(ValueError, match=r"no calibration batches"):
        estimate_importance(m, [])
    gpt2 = _gpt2()
    unsupported = r"unsupported architecture 'GPT2LMHeadModel' \(model_type 'gpt2'\)"
    with pytest.raises(ValueError, match=unsupported):
        estimate_importance(gpt2, calib(n=1))
    with pytest.raises(ValueError, match=unsupported):
        random_importance(gpt2)
    with pytest.raises(ValueError, match=unsupported):
        prune_model(gpt2, imp, {"layers": 1})
    with pytest.raises(ValueError, match=r"unsupported architecture 'GPT2Config' \(model_type 'gpt2'\)"):
        target_for_budget(gpt2.config, 10)
    with pytest.raises(ValueError, match=unsupported):
        save_pruned(gpt2, None, tmp_path / "gpt2")
    masked = mask_model(m, imp, {"heads": 2})
    with pytest.raises(ValueError, match=r"this model is masked"):
        save_pruned(masked, None, tmp_path / "masked")
    with pytest.raises(ValueError, match=r"this model is masked"):
        prune_model(masked, imp, {"heads": 2})
    assert list(tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------- masking check


def test_masking_check_least_important_costs_nothing():
    """A model whose least important quarter of neurons and heads is dead: masking it costs exactly 0.

    A random-weight model has no meaningful loss to raise, so the metric here is the mean squared change
    of the logits from the unmasked model's (0 for the unmasked model itself).
    """
    from warmstart.prune import lm_loss

    m = build_model(
        vocab_size=VOCAB, hidden=64, layers=2, heads=4, kv_heads=4, intermediate=96, seed=1, initializer_range=0.2
    )
    with torch.no_grad():
        for layer in m.model.layers:
            layer.mlp.up_proj.weight[:24] = 0  # 25% of the neurons
            layer.self_attn.v_proj.weight[16:32] = 0  # head 1 of 4
    imp = estimate_importance(m, calib(n=1))
    x = calib(n=1, seed=4)[0]
    with torch.no_grad():
        ref = m(x).logits
    calls = []

    def eval_fn(model):
        calls.append(1)
        with torch.no_grad():
            return (model(x).logits - ref).pow(2).mean().item()

    res = masking_check(m, None, imp, fraction=0.25, seed=0, eval_fn=eval_fn, n_random=2)
    assert len(calls) == 1 + 2 * (1 + 2) and res["baseline"] == 0.0
    for axis, n in (("neurons", 24), ("heads", 1)):
        r = res[axis]
        assert r["masked"] == n and len(r["random"]) == 2
        assert r["least_increase"] == 0.0 and r["random_increase"] > 1e-6
        assert r["ratio"] == 0.0 and r["pass"] is True
    # the default metric: next-token loss on the evaluation batches, unmasked model first
    default = masking_check(m, [x], imp, n_random=1)
    assert default["baseline"] == pytest.approx(lm_loss(m, [x]), abs=1e-6)
    assert default["neurons"]["least_increase"] == pytest.approx(0.0, abs=1e-6)


def _additive_metric(m, cost):
    """A metric that adds ``cost[layer][head]`` for every head whose ``o_proj`` columns are all zero (masked)."""
    hd = m.config.hidden_size // m.config.num_attention_heads

    def eval_fn(model):
        total = 0.0
        for i, layer in enumerate(model.model.layers):
            w = layer.self_attn.o_proj.weight
            total += sum(c for h, c in enumerate(cost[i]) if not w[:, h * hd : (h + 1) * hd].any())
        return total

    return eval_fn


def test_head_mask_bound_scores_every_mask_exactly():
    """On a metric that adds a known cost per masked head, the bound is exact: the mean of all 16 masks is the sum
    of the per-layer means, the cheapest mask is each layer's cheapest head, and the ranking's mask is placed."""
    from warmstart.prune.masking import head_mask_bound

    m = build_model(vocab_size=VOCAB, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, seed=1)
    cost = [[0.4, 0.1, 0.3, 0.2], [0.5, 0.6, 0.05, 0.7]]
    imp = random_importance(m, 0)
    imp.heads = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.9, 0.1, 0.9]])  # ranks head 3, then head 2, least
    calls = []
    metric = _additive_metric(m, cost)
    res = head_mask_bound(m, imp, lambda model: calls.append(1) or metric(model), 0.25)
    assert len(calls) == 1 + 16 and res["masks"] == 16 and res["heads_masked_per_layer"] == 1
    assert res["baseline"] == 0.0
    assert res["mean_increase"] == pytest.approx(0.25 + 0.4625)
    assert res["best_increase"] == pytest.approx(0.15) and res["best_mask"] == [[1], [2]]
    assert res["worst_increase"] == pytest.approx(1.1)
    assert res["best_ratio"] == pytest.approx(0.15 / 0.7125)
    assert res["ranked_mask"] == [[3], [2]] and res["ranked_increase"] == pytest.approx(0.25)
    assert res["ranked_rank"] == 1  # only the cheapest mask (0.15) beats it
    # two heads of four per layer: C(4, 2) ** 2 = 36 masks
    assert head_mask_bound(m, imp, metric, 0.5)["masks"] == 36


def test_head_mask_bound_bad_input():
    from warmstart.prune.masking import head_mask_bound

    m = build_model(vocab_size=VOCAB, hidden=64, layers=3, heads=4, kv_heads=2, intermediate=96, seed=1)
    imp = random_importance(m, 0)
    with pytest.raises(ValueError, match=r"64 head masks \(C\(4, 1\) \*\* 3 layers\) exceed max_masks 10"):
        head_mask_bound(m, imp, lambda model: 0.0, 0.25, max_masks=10)
    with pytest.raises(ValueError, match=r"fraction 0.1 of 4 heads rounds to 0 heads"):
        head_mask_bound(m, imp, lambda model: 0.0, 0.1)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        head_mask_bound(m, imp, lambda model: 0.0, 1.0)


# --------------------------------------------------------------------------- save and reload


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the cat sat on a mat with some dog and it ran far away from home to see blue sky".split()
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


_RELOAD = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
out = {}
for d in sys.argv[1:]:
    m = AutoModelForCausalLM.from_pretrained(d).eval()
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok("the cat sat on a mat", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = m(ids).logits
    gen = m.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    out[d] = {"cls": type(m).__name__, "ids": ids.tolist(), "logits": logits.tolist(), "gen": gen.tolist(),
              "shape": [m.config.hidden_size, m.config.intermediate_size, m.config.num_attention_heads,
                        m.config.num_key_value_heads, m.config.num_hidden_layers]}
print(json.dumps(out))
"""


def test_pruned_model_reloads_in_fresh_process(tmp_path):
    tok = _tokenizer()
    dirs, models = [], {}
    for kind in ("llama-tied", "mistral", "qwen3"):
        m = make(kind)
        imp = estimate_importance(m, calib(n=1))
        small = prune_model(m, imp, TARGETS["all"])
        out = save_pruned(small, tok, tmp_path / kind)
        assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
        plan = json.loads((out / "prune_plan.json").read_text())
        assert plan["pruned"]["hidden"] == 48 and len(plan["dropped"]["layers"]) == 1
        assert plan["params"]["pruned"] == count_params(small)
        dirs.append(str(out))
        models[str(out)] = small
    proc = subprocess.run([sys.executable, "-c", _RELOAD, *dirs], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for d, small in models.items():
        r = res[d]
        assert r["cls"] == type(small).__name__ and r["shape"] == [48, 64, 2, 1, 2]
        ids = torch.tensor(r["ids"])
        with torch.no_grad():
            want = small(ids).logits
            gen = small.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert (torch.tensor(r["logits"]) - want).abs().max() < 1e-5
        assert r["gen"] == gen.tolist() and len(r["gen"][0]) == ids.shape[1] + 5


# --------------------------------------------------------------------------- bench (tiny shape)


def test_bench_tiny_shape():
    from warmstart.prune.bench import format_report, run_bench

    res = run_bench("tiny", samples=3, seq_len=16, batch_size=2)
    assert res["params"]["non_embedding"] == 74048 and res["pruned_params"]["non_embedding"] == 20640
    assert res["pruned_forward_finite"] and res["model_bytes"] == 2 * res["params"]["total"]
    assert res["target"] == {"hidden": 32, "intermediate": 64, "heads": 2}
    text = format_report(res, "python -m warmstart.prune bench --shape tiny")
    assert "| importance |" in text and "torch " + torch.__version__ in text


def test_package_exports_what_its_modules_define():
    """``from warmstart.prune import X`` gives each submodule's own object, and ``__all__`` lists exactly the
    names the package imports from its submodules (the benchmark is not among them)."""
    import ast
    from pathlib import Path

    import warmstart.prune as pkg

    tree = ast.parse(Path(pkg.__file__).read_text())
    static = {
        a.name: n.module
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("warmstart.prune.")
        for a in n.names
    }
    assert sorted(static) == sorted(pkg.__all__)
    assert "warmstart.prune.bench" not in static.values()
    for name, module in static.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(module), name)
