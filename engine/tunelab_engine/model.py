"""The Llama-family decoder, with Hugging Face's module names so checkpoints load by name.

Rows may hold several packed examples: `seq_ids` tells them apart, attention stays inside each
example, and `position_ids` restart at 0 for each. Attention takes its keys and values as arguments,
so a KV cache can later be passed in without changing the layers.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import config as config_mod
from .errors import EngineError

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
EXAMPLE_MULTIPLE = 32  # see Transformer.forward


class _RMSNorm(torch.autograd.Function):
    """weight * x / rms(x) for bf16 x, with the mean of squares accumulated in fp32 but the
    [tokens, hidden] tensor never copied to fp32 and back (two slow passes on CPU); results differ
    from casting by rounding. The backward is written out: autograd's, through pow, mean, rsqrt
    and two products, makes about twice as many passes over the activations."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True, dtype=torch.float32) + eps).to(x.dtype)
        ctx.save_for_backward(x, weight, scale)
        return weight * (x * scale)

    @staticmethod
    def backward(ctx, grad):
        x, weight, scale = ctx.saved_tensors
        normed = x * scale
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * normed).reshape(-1, x.shape[-1]).sum(0, dtype=torch.float32).to(weight.dtype)
        # n = x * s with s = rms(x)^-1: dx = s * (dn - n * mean(dn * n))
        grad_n = grad * weight
        dot = (grad_n * normed).mean(-1, keepdim=True, dtype=torch.float32).to(x.dtype)
        grad_x = torch.addcmul(grad_n, normed, dot, value=-1).mul_(scale)
        return grad_x, grad_w, None


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device))

    def forward(self, x):
        if x.dtype == torch.float32:
            # Exactly transformers' LlamaRMSNorm.
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        return _RMSNorm.apply(x, self.weight, self.eps)


class _Rope(torch.autograd.Function):
    """Transformers' x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[half:], x[:half]), in
    two passes (a product, then both halves' products added in place) instead of five (neg, cat,
    two products, a sum); the same for the gradient, as rotate_half's transpose is its negative."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        half = x.shape[-1] // 2
        out = x * cos
        out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
        out[..., half:].addcmul_(x[..., :half], sin[..., half:])
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        half = grad.shape[-1] // 2
        out = grad * cos
        out[..., :half].addcmul_(grad[..., half:], sin[..., half:])
        out[..., half:].addcmul_(grad[..., :half], sin[..., :half], value=-1)
        return out, None, None


def rope(x, cos, sin):
    """x: [B, T, heads, D]; cos, sin: [B, T, 1, D], already in x's dtype."""
    return _Rope.apply(x, cos, sin)


def attention(q, k, v, mask):
    """q: [B, H, T, D]; k, v: [B, Hkv, S, D]. mask: with SDPA, [B, 1, T, S] bool (True = may
    attend) or None for plain causal attention; without, an additive [B, 1, T, S] bias (see
    `attention_bias`)."""
    b, h, t, d = q.shape
    kv_heads, s = k.shape[1], k.shape[2]
    groups = h // kv_heads
    if HAS_SDPA:
        if groups > 1:
            k = k[:, :, None].expand(b, kv_heads, groups, s, d).reshape(b, h, s, d)
            v = v[:, :, None].expand(b, kv_heads, groups, s, d).reshape(b, h, s, d)
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # Each key/value head serves `groups` query heads (heads h * groups .. h * groups + groups - 1,
    # as transformers' repeat_kv orders them): their queries become one taller matrix against the
    # shared keys, so k and v are never repeated and each bmm is `groups` times larger.
    # Scaling q rather than the scores touches T*D instead of T*T elements.
    q = (q * d ** -0.5).reshape(b * kv_heads, groups * t, d)
    scores = torch.bmm(q, k.reshape(b * kv_heads, s, d).transpose(1, 2))
    # The mask as an addition: one pass, and its gradient passes through unchanged (masked_fill
    # costs a copy and a fill each way).
    scores = scores.view(b, kv_heads, groups, t, s) + mask[:, :, None]
    # Softmax accumulates in fp32 inside the kernel for bf16 too, so no fp32 copy of the scores.
    probs = torch.softmax(scores, dim=-1).view(b * kv_heads, groups * t, s)
    return torch.bmm(probs, v.reshape(b * kv_heads, s, d)).view(b, h, t, d)


_ATTENTION_WORKER = None


