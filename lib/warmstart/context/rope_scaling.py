"""RoPE context-extension methods, each expressed as transformers' native ``rope_parameters``.

A model trained at length ``L`` (``trained_len``) is configured for
``factor x L`` (``s = factor``). ``b`` is the model's ``rope_theta``, ``D``
the rotary dimension (head dim x partial rotary factor) and
``theta_i = b^(-2i/D)``, ``i = 0 .. D/2 - 1``, the rotary frequencies.

=============  ==========================================================  ===============================================
method         what it is (source)                                         how it is expressed (``config.rope_parameters``)
=============  ==========================================================  ===============================================
``none``       the control: RoPE unchanged, positions past ``L``           ``default``; only ``max_position_embeddings``
               extrapolated                                                = s L
``pi``         Position Interpolation: positions divided by ``s``, i.e.    ``linear`` with ``factor = s``
               ``theta_i / s`` (Chen et al. 2023, arXiv:2306.15595;
               kaiokendev)
``ntk``        static NTK-aware scaling: base ``b' = b s^(D/(D-2))``        ``default`` with ``rope_theta = b'``
               (bloc97, r/LocalLLaMA 2023; YaRN paper, Definition 1)
``ntk_margin`` Alfred-40B-1023's "NTK-Margin": a base raised more than     ``default`` with ``rope_theta = b''``
               NTK-aware's. The card's exact formula is an image missing
               from our copy, so the extra raise is a parameter: ``b'' =
               b (margin s)^(D/(D-2))``, ``margin = 2`` by default (the YaRN
               paper notes NTK-aware's ``s`` must be set higher than the
               true ratio, which is what a margin does)
``dynamic``    Dynamic NTK (emozilla, r/LocalLLaMA 2023; Qwen): the NTK    ``dynamic`` with ``factor = dynamic_factor``
               base recomputed from the current length ``l``:              (default ``s``); ``max_position_embeddings``
               ``b (f l/L - (f-1))^(D/(D-2))`` for ``l > L``                stays ``L`` (see traps below)
``ntk_parts``  NTK-by-parts: YaRN's ramp between interpolation and         ``yarn`` with ``attention_factor = 1.0``,
               extrapolation per frequency, no temperature                 ``beta_fast``/``beta_slow`` (default 32/1)
               (bloc97; Peng et al. 2023, arXiv:2309.00071, Sec. 3.2)
``yarn``       YaRN: NTK-by-parts plus attention temperature, q and k      ``yarn`` with ``attention_factor =
               scaled by ``0.1 ln s + 1`` (Peng et al. 2023, Sec. 3.4)     0.1 ln s + 1``
``ntk_yarn``   Alfred-40B-1023's NTK-YaRN: the NTK-Margin base plus YaRN's  ``yarn`` with ``factor = 1.0`` (interpolates
               temperature (LightOn 2023)                                  nothing: its frequencies are exactly those of
                                                                           ``rope_theta``), ``rope_theta = b''``,
                                                                           ``attention_factor = 0.1 ln s + 1``; its
                                                                           ``original_max_position_embeddings`` (unused
                                                                           at factor 1) equals ``max_position_embeddings``
                                                                           so transformers' consistency check is quiet
``llama3``     Llama 3.1's frequency-dependent scaling (Meta 2024)         ``llama3`` with ``factor = s``, ``low_freq_factor``
                                                                           (1), ``high_freq_factor`` (4)
``theta``      an explicit new base, Lucie-7B's recipe (RoPE theta 500k    ``default`` with ``rope_theta = theta`` (default
               -> 20M for 4,096 -> 32,000 tokens; OpenLLM-France 2025)     ``40 b``, Lucie's ratio)
=============  ==========================================================  ===============================================

Every method is native, so a saved model loads and behaves identically with
plain ``AutoModelForCausalLM.from_pretrained`` (no custom code). Traps
(each pinned by a test, measured in :mod:`warmstart.context.traps`):

* ``original_max_position_embeddings`` must be the trained length: when it
  is missing transformers fills in ``max_position_embeddings`` (the *new*
  length) and YaRN's ramp, llama3's bands move. We always write it (for
  ``ntk_yarn``, whose YaRN factor is 1, it has no effect; the trained
  length is recorded in ``config.context_extension`` for every method).
* the rotary ``inv_freq`` is computed when the model is built: editing
  ``model.config`` afterwards changes nothing. :func:`extend` rebuilds it.
* transformers' ``dynamic`` takes ``max_position_embeddings`` as the
  original length and ignores ``original_max_position_embeddings``, so that
  field stays ``L`` for ``dynamic``; and its factor-``s`` base at ``s L`` is
  ``b (s^2 - s + 1)^(D/(D-2))``, not static NTK's ``b s^(D/(D-2))``
  (``dynamic_factor=1`` gives the YaRN paper's ``s = l/L`` form, whose
  base at ``s L`` is NTK's).
* ``pi``, ``yarn``, ``ntk_parts``, ``llama3`` and every base change alter
  the model at the trained length too; ``dynamic`` does not (up to ``L``).
* ``dynamic`` recomputes frequencies from the longest position of each
  forward, so logits with a KV cache (keys rotated at an earlier length)
  differ from a full forward beyond ``L``, and its frequencies only grow
  within one model object (a forward at 4L changes a later one at 2L).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

Opts = Mapping[str, Any]


@dataclass(frozen=True)
class Method:
    """One extension method: its summary, source, and the options it accepts (with defaults)."""

    name: str
    summary: str
    source: str
    rope_type: str  # the native transformers rope_type it is written as
    options: Mapping[str, Any]


def _m(name: str, summary: str, source: str, rope_type: str, **options: Any) -> Method:
    return Method(name, summary, source, rope_type, MappingProxyType(options))


#: method name -> :class:`Method` (read-only), in the order of the comparison.
METHODS: Mapping[str, Method] = MappingProxyType(
    {
        m.name: m
        for m in (
            _m("none", "control: RoPE unchanged, positions beyond L extrapolated", "-", "default"),
            _m("pi", "position interpolation: theta_i / s", "Chen et al. 2023, arXiv:2306.15595", "linear"),
            _m("ntk", "static NTK-aware base b s^(D/(D-2))", "bloc97 2023; Peng et al. 2023 Def. 1", "default"),
            _m(
                "ntk_margin",
                "NTK-Margin base b (margin s)^(D/(D-2))",
                "Alfred-40B-1023 (LightOn 2023)",
                "default",
                margin=2.0,
            ),
            _m(
                "dynamic",
                "dynamic NTK: the base follows the current length",
                "emozilla 2023; Peng et al. 2023 Sec. 3.3",
                "dynamic",
                dynamic_factor=None,
            ),
            _m(
                "ntk_parts",
                "NTK-by-parts ramp, no temperature",
                "bloc97 2023; Peng et al. 2023 Sec. 3.2",
                "yarn",
                beta_fast=32.0,
                beta_slow=1.0,
            ),
            _m(
                "yarn",
                "NTK-by-parts ramp + attention temperature 0.1 ln s + 1",
                "Peng et al. 2023, arXiv:2309.00071",
                "yarn",
                beta_fast=32.0,
                beta_slow=1.0,
                attention_factor=None,
            ),
            _m(
                "ntk_yarn",
                "NTK-Margin base + YaRN temperature",
                "Alfred-40B-1023 (LightOn 2023)",
                "yarn",
                margin=2.0,
                attention_factor=None,
            ),
            _m(
                "llama3",
                "Llama 3.1 band-wise scaling",
                "Meta 2024, Llama 3.1",
                "llama3",
                low_freq_factor=1.0,
                high_freq_factor=4.0,
            ),
            _m(
                "theta",
                "explicit new rope_theta (default 40 b)",
                "Lucie-7B (OpenLLM-France 2025): 500k -> 20M",
                "default",
                theta=None,
            ),
        )
    }
)


# ---------------------------------------------------------------- validation


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; known methods: {', '.join(METHODS)}")
    return METHODS[method]


def _options(method: str, opts: Opts) -> dict[str, Any]:
    spec = check_method(method)
    unknown = set(opts) - set(spec.options)
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ValueError(f"opts: {method} does not take {sorted(unknown)} (its options: {allowed})")
    return {**spec.options, **opts}


def check_factor(factor: float) -> float:
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor) or factor <= 1:
        raise ValueError(f"factor must be a number > 1 (the length ratio new/trained), got {factor!r}")
    return float(factor)


def trained_length(config: Any) -> int:
    """The length a (default-RoPE) model was trained at, as its config says: ``max_position_embeddings``."""
    rp = _rope_params(config)
    return int(rp.get("original_max_position_embeddings") or config.max_position_embeddings)


def _rope_params(config: Any) -> dict[str, Any]:
    rp = getattr(config, "rope_parameters", None)
    if not rp or "rope_theta" not in rp:
        raise ValueError(
            f"model: {type(config).__name__} has no rotary embeddings (no rope_parameters with a rope_theta); "
            "context extension applies to RoPE models (Llama/Mistral family)"
        )
    if any(isinstance(v, Mapping) for v in rp.values()):
        raise ValueError("model: per-layer-type rope_parameters are not supported (Llama/Mistral family only)")
    return dict(rp)


def head_dim(config: Any) -> int:
    """The rotary dimension ``D``: head dim times ``partial_rotary_factor``."""
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(hd * _rope_params(config).get("partial_rotary_factor", 1.0))


def check_request(method: str, config: Any, factor: float, trained_len: int, opts: Opts) -> dict[str, Any]:
    """Validate everything :func:`rope_config` needs; returns the full options. Raises ValueError naming the input."""
    options = _options(method, opts)
    check_factor(factor)
    rp = _rope_params(config)
    if rp.get("rope_type", "default") != "default":
        raise ValueError(
            f"model: rope_parameters already has rope_type={rp['rope_type']!r}; extend a model with default RoPE"
        )
    if not isinstance(trained_len, numbers.Integral) or isinstance(trained_len, bool) or trained_len < 2:
        raise ValueError(f"trained_len must be an integer >= 2, got {trained_len!r}")
    known = trained_length(config)
    if trained_len > known:
        raise ValueError(
            f"trained_len ({trained_len}) is larger than the model's trained length (max_position_embeddings={known})"
        )
    if head_dim(config) < 4:
        raise ValueError(f"model: rotary dimension {head_dim(config)} is too small (need >= 4)")
    for key in ("margin",):
        if key in options and not options[key] >= 1:
            raise ValueError(f"opts.{key} must be >= 1, got {options[key]}")
    if method == "theta" and options["theta"] is not None and not options["theta"] > 0:
        raise ValueError(f"opts.theta must be > 0, got {options['theta']}")
    if method in ("ntk_parts", "yarn") and not options["beta_fast"] > options["beta_slow"] > 0:
        raise ValueError(f"opts: need beta_fast > beta_slow > 0, got {options['beta_fast']}, {options['beta_slow']}")
    if method == "dynamic" and options["dynamic_factor"] is not None and not options["dynamic_factor"] >= 1:
        raise ValueError(f"opts.dynamic_factor must be >= 1, got {options['dynamic_factor']}")
    if method == "llama3" and not options["high_freq_factor"] > options["low_freq_factor"] > 0:
        raise ValueError("opts: llama3 needs high_freq_factor > low_freq_factor > 0")
    return options


# ---------------------------------------------------------------- the rope_parameters of each method


def ntk_base(base: float, factor: float, dim: int) -> float:
    """NTK-aware base ``b s^(D/(D-2))`` (bloc97)."""
    return float(base * factor ** (dim / (dim - 2)))


def yarn_temperature(factor: float) -> float:
    """YaRN's ``sqrt(1/t) = 0.1 ln s + 1``: the factor q and k are each multiplied by."""
    return float(0.1 * math.log(factor) + 1.0)


