"""Hugging Face `config.json` -> one dataclass the model is built from.

The families differ only in a few switches: qwen2 has q/k/v biases, qwen3 normalizes q and k per
head (and sets head_dim itself), mistral may slide its attention window, llama 3.1+ rescales rope.
"""

import dataclasses
import math
import os
from typing import Optional

import torch

from .errors import EngineError, read_json_object

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


@dataclasses.dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict]
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool  # q, k and v (and o for llama's attention_bias)
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    sliding_window: Optional[int]
    torch_dtype: str
    raw: dict  # the config.json as read, written back unchanged next to merged or trained weights


def from_dict(raw, source="config.json"):
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise EngineError("unsupported_model_type",
                          f"{source}: model_type {model_type!r} is not supported (supported: {', '.join(FAMILIES)})")

    def need(key):
        if key not in raw or raw[key] is None:
            raise EngineError("invalid_model", f"{source}: missing field {key!r}")
        return raw[key]

    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    # Qwen3Config's own default head_dim is 128, not hidden_size / heads.
    head_dim = raw.get("head_dim") or (128 if model_type == "qwen3" else hidden // heads)
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise EngineError("invalid_model", f"{source}: hidden_act {act!r} is not supported (only silu)")
    if model_type == "qwen2":
        sliding = raw.get("sliding_window") if raw.get("use_sliding_window") else None
    elif model_type == "mistral":
        sliding = raw.get("sliding_window")
    else:
        sliding = None
    attention_bias = bool(raw.get("attention_bias", False)) or model_type == "qwen2"
    # transformers >= 5 writes rope_theta and the scaling together as `rope_parameters`.
    rope = raw.get("rope_parameters") or {}
    rope_theta = raw.get("rope_theta") or rope.get("rope_theta") or 10000.0
    rope_scaling = raw.get("rope_scaling") or {k: v for k, v in rope.items() if k != "rope_theta"} or None
    config = ModelConfig(
        model_type=model_type,
        vocab_size=need("vocab_size"),
        hidden_size=hidden,
        intermediate_size=need("intermediate_size"),
        num_hidden_layers=need("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=raw.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=attention_bias,
        o_bias=bool(raw.get("attention_bias", False)) and model_type != "qwen2",
        mlp_bias=bool(raw.get("mlp_bias", False)),
        qk_norm=model_type == "qwen3",
        sliding_window=sliding,
        torch_dtype=raw.get("torch_dtype") or raw.get("dtype") or "float32",
        raw=raw,
    )
    if heads % config.num_key_value_heads:
        raise EngineError("invalid_model", f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {config.num_key_value_heads}")
    rope_inv_freq(config)  # rejects an unsupported rope_scaling now rather than mid-build
    return config


def load(folder_or_file):
    path = folder_or_file
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    return from_dict(read_json_object(path, "invalid_model"), path)


def rope_inv_freq(config):
    """Rotary inverse frequencies, rescaled as transformers does for `linear` and `llama3`."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, blended, scaled)
    raise EngineError("invalid_model", f"config.json: rope_scaling type {kind!r} is not supported (default, linear, llama3)")