def _one_thread(work, items):
    """work(item) for each item, on one OpenMP thread each: this thread and, with two or more
    threads allowed, a helper thread that takes about half of the items (by `item[-1]`, a cost).
    Their results are returned in order. Torch releases the GIL inside each op, so the two run
    side by side; every op stays on its own thread instead of waking the other (see
    _PerExampleAttention)."""
    global _ATTENTION_WORKER
    threads = torch.get_num_threads()
    results = [None] * len(items)
    mine, theirs = list(range(len(items))), []
    if threads > 1 and len(items) > 1:
        load = [0, 0]
        mine = []
        for i in sorted(range(len(items)), key=lambda i: -items[i][-1]):
            (mine if load[0] <= load[1] else theirs).append(i)
            load[0 if load[0] <= load[1] else 1] += items[i][-1]
    if theirs and _ATTENTION_WORKER is None:
        import concurrent.futures
        _ATTENTION_WORKER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="attention")

    def run(indices):
        with torch.no_grad():
            for i in indices:
                results[i] = work(items[i])

    def helper(indices):
        torch.set_num_threads(1)
        run(indices)

    torch.set_num_threads(1)
    try:
        future = _ATTENTION_WORKER.submit(helper, theirs) if theirs else None
        run(mine)
        if future is not None:
            future.result()
    finally:
        torch.set_num_threads(threads)
    return results


class _PerExampleAttention(torch.autograd.Function):
    """Attention one example at a time over packed q, k, v ([1, N, heads, D]) without SDPA; the
    output is [1, N, heads * D]. `examples` holds (start, n, width, bias) per example: each is laid
    out padded to `width` with its padded rows zeroed, and `bias` is its additive mask.

    Each example's ~10 small bmm and softmax calls run on one OpenMP thread: with two, each of
    them wakes the sleeping OpenMP thread (OMP_WAIT_POLICY=PASSIVE); a layer's attention forward
    and backward took 34-39 ms at 2 threads against 18-20 ms at 1 (SmolLM2 shape, 9 examples).
    The examples are shared out between this thread and a helper thread (`_one_thread`), so both
    cores work without waking each other per op. The backward is written out (the same products
    autograd would form) so that it runs the same way, and each example's padded copy is made
    once, transposed into the bmm layout in the same pass, instead of a pad and then a reshape copy."""

    @staticmethod
    def forward(ctx, q, k, v, examples):
        _, n_tokens, h, d = q.shape
        kv_heads = k.shape[2]
        groups = h // kv_heads
        scale = d ** -0.5
        out = torch.empty(1, n_tokens, h, d, dtype=q.dtype, device=q.device)

        def one(item):
            start, n, width, bias, _ = item
            qs = q.new_empty(kv_heads, groups, width, d)
            torch.mul(q[0, start:start + n].view(n, kv_heads, groups, d).permute(1, 2, 0, 3), scale, out=qs[:, :, :n])
            ks = k.new_empty(kv_heads, width, d)
            vs = v.new_empty(kv_heads, width, d)
            ks[:, :n] = k[0, start:start + n].transpose(0, 1)
            vs[:, :n] = v[0, start:start + n].transpose(0, 1)
            if width > n:
                qs[:, :, n:].zero_()
                ks[:, n:].zero_()
                vs[:, n:].zero_()
            qs = qs.view(kv_heads, groups * width, d)
            scores = torch.bmm(qs, ks.transpose(1, 2)).view(kv_heads, groups, width, width) + bias[0, :, None]
            probs = torch.softmax(scores, dim=-1).view(kv_heads, groups * width, width)
            o = torch.bmm(probs, vs).view(kv_heads, groups, width, d)
            out[0, start:start + n].view(n, kv_heads, groups, d).copy_(o[:, :, :n].permute(2, 0, 1, 3))
            return qs, ks, vs, probs

        saved = _one_thread(one, [(start, n, width, bias, width * width) for start, n, width, bias in examples])
        ctx.save_for_backward(*[t for four in saved for t in four])
        ctx.examples = [(start, n, width) for start, n, width, _ in examples]
        ctx.shapes = (n_tokens, h, kv_heads, d)
        return out.view(1, n_tokens, h * d)

    @staticmethod
    def backward(ctx, grad):
        n_tokens, h, kv_heads, d = ctx.shapes
        groups = h // kv_heads
        scale = d ** -0.5
        saved = ctx.saved_tensors
        grad = grad.view(1, n_tokens, h, d)
        grad_q = torch.empty_like(grad)
        grad_k = grad.new_empty(1, n_tokens, kv_heads, d)
        grad_v = grad.new_empty(1, n_tokens, kv_heads, d)

        def one(item):
            i, start, n, width, _ = item
            qs, ks, vs, probs = saved[4 * i:4 * i + 4]
            g = grad.new_zeros(kv_heads, groups, width, d)
            g[:, :, :n] = grad[0, start:start + n].view(n, kv_heads, groups, d).permute(1, 2, 0, 3)
            g = g.view(kv_heads, groups * width, d)
            grad_probs = torch.bmm(g, vs.transpose(1, 2))
            gv = torch.bmm(probs.transpose(1, 2), g)
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            gq = torch.bmm(grad_scores, ks).view(kv_heads, groups, width, d)
            gk = torch.bmm(grad_scores.transpose(1, 2), qs)
            torch.mul(gq[:, :, :n].permute(2, 0, 1, 3), scale,
                      out=grad_q[0, start:start + n].view(n, kv_heads, groups, d))
            grad_k[0, start:start + n] = gk[:, :n].transpose(0, 1)
            grad_v[0, start:start + n] = gv[:, :n].transpose(0, 1)

        _one_thread(one, [(i, start, n, width, width * width) for i, (start, n, width) in enumerate(ctx.examples)])
        return grad_q, grad_k, grad_v, None