def rope_config(method: str, base_config: Any, factor: float, trained_len: int, **opts: Any) -> dict[str, Any]:
    """The config fields that make ``base_config``'s model the ``method`` extension to ``factor x trained_len``.

    Returns ``{"rope_parameters": {...}, "max_position_embeddings": int,
    "context_extension": {...}}`` (the last one is a record of the request,
    saved into config.json for model cards). ``base_config`` is the trained
    model's config (default RoPE). Nothing is modified.
    """
    o = check_request(method, base_config, factor, trained_len, opts)
    s, L, D = float(factor), int(trained_len), head_dim(base_config)  # noqa: N806
    b = float(_rope_params(base_config)["rope_theta"])
    keep = {k: v for k, v in _rope_params(base_config).items() if k == "partial_rotary_factor"}
    target = int(math.ceil(s * L))
    max_pos = target
    if method == "none":
        rp = {"rope_type": "default", "rope_theta": b}
    elif method == "pi":
        rp = {"rope_type": "linear", "rope_theta": b, "factor": s}
    elif method == "ntk":
        rp = {"rope_type": "default", "rope_theta": ntk_base(b, s, D)}
    elif method == "ntk_margin":
        rp = {"rope_type": "default", "rope_theta": ntk_base(b, o["margin"] * s, D)}
    elif method == "theta":
        rp = {"rope_type": "default", "rope_theta": float(o["theta"] or 40.0 * b)}
    elif method == "dynamic":
        rp = {"rope_type": "dynamic", "rope_theta": b, "factor": float(o["dynamic_factor"] or s)}
        max_pos = L  # transformers' dynamic reads max_position_embeddings as the original length
    elif method in ("ntk_parts", "yarn"):
        af = 1.0 if method == "ntk_parts" else float(o["attention_factor"] or yarn_temperature(s))
        rp = {
            "rope_type": "yarn",
            "rope_theta": b,
            "factor": s,
            "original_max_position_embeddings": L,
            "attention_factor": af,
            "beta_fast": float(o["beta_fast"]),
            "beta_slow": float(o["beta_slow"]),
        }
    elif method == "ntk_yarn":
        af = float(o["attention_factor"] or yarn_temperature(s))
        # factor 1.0: YaRN interpolates nothing, so the frequencies are exactly rope_theta's and neither the ramp
        # nor original_max_position_embeddings plays a role; the latter is set to max_position_embeddings so that
        # transformers' check (factor == max_position_embeddings / original_max_position_embeddings) holds quietly.
        rp = {
            "rope_type": "yarn",
            "rope_theta": ntk_base(b, o["margin"] * s, D),
            "factor": 1.0,
            "original_max_position_embeddings": target,
            "attention_factor": af,
        }
    elif method == "llama3":
        rp = {
            "rope_type": "llama3",
            "rope_theta": b,
            "factor": s,
            "original_max_position_embeddings": L,
            "low_freq_factor": float(o["low_freq_factor"]),
            "high_freq_factor": float(o["high_freq_factor"]),
        }
    else:  # pragma: no cover (check_request covers it)
        raise ValueError(f"method: unknown {method!r}")
    record = {
        "method": method,
        "factor": s,
        "trained_len": L,
        "target_len": target,
        "opts": {k: v for k, v in o.items() if v is not None},
    }
    return {"rope_parameters": {**rp, **keep}, "max_position_embeddings": max_pos, "context_extension": record}


