"""Kernels: plain-torch references vs transformers, Liger kernels vs references, attention dispatch and masks.

The Liger (Triton) kernels run on CPU under the Triton interpreter in a
subprocess (``TRITON_INTERPRET=1`` must be set before triton is imported);
on a CUDA machine they also run compiled, in bf16. The locked Triton's interpreter
needs two test-only shims to run Liger 0.8: Python float kernel arguments
are not wrapped as fp32 scalars (Liger calls ``eps.to(...)``), and
``libdevice.rsqrt`` is not interpreted (returns None); compiled Triton
needs neither.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from transformers.models.llama import modeling_llama

from warmstart.kernels import (
    FLEX,
    KernelNotApplied,
    KernelOptions,
    apply,
    attention_inputs,
    choose_attention,
    fused,
    mask_kind,
    not_applied,
    reference,
)
from warmstart.kernels.attention import mask_mod_for
from warmstart.kernels.masks import additive_mask, document_attention_mask
from warmstart.model import build_model

TINY = dict(vocab_size=300, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_pos=64)
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
needs_liger = pytest.mark.skipif(not fused.liger_installed(), reason="needs triton + liger-kernel (gpu extra)")


def _doc_ids(b=3, T=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(b, T, generator=g) < 0.15
    starts[:, 0] = False
    return starts.cumsum(1)


def _positions(doc_ids):
    idx = torch.arange(doc_ids.shape[1]).expand_as(doc_ids)
    first = torch.ones_like(doc_ids, dtype=torch.bool)
    first[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start = torch.where(first, idx, torch.zeros_like(idx)).cummax(1).values
    return idx - start


# ---------------------------------------------------------------- references vs transformers


def test_references_match_transformers():
    torch.manual_seed(0)
    norm = modeling_llama.LlamaRMSNorm(16, eps=1e-5)
    norm.weight.data.normal_()
    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    torch.testing.assert_close(reference.rms_norm(x, norm.weight, 1e-5), norm(x))
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8)
    cos, sin = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    for a, b in zip(reference.rope(q, k, cos, sin), modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("num_items", [None, 37])
def test_linear_cross_entropy_reference_matches_model_loss(num_items):
    model = build_model(**TINY)
    x = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(1))
    labels = x.clone()
    labels[0, :5] = -100
    kw = {} if num_items is None else {"num_items_in_batch": num_items}
    out = model(input_ids=x, labels=labels, use_cache=False, output_hidden_states=True, **kw)
    out.loss.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h = model.model(input_ids=x, use_cache=False).last_hidden_state
    loss = reference.linear_cross_entropy(h, model.lm_head.weight, labels, num_items_in_batch=num_items, chunk=7)
    loss.backward()
    torch.testing.assert_close(loss, out.loss)
    for g, p in zip(ref_grads, model.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_apply_on_cpu_without_triton_keeps_the_model_and_uses_chunked_loss(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(2))
    a, b = build_model(**TINY), build_model(**TINY)
    assert apply(a, KernelOptions()) == {
        "attention": "unchanged (sdpa)",
        "rms_norm": "off",
        "swiglu": "off",
        "rope": "off",
        "fused_linear_cross_entropy": "off",
    }
    with pytest.warns(KernelNotApplied) as caught:
        rep = apply(b, KernelOptions.all(), device="cpu", dtype=torch.float32)
    assert sorted(str(w.message).split()[1] for w in caught) == ["rms_norm", "rope", "swiglu"]
    assert not_applied(rep).keys() == {"rms_norm", "rope", "swiglu"}
    assert rep["attention"] == "sdpa" and rep["fused_linear_cross_entropy"] == "torch-chunked"
    assert all(rep[k].startswith("skipped") for k in ("rms_norm", "swiglu", "rope"))
    la, lb = a(input_ids=x, labels=x, use_cache=False), b(input_ids=x, labels=x, use_cache=False)
    assert lb.logits is None
    torch.testing.assert_close(lb.loss, la.loss)
    la.loss.backward(), lb.loss.backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad)
    assert b(input_ids=x, use_cache=False).logits.shape == (2, 32, 300)  # no labels: the plain forward


def test_every_requested_kernel_binds_on_the_tiny_llama(monkeypatch):
    """On the locked transformers, each fused op finds its submodules (none silently binds zero)."""
    monkeypatch.setattr(fused, "triton_usable", lambda device: True)
    model = build_model(**TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelNotApplied)
        rep = apply(model, KernelOptions.all(attention=None), device="cpu", dtype=torch.float32)
    # 2 layers: 2 x 2 RMSNorms + the final norm; one MLP and one attention per layer
    assert rep == {
        "attention": "unchanged (sdpa)",
        "rms_norm": "liger x5",
        "swiglu": "liger x2",
        "rope": "liger x2",
        "fused_linear_cross_entropy": "liger",
    }, rep
    assert not_applied(rep) == {}


def test_requested_kernel_that_cannot_bind_is_reported_and_warned(monkeypatch):
    monkeypatch.setattr(fused, "triton_usable", lambda device: True)
    model = build_model(**TINY)
    for layer in model.model.layers:  # an attention class whose forward does not call apply_rotary_pos_emb
        layer.self_attn.__class__ = type("OpaqueAttention", (torch.nn.Module,), {"forward": lambda self, *a, **k: None})
    with pytest.warns(KernelNotApplied, match=r"kernel rope requested but not applied: no \*Attention"):
        rep = apply(model, KernelOptions(rope=True), device="cpu", dtype=torch.float32)
    assert rep["rope"].startswith("not applied") and "LlamaForCausalLM" in rep["rope"]
    assert not_applied(rep) == {"rope": rep["rope"]}


def test_rope_rebinding_keeps_outputs_and_transformers_decorators():
    """The rebound attention forward calls our RoPE, gives the same logits, and still generates with a cache.

    transformers 5.24 wraps attention forwards in ``deprecate_kwarg`` (past_key_values -> cache): the
    rebinding must go through the wrapper to the function that calls ``apply_rotary_pos_emb``.
    """
    from warmstart import kernels as K

    torch.manual_seed(0)
    a = build_model(**TINY).eval()
    b = build_model(**TINY).eval()
    b.load_state_dict(a.state_dict())
    calls = []

    def counting_rope(q, k, cos, sin, unsqueeze_dim=1):
        calls.append(q.shape)
        return reference.rope(q, k, cos, sin, unsqueeze_dim)

    attn_cls = type(b.model.layers[0].self_attn)
    assert K._uses_global(attn_cls.forward, K.ROPE_FN)
    for layer in b.model.layers:
        K._bind(layer.self_attn, K._with_global(attn_cls.forward, K.ROPE_FN, counting_rope))
    x = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(b(input_ids=x).logits, a(input_ids=x).logits)
        assert len(calls) == TINY["layers"]
        ga = a.generate(x[:1, :4], max_new_tokens=6, do_sample=False, use_cache=True)
        gb = b.generate(x[:1, :4], max_new_tokens=6, do_sample=False, use_cache=True)
    assert torch.equal(ga, gb)
    assert len(calls) > TINY["layers"] + 6  # every decoding step went through the rebound forward
    assert type(b.model.layers[0].self_attn).forward is attn_cls.forward  # the class is untouched


# ---------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    "device, dtype, kind, flash, cap, expected",
    [
        ("cpu", torch.float32, "causal", True, None, "sdpa"),
        ("cpu", torch.bfloat16, "document", True, None, "sdpa"),
        ("cpu", torch.float32, "hybrid", True, None, "sdpa"),  # flex has no CPU backward
        ("cuda", torch.bfloat16, "causal", True, (9, 0), "flash_attention_2"),
        ("cuda", torch.float16, "document", True, (8, 0), "flash_attention_2"),  # varlen from position_ids
        ("cuda", torch.bfloat16, "hybrid", True, (9, 0), FLEX),  # bidirectional rows: flash cannot
        ("cuda", torch.float32, "causal", True, (9, 0), "sdpa"),  # flash needs bf16/fp16
        ("cuda", torch.bfloat16, "causal", True, (7, 5), "sdpa"),  # flash needs sm80+
        ("cuda", torch.bfloat16, "causal", False, (9, 0), "sdpa"),  # not installed
        ("cuda", torch.bfloat16, "document", False, (9, 0), FLEX),
        ("cuda", torch.float32, "document", True, (9, 0), FLEX),
        ("cuda", torch.float32, "hybrid", False, (9, 0), FLEX),
    ],
)
def test_choose_attention(device, dtype, kind, flash, cap, expected):
    assert choose_attention(device, dtype, kind, flash_available=flash, capability=cap) == expected


def test_mask_kind():
    assert mask_kind(False, 0.0) == "causal" and mask_kind(True, 0.0) == "document"
    assert mask_kind(False, 0.3) == mask_kind(True, 0.3) == "hybrid"


# ---------------------------------------------------------------- flex masks == the trainer's masks


@pytest.mark.parametrize("causal_across", [False, True])
def test_mask_mod_equals_document_attention_mask(causal_across):
    doc = _doc_ids()
    bidi = torch.tensor([True, False, True])
    mod = mask_mod_for(doc, bidi, causal_across)
    b, q, kv = torch.meshgrid(torch.arange(3), torch.arange(32), torch.arange(32), indexing="ij")
    dense = mod(b, torch.zeros_like(b), q, kv)
    assert torch.equal(dense[:, None], document_attention_mask(doc, bidi, causal_across=causal_across))


@pytest.mark.parametrize(
    "doc_mask, masked_rows", [(True, [False, False, False]), (True, [True, False, True]), (False, [True, False, False])]
)
def test_flex_path_equals_current_mask_path(doc_mask, masked_rows):
    """Logits with warmstart_flex + attention_inputs == the trainer's _model_inputs path (sdpa and eager)."""
    doc = _doc_ids()
    pos = _positions(doc)
    masked = torch.tensor(masked_rows)
    x = torch.randint(0, 300, doc.shape, generator=torch.Generator().manual_seed(3))
    outs = {}
    for backend in ("sdpa", "eager", FLEX):
        model = build_model(**TINY)
        apply(model, KernelOptions(attention=backend))
        # today's trainer: position_ids when doc_mask; a 4D mask when some row is bidirectional
        if backend == FLEX:
            kw = attention_inputs(backend, doc, pos, masked, doc_mask, "cpu")
        else:
            kw = {"position_ids": pos} if doc_mask else {}
            if masked.any():
                m = document_attention_mask(doc, masked, causal_across=not doc_mask)
                kw["attention_mask"] = additive_mask(m) if backend == "eager" else m
            assert set(kw) == set(attention_inputs(backend, doc, pos, masked, doc_mask, "cpu"))
        with torch.no_grad():
            outs[backend] = model(input_ids=x, use_cache=False, **kw).logits
    torch.testing.assert_close(outs[FLEX], outs["sdpa"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs["eager"], outs["sdpa"], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- Liger kernels vs references

_INTERPRETED = textwrap.dedent(
    """
    import numpy as np, torch, triton.language as tl
    from triton.runtime import interpreter as I
    _cvt = I._implicit_cvt
    I._implicit_cvt = lambda a: (tl.tensor(I.TensorHandle(np.array([a], np.float32), tl.float32), tl.float32)
                                 if isinstance(a, float) else _cvt(a))
    import liger_kernel.ops.rms_norm as R
    R.rsqrt = lambda x: tl.math.rsqrt(x)
    from warmstart.kernels import KernelOptions, apply, fused, reference
    from warmstart.model import build_model
    assert fused.triton_usable("cpu")

    def check(fn, ref, *inputs, tol=1e-5):
        a = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
        b = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
        ya, yb = fn(*a), ref(*b)
        ya, yb = (ya if isinstance(ya, tuple) else (ya,)), (yb if isinstance(yb, tuple) else (yb,))
        g = torch.Generator().manual_seed(0)
        ws = [torch.randn(y.shape, generator=g) for y in yb]
        sum((y * w).sum() for y, w in zip(ya, ws)).backward()
        sum((y * w).sum() for y, w in zip(yb, ws)).backward()
        for u, v in zip(ya, yb):
            torch.testing.assert_close(u, v, atol=tol, rtol=tol)
        for u, v in zip(a, b):
            if u.grad is not None:
                torch.testing.assert_close(u.grad, v.grad, atol=tol, rtol=tol)

    torch.manual_seed(0)
    check(lambda x, w: fused.rms_norm(x, w, 1e-6), lambda x, w: reference.rms_norm(x, w, 1e-6),
          torch.randn(6, 40), torch.randn(40))
    check(fused.swiglu, reference.swiglu, torch.randn(6, 24), torch.randn(6, 24))
    ang = torch.randn(2, 5, 4).repeat(1, 1, 2)  # real RoPE tables repeat their halves (Liger reads one half)
    check(fused.rope, reference.rope, torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), ang.cos(), ang.sin())
    labels = torch.randint(0, 50, (2, 9)); labels[0, :3] = -100
    check(lambda h, w: fused.linear_cross_entropy(h, w, labels),
          lambda h, w: reference.linear_cross_entropy(h, w, labels), torch.randn(2, 9, 16), torch.randn(50, 16))

    # the whole patched model: same loss and gradients as the plain one
    cfg = dict(vocab_size=300, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_pos=64)
    a, b = build_model(**cfg), build_model(**cfg)
    rep = apply(b, KernelOptions.all(attention=None))
    assert rep == {"attention": "unchanged (sdpa)", "rms_norm": "liger x5", "swiglu": "liger x2", "rope": "liger x2",
                   "fused_linear_cross_entropy": "liger"}, rep
    x = torch.randint(0, 300, (2, 16))
    la, lb = a(input_ids=x, labels=x, use_cache=False).loss, b(input_ids=x, labels=x, use_cache=False).loss
    la.backward(); lb.backward()
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-5, rtol=1e-4)
    print("INTERPRETED OK")
    """
)


@needs_liger
def test_liger_kernels_under_triton_interpreter(tmp_path):
    script = tmp_path / "interp.py"
    script.write_text(_INTERPRETED)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "INTERPRETED OK" in r.stdout, r.stderr[-4000:]


# ---------------------------------------------------------------- on GPU, when there is one


@needs_cuda
@needs_liger
def test_liger_kernels_on_cuda_bf16():
    torch.manual_seed(0)
    dev, bf = "cuda", torch.bfloat16
    x, w = torch.randn(64, 2048, device=dev, dtype=bf), torch.randn(2048, device=dev, dtype=bf)
    torch.testing.assert_close(fused.rms_norm(x, w), reference.rms_norm(x, w), atol=2e-2, rtol=2e-2)
    g, u = torch.randn(64, 8192, device=dev, dtype=bf), torch.randn(64, 8192, device=dev, dtype=bf)
    torch.testing.assert_close(fused.swiglu(g, u), reference.swiglu(g, u), atol=2e-2, rtol=2e-2)
    h = torch.randn(2, 256, 512, device=dev, dtype=bf, requires_grad=True)
    W = (torch.randn(32000, 512, device=dev) * 0.02).to(bf).requires_grad_()
    y = torch.randint(0, 32000, (2, 256), device=dev)
    la = fused.linear_cross_entropy(h, W, y)
    la.backward()
    ga = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    lb = reference.linear_cross_entropy(h, W, y)
    lb.backward()
    torch.testing.assert_close(la.float(), lb.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(ga[0].float(), h.grad.float(), atol=1e-2, rtol=5e-2)


@needs_cuda
def test_flex_backward_on_cuda_matches_sdpa():
    doc, masked = _doc_ids(T=256).cuda(), torch.tensor([True, False, True], device="cuda")
    x = torch.randint(0, 300, doc.shape, device="cuda")
    grads = {}
    for backend in ("sdpa", FLEX):
        model = build_model(**{**TINY, "max_pos": 256}).cuda()
        apply(model, KernelOptions(attention=backend))
        kw = attention_inputs(backend, doc, _positions(doc.cpu()), masked, True, "cuda")
        model(input_ids=x, labels=x, use_cache=False, **kw).loss.backward()
        grads[backend] = [p.grad for p in model.parameters()]
    for a, b in zip(grads[FLEX], grads["sdpa"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