def attention_bias(mask, t, s, dtype, device):
    """The additive form of a bool mask (0 where attention may go, -inf elsewhere); None: causal."""
    if mask is None:
        mask = torch.ones(t, s, dtype=torch.bool, device=device).tril(s - t)[None, None]
    return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(~mask, float("-inf"))


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up from one [..., 2 * I] tensor holding gate then up (lora.FusedLoRA's output),
    with a hand-written backward: on CPU torch's bf16 silu and silu_backward kernels are 2-4x
    slower than the multiplications and sigmoid they are made of. Both halves of the gradient are
    written into one tensor, so the fused projection's backward gets it without a cat."""

    @staticmethod
    def forward(ctx, gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        ctx.save_for_backward(gate_up, sig)
        return (gate * sig).mul_(up)

    @staticmethod
    def backward(ctx, grad):
        gate_up, sig = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_in = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_in.chunk(2, dim=-1)
        silu = gate * sig
        torch.mul(grad, silu, out=grad_up)
        # d silu / d gate = sig * (1 + gate * (1 - sig)) = silu - silu * sig + sig
        slope = silu.addcmul_(silu, sig, value=-1).add_(sig)
        torch.mul(grad, up, out=grad_gate).mul_(slope)
        return grad_in


def swiglu(gate_up):
    """silu(gate) * up for gate_up = [..., gate | up]."""
    if gate_up.dtype == torch.float32:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up
    return _SwiGLU.apply(gate_up)


class Attention(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.heads * c.head_dim, bias=c.attention_bias, device=device)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * c.head_dim, bias=c.attention_bias, device=device)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * c.head_dim, bias=c.attention_bias, device=device)
        self.o_proj = nn.Linear(self.heads * c.head_dim, c.hidden_size, bias=c.o_bias, device=device)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, device)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, device)

    def forward(self, x, cos, sin, mask, layout=None):
        b, t, _ = x.shape
        if hasattr(self, "qkv"):  # lora.fuse
            q, k, v = self.qkv(x).split(self.qkv.sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(b, t, self.heads, self.head_dim)
        k = k.reshape(b, t, self.kv_heads, self.head_dim)
        v = v.reshape(b, t, self.kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):  # qwen3 normalizes each head before rope
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if layout is not None and layout.lengths is not None:
            # One attention per example: q, k, v split along the tokens (views, no copies), no
            # padded positions, and the outputs joined in one copy. `mask` holds one per example.
            # Each is padded to the width its mask was built for (see Transformer.forward).
            if not HAS_SDPA:
                examples, start = [], 0
                for n, (width, m) in zip(layout.lengths, mask):
                    examples.append((start, n, width, m))
                    start += n
                return self.o_proj(_PerExampleAttention.apply(q, k, v, examples))
            outs = []
            for qe, ke, ve, (width, m) in zip(q.split(layout.lengths, 1), k.split(layout.lengths, 1),
                                              v.split(layout.lengths, 1), mask):
                n = qe.shape[1]
                if width > n:
                    qe, ke, ve = (F.pad(z, (0, 0, 0, 0, 0, width - n)) for z in (qe, ke, ve))
                out = attention(qe.transpose(1, 2), ke.transpose(1, 2), ve.transpose(1, 2), m)
                outs.append(out[:, :, :n].transpose(1, 2))
            return self.o_proj(torch.cat(outs, dim=1).reshape(b, t, self.heads * self.head_dim))
        if layout is not None:
            q, k, v = layout.to_rows(q[0]), layout.to_rows(k[0]), layout.to_rows(v[0])
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], self.heads * self.head_dim)
        if layout is not None:
            out = layout.from_rows(out)[None]
        return self.o_proj(out)