# ---------------------------------------------------------------- applying it to a model


def rotary_modules(model: Any) -> list[tuple[Any, str, Any]]:
    """``(parent, attribute, module)`` of every rotary-embedding module (one holding an ``inv_freq`` buffer)."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if "inv_freq" in dict(child.named_buffers(recurse=False)):
                found.append((parent, name, child))
    return found


def _apply_fields(config: Any, fields: Mapping[str, Any]) -> None:
    config.rope_parameters = copy.deepcopy(dict(fields["rope_parameters"]))
    config.max_position_embeddings = int(fields["max_position_embeddings"])
    config.context_extension = copy.deepcopy(dict(fields["context_extension"]))
    config.validate_rope()


def extend(model: Any, method: str, factor: float, trained_len: int, **opts: Any) -> Any:
    """A NEW model (the input is untouched): ``model`` with ``method``'s config and freshly built rotary embeddings.

    A config edit alone changes nothing (``inv_freq`` is built at
    construction), so every rotary module is rebuilt from the new config.
    """
    if not rotary_modules(model):
        raise ValueError(f"model: {type(model).__name__} has no rotary embeddings (no module with an inv_freq buffer)")
    fields = rope_config(method, model.config, factor, trained_len, **opts)
    new = copy.deepcopy(model)
    _apply_fields(new.config, fields)  # submodules share this (deep-copied) config object
    for parent, name, old in rotary_modules(new):
        try:
            fresh = type(old)(config=new.config)
        except TypeError as e:  # pragma: no cover (another family's rotary signature)
            raise ValueError(f"model: cannot rebuild {type(old).__name__} from the config ({e})") from None
        setattr(parent, name, fresh.to(old.inv_freq.device))
    new.train(model.training)
    return new


def extend_dir(
    src_dir: str | Path, dst_dir: str | Path, method: str, factor: float, trained_len: int, **opts: Any
) -> Path:
    """Write ``dst_dir``: the model of ``src_dir`` extended by ``method`` (safetensors), with its tokenizer.

    Everything is validated from ``src_dir``'s config before anything is
    loaded or written; the model is loaded with the new config, so its
    rotary embeddings are built from it, and saved atomically. The result
    loads with plain ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import AutoConfig, AutoTokenizer

    from warmstart.model import load_model, save_model

    src_dir = Path(src_dir)
    config = AutoConfig.from_pretrained(src_dir)
    fields = rope_config(method, config, factor, trained_len, **opts)
    _apply_fields(config, fields)
    model = load_model(src_dir, config=config)
    if not rotary_modules(model):
        raise ValueError(f"model: {type(model).__name__} has no rotary embeddings")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src_dir)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return save_model(model, tokenizer, dst_dir)


