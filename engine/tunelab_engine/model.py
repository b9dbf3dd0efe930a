"""The Llama-family decoder, read top to bottom: a ModelConfig in, modules under transformers'
parameter names (so checkpoints and PEFT adapters load by name), final hidden states out.

The families are switches over the same blocks (config.py): qwen2's q/k/v biases, qwen3's per-head
q/k RMSNorm and own head_dim, mistral's sliding window, llama3's rope rescaling, tied embeddings.

How attention reaches its keys is the caller's: `forward(..., attend=...)` takes one of
attention.py's (packed training examples) or a KV-cache view (kv_cache.py, serving's decode), and
the layers are the same for all of them, so training and serving run these modules and no others.
Projections may be fused by whoever runs the model (lora.fuse, decode.fuse): `qkv` and `gate_up`
then stand in for the separate projections, whose parameters stay where they are.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import config as config_mod
from .attention import causal
from .errors import EngineError


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm: normalized in fp32, scaled in the input's dtype."""

    def __init__(self, dim, eps, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x, cos, sin):
    """x: [B, T, heads, D]; cos, sin: [B, T, 1, D] in x's dtype."""
    return x * cos + rotate_half(x) * sin


class Rotary(nn.Module):
    """Rope on q and k; a module (holding no weights) so that serving can put a kernel in its place."""

    def forward(self, q, k, cos, sin):
        return rope(q, cos, sin), rope(k, cos, sin)


class Attention(nn.Module):
    def __init__(self, c, index, device=None):
        super().__init__()
        self.index, self.head_dim, self.window = index, c.head_dim, c.sliding_window
        heads, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, heads, bias=c.attention_bias, device=device)
        self.k_proj = nn.Linear(c.hidden_size, kv, bias=c.attention_bias, device=device)
        self.v_proj = nn.Linear(c.hidden_size, kv, bias=c.attention_bias, device=device)
        self.o_proj = nn.Linear(heads, c.hidden_size, bias=c.o_bias, device=device)
        self.rotary = Rotary()
        if c.qk_norm:  # qwen3 normalizes each head before rope
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, device)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, device)

    def forward(self, x, cos, sin, attend):
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(x).split(self.qkv.sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = (z.unflatten(-1, (-1, self.head_dim)) for z in (q, k, v))
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(q, k, cos, sin)
        out = attend(self.index, q, k, v, self.window)
        return self.o_proj(out.flatten(-2))


class MLP(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias, device=device)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias, device=device)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias, device=device)

    def forward(self, x):
        if hasattr(self, "gate_up"):
            gate, up = self.gate_up(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, c, index, device=None):
        super().__init__()
        self.self_attn = Attention(c, index, device)
        self.mlp = MLP(c, device)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, device)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, device)

    def forward(self, x, cos, sin, attend):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        # Left uninitialized: build() and init_weights fill every weight, and nn.Embedding's own
        # normal init on the meta device imports torch._dynamo, seconds of every engine start.
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, _weight=torch.empty(c.vocab_size, c.hidden_size, device=device))
        self.layers = nn.ModuleList(DecoderLayer(c, i, device) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, device)


class Transformer(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.config = c
        self.model = Backbone(c, device)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False, device=device)
        self.gradient_checkpointing = False
        # Kept out of the buffers so that casting the model to bf16 never rounds the frequencies.
        self.inv_freq = config_mod.rope_inv_freq(c)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def rope_angles(self, position_ids, dtype):
        """cos and sin [B, T, 1, head_dim], computed in fp32 as transformers does, then cast."""
        if self.inv_freq.device != position_ids.device:
            self.inv_freq = self.inv_freq.to(position_ids.device)
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids, position_ids=None, attend=None):
        """Final hidden states [B, T, hidden]; `logits` turns (some of) them into vocabulary scores.

        position_ids [B, T] (None: 0..T-1 in every row); attend: see attention.py (None: causal
        attention within each row)."""
        b, t = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.model.embed_tokens(input_ids)
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        cos, sin = self.rope_angles(position_ids, dtype)
        attend = attend or causal
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, attend, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attend)
        return self.model.norm(x)

    def logits(self, hidden):
        return self.lm_head(hidden)


def init_weights(model, seed, std=0.02):
    """Transformers' initialization (normal(0, initializer_range), zero biases, unit norms), seeded."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def state_dict_for_save(model, tensors=None):
    """Base weights under Hugging Face's names (of `tensors`, a state dict gathered from the model's
    shards, or of the model); a tied lm_head is left out, as transformers does."""
    sd = {k: v for k, v in (model.state_dict() if tensors is None else tensors).items() if ".lora_" not in k}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def build(c, tensors, dtype=torch.float32, device="cpu"):
    """A model holding `tensors` (name -> tensor, as read from safetensors) in `dtype` on `device`."""
    model = Transformer(c, device="meta")
    model.to_empty(device=device)
    if c.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.to(dtype)
    expected = dict(model.state_dict())
    if c.tie_word_embeddings:
        expected.pop("lm_head.weight")
    # Older checkpoints carry rope buffers; rope is recomputed from the config instead.
    given = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected) - {"lm_head.weight"})
    if missing or unexpected:
        raise EngineError("invalid_model", "weights do not match config.json: "
                          + (f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} " if missing else "")
                          + (f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}" if unexpected else ""))
    with torch.no_grad():
        for name, target in expected.items():
            if tuple(given[name].shape) != tuple(target.shape):
                raise EngineError("invalid_model", f"weight {name} has shape {list(given[name].shape)}, config.json implies {list(target.shape)}")
            target.copy_(given[name])
    return model