class Layout:
    """Where each of N packed tokens sits in `rows` rows of `width` positions.

    Packed tokens travel as one unpadded [1, N] sequence, so the projections and the MLP never
    compute on padding; only attention, which needs rows, sees them laid out (and padded) as rows.
    With `lengths` (the examples' lengths in packed order) attention instead runs one example at a
    time on the unpadded sequence: cheaper when there are few examples (no padded rows to fill and
    read back, no attention across examples to mask out), dearer in calls when there are many.
    """

    def __init__(self, index, rows, width, lengths=None):
        self.index, self.rows, self.width, self.lengths = index, rows, width, lengths

    def to_rows(self, z):
        rows = torch.zeros((self.rows * self.width,) + tuple(z.shape[1:]), dtype=z.dtype, device=z.device)
        return rows.index_copy(0, self.index, z).view(self.rows, self.width, *z.shape[1:])

    def from_rows(self, z):
        return z.reshape(self.rows * self.width, *z.shape[2:]).index_select(0, self.index)


class MLP(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias, device=device)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias, device=device)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias, device=device)

    def forward(self, x):
        if hasattr(self, "gate_up"):  # lora.fuse
            return self.down_proj(swiglu(self.gate_up(x)))
        gate, up = self.gate_proj(x), self.up_proj(x)
        if gate.dtype == torch.float32:
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(swiglu(torch.cat([gate, up], dim=-1)))


class DecoderLayer(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.self_attn = Attention(c, device)
        self.mlp = MLP(c, device)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, device)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, device)

    def forward(self, x, cos, sin, mask, layout=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, layout)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, device=device)
        self.layers = nn.ModuleList(DecoderLayer(c, device) for _ in range(c.num_hidden_layers))
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

    def attention_mask(self, seq_ids, t, device):
        """None when plain causal attention suffices (lets SDPA pick flash kernels)."""
        window = self.config.sliding_window
        if seq_ids is None and (window is None or t <= window):
            return None
        pos = torch.arange(t, device=device)
        mask = pos[None, :] <= pos[:, None]
        if window is not None:
            mask = mask & (pos[:, None] - pos[None, :] < window)
        mask = mask[None, None]
        if seq_ids is not None:
            mask = mask & (seq_ids[:, None, :, None] == seq_ids[:, None, None, :])
        return mask

    def forward(self, input_ids, position_ids=None, seq_ids=None, layout=None):
        """Final hidden states [B, T, hidden]; `logits` turns (some of) them into vocabulary scores.

        seq_ids [rows, width]: which example each position of a row holds (None: one per row).
        layout: input_ids is [1, N] packed tokens that attention sees as rows (see Layout)."""
        b, t = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.model.embed_tokens(input_ids)
        # Rope angles in fp32, as transformers computes them, then cast to the activations' dtype.
        if self.inv_freq.device != input_ids.device:
            self.inv_freq = self.inv_freq.to(input_ids.device)
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]
        dtype = torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else x.dtype
        if x.is_cuda and torch.is_autocast_enabled():
            dtype = torch.get_autocast_gpu_dtype()
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        if layout is not None and layout.lengths is not None:  # (width, mask) per example length
            masks = {}
            for n in set(layout.lengths):
                if HAS_SDPA:
                    masks[n] = (n, self.attention_mask(None, n, input_ids.device))
                    continue
                # Without SDPA, examples are padded to a multiple of EXAMPLE_MULTIPLE so attention's
                # bmm shapes repeat across examples and steps (oneDNN builds a kernel per shape);
                # the padded keys are masked out, the padded queries' outputs dropped.
                width = -(-n // EXAMPLE_MULTIPLE) * EXAMPLE_MULTIPLE
                allowed = self.attention_mask(None, width, input_ids.device)
                if allowed is None:
                    allowed = torch.ones(width, width, dtype=torch.bool, device=input_ids.device).tril()[None, None]
                allowed = allowed & (torch.arange(width, device=input_ids.device) < n)
                masks[n] = (width, attention_bias(allowed, width, width, dtype, input_ids.device))
            mask = [masks[n] for n in layout.lengths]
        else:
            width = layout.width if layout else t
            mask = self.attention_mask(seq_ids, width, input_ids.device)
            if not HAS_SDPA:  # built once for all layers
                mask = attention_bias(mask, width, width, dtype, input_ids.device)
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, mask, layout, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, layout)
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


def state_dict_for_save(model):
    """Base weights under Hugging Face's names; a tied lm_head is left out, as transformers does."""
    sd = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
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