# ---------------------------------------------------------------- closed forms (float64, from the formulas)


def closed_form(
    method: str, head_dim: int, base: float, factor: float, trained_len: int, **opts: Any
) -> tuple[np.ndarray, float]:
    """``(inv_freq, attention_scaling)`` of ``method``, computed in float64 from the published formulas.

    Independent of transformers' code; ``attention_scaling`` is the factor
    cos and sin (so q and k each) are multiplied by. ``dynamic`` takes
    ``seq_len`` (the current length; default ``factor x trained_len``).
    ``yarn``/``ntk_parts`` use the reference implementation's ramp (linear
    in the frequency index between ``floor(d(beta_fast))`` and
    ``ceil(d(beta_slow))``, where ``d(r) = D ln(L / (2 pi r)) / (2 ln b)`` is
    the index whose wavelength fits ``r`` times in ``L``), which is what
    the YaRN paper's ``gamma(r)`` is implemented as.
    """
    seq_len = opts.pop("seq_len", None)
    o = _options(method, opts)
    s, L, D, b = check_factor(factor), int(trained_len), int(head_dim), float(base)
    if D < 4 or D % 2:
        raise ValueError(f"head_dim must be even and >= 4, got {head_dim}")
    i = np.arange(D // 2, dtype=np.float64)

    def freqs(bb: float) -> np.ndarray:
        return np.exp(-(2.0 * i / D) * math.log(bb))

    theta = freqs(b)
    if method == "none":
        return theta, 1.0
    if method == "pi":
        return theta / s, 1.0
    if method == "ntk":
        return freqs(b * s ** (D / (D - 2))), 1.0
    if method in ("ntk_margin", "ntk_yarn"):
        out = freqs(b * (o["margin"] * s) ** (D / (D - 2)))
        return out, (1.0 if method == "ntk_margin" else float(o["attention_factor"] or 0.1 * math.log(s) + 1.0))
    if method == "theta":
        return freqs(float(o["theta"] or 40.0 * b)), 1.0
    if method == "dynamic":
        f = float(o["dynamic_factor"] or s)
        length = max(int(seq_len if seq_len is not None else math.ceil(s * L)), L)
        return freqs(b * (f * length / L - (f - 1.0)) ** (D / (D - 2))), 1.0
    if method in ("ntk_parts", "yarn"):

        def d(r: float) -> float:
            return D * math.log(L / (2.0 * math.pi * r)) / (2.0 * math.log(b))

        lo, hi = max(math.floor(d(o["beta_fast"])), 0), min(math.ceil(d(o["beta_slow"])), D - 1)
        if lo == hi:
            hi += 0.001
        gamma = np.clip((i - lo) / (hi - lo), 0.0, 1.0)  # 0: keep (extrapolate), 1: interpolate by s
        out = theta * (1.0 - gamma) + (theta / s) * gamma
        return out, (1.0 if method == "ntk_parts" else float(o["attention_factor"] or 0.1 * math.log(s) + 1.0))
    if method == "llama3":
        wavelen = 2.0 * math.pi / theta
        lo_wl, hi_wl = L / o["low_freq_factor"], L / o["high_freq_factor"]
        smooth = (L / wavelen - o["low_freq_factor"]) / (o["high_freq_factor"] - o["low_freq_factor"])
        mid = (1.0 - smooth) * theta / s + smooth * theta
        out = np.where(wavelen < hi_wl, theta, np.where(wavelen > lo_wl, theta / s, mid))
        return out, 1.0
    raise ValueError(f"method: unknown {method!r}")  # pragma: no cover


def model_rope(model: Any) -> tuple[np.ndarray, float]:
    """``(inv_freq, attention_scaling)`` the model's (first) rotary module holds now, as float64."""
    mods = rotary_modules(model)
    if not mods:
        raise ValueError(f"model: {type(model).__name__} has no rotary embeddings")
    rot = mods[0][2]
    return rot.inv_freq.detach().double().cpu().numpy(), float(rot.attention_scaling)


def method_table() -> list[dict[str, Any]]:
    """One row per method (name, summary, source, native rope_type, options): for reports."""
    return [
        {
            "method": m.name,
            "summary": m.summary,
            "source": m.source,
            "rope_type": m.rope_type,
            "options": dict(m.options),
        }
        for m in METHODS.values()
    ]


def extension_fn(method: str) -> Callable[..., Any]:
    """``lambda model, factor, trained_len, **opts: extend(model, method, ...)`` for a registry loop."""
    check_method(method)
    return lambda model, factor, trained_len, **opts: extend(model, method, factor, trained_len, **opts)
