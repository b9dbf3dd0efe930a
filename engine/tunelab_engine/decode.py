"""Serving's batched, cached decode: the model's own modules (model.py) run over a KV cache.

A new request is prefilled alone (its prompt in pieces of PREFILL_CHUNK tokens, each writing its
keys and values to the request's cache row and attending to the row so far, so a long prompt never
builds a [heads, T, T] score tensor); then every step runs one new token per active row through one
batched forward, each row attending to its own cache row (kv_cache.py). No protocol here (serve.py).

`fuse` swaps the frozen projections for `RowLinear`s at load: q/k/v and gate/up become one product
each (their weights concatenated once; the originals become views, so memory does not grow), and the
rows of a batch that use a LoRA adapter get its update beside the frozen weights (adapters.py), so one batch mixes adapters and the base model.
"""

import torch
from torch import nn

from .adapters import apply_lora
from .kernels import frozen_linear, native_modules
from .kv_cache import KVCache

PREFILL_CHUNK = 512  # prompt tokens a prefill forward takes at once


class Rows:
    """The adapters of the rows in the forward being run: [(adapter, row index tensor or None for
    all rows)], or None; read by every RowLinear."""

    lora = None


class RowLinear(nn.Module):
    """A frozen projection: the base product, plus each adapter's update of fused projection `key`
    of layer `layer` for the rows using it. `sizes`: the parts of a fused output (q, k, v)."""

    def __init__(self, weight, bias, rows, layer=None, key=None, sizes=None):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.rows, self.layer, self.key, self.sizes = rows, layer, key, sizes
        self.product = frozen_linear(weight, bias)

    def forward(self, x):
        out = self.product(x)
        if self.rows.lora and self.key:
            apply_lora(out, x, self.rows.lora, self.layer, self.key)
        return out


def _concat(linears):
    """One weight (and bias) for projections of the same input; theirs become views of it."""
    weight = torch.cat([m.weight.detach() for m in linears])
    bias = torch.cat([m.bias.detach() for m in linears]) if linears[0].bias is not None else None
    start = 0
    for m in linears:
        size = m.weight.shape[0]
        m.weight.data = weight[start:start + size]
        if bias is not None:
            m.bias.data = bias[start:start + size]
        start += size
    return weight, bias, [m.weight.shape[0] for m in linears]


def fuse(model, rows):
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        weight, bias, sizes = _concat([attn.q_proj, attn.k_proj, attn.v_proj])
        attn.qkv = RowLinear(weight, bias, rows, i, "qkv", sizes)
        attn.o_proj = RowLinear(attn.o_proj.weight.detach(), _detach(attn.o_proj.bias), rows, i, "o")
        weight, bias, sizes = _concat([mlp.gate_proj, mlp.up_proj])
        mlp.gate_up = RowLinear(weight, bias, rows, i, "gate_up", sizes)
        mlp.down_proj = RowLinear(mlp.down_proj.weight.detach(), _detach(mlp.down_proj.bias), rows, i, "down")
    model.lm_head = RowLinear(model.lm_head.weight.detach(), None, rows)


def _detach(bias):
    return None if bias is None else bias.detach()


class Decoder:
    """The model, its cache and the two forwards serving makes."""

    def __init__(self, model, max_batch):
        self.model = model
        c = self.config = model.config
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.context_length = c.max_position_embeddings
        for p in model.parameters():
            p.requires_grad_(False)
        self.rows = Rows()
        fuse(model, self.rows)
        lib = native_modules(model)
        # On CUDA the cache is in the model's dtype. On CPU torch's cached attention is fp32 (tiny
        # bf16 attention products are slow there), and so is its cache; the C kernel's attention
        # computes in fp32 from a bf16 cache, which holds a bf16 model's keys and values exactly.
        if self.device.type != "cpu":
            cache_dtype = self.dtype
        else:
            cache_dtype = torch.bfloat16 if lib is not None and self.dtype == torch.bfloat16 else torch.float32
        self.cache = KVCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, cache_dtype, self.device,
                             max_batch, self.context_length, lib)

    def prefill(self, row, prompt, adapter):
        """Runs `prompt` alone, storing its keys and values in cache row `row`; its last logits [vocab] (fp32)."""
        self.rows.lora = [(adapter, None)] if adapter is not None else None
        for start in range(0, len(prompt), PREFILL_CHUNK):
            piece = prompt[start:start + PREFILL_CHUNK]
            ids = torch.tensor([piece], dtype=torch.int64, device=self.device)
            positions = torch.arange(start, start + len(piece), device=self.device)[None]
            hidden = self.model(ids, positions, self.cache.prefill(row, start))
        return self.model.logits(hidden[:, -1]).float()[0]

    def step(self, tokens, lengths, lora_rows):
        """One token for each of cache rows 0..B-1: tokens[i] sits at position lengths[i]; logits [B, vocab] (fp32)."""
        self.rows.lora = lora_rows
        ids = torch.tensor(tokens, dtype=torch.int64, device=self.device)[:, None]
        positions = torch.tensor(lengths, dtype=torch.int64, device=self.device)
        hidden = self.model(ids, positions[:, None], self.cache.step(positions))
        return self.model.logits(hidden[:, -1]).float()
