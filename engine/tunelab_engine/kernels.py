"""Hand-written kernels for the CPU, where they beat torch 2.13's own ops (measured in
bench/engine/README.md, "Kernels" and "Serving"); each is tested against the plain module or
autograd through it (engine/tests/test_kernels.py, test_native.py). Training's come first; serving's
decode pieces (`frozen_linear`, `decode_attention`, and the C kernels' `native_modules` and
`cached_attention`) last.

`apply(model)` swaps a model's RMSNorm and LoRA modules for the subclasses below (same parameters,
same names, another forward), and `attention(attend)` swaps packed examples' attention; the model
and its modules are otherwise unchanged, so the plain path stays the reference.
"""

import concurrent.futures

import torch
import torch.nn.functional as F

from . import attention as attention_mod, lora, model as model_mod, native

PAD_MULTIPLE = 32  # examples are padded to a multiple of this, so bmm shapes repeat across examples and steps


class _RMSNorm(torch.autograd.Function):
    """weight * x / rms(x) for bf16 x, with the mean of squares accumulated in fp32 but the
    [tokens, hidden] tensor never copied to fp32 and back; the backward written out (autograd's
    makes about twice as many passes over the activations)."""

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


class RMSNorm(model_mod.RMSNorm):
    def forward(self, x):
        if x.dtype == torch.float32:
            return super().forward(x)
        return _RMSNorm.apply(x, self.weight, self.eps)


class _LoRAProjection(torch.autograd.Function):
    """x @ W^T + bias + scaling * dropout(x) @ A^T @ B^T. Autograd records the addition of the
    low-rank path as a second [tokens, out] tensor and adds the two input gradients in another
    pass; here the low-rank product is added into the frozen output in place, the frozen weight
    only ever gets the input gradient, and the low-rank input gradient is accumulated into it."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling, p):
        flat = x.reshape(-1, x.shape[-1])
        out = F.linear(flat, weight, bias)
        keep = None
        if p > 0:
            # As nn.Dropout: zero with probability p, scale the rest by 1 / (1 - p).
            keep = torch.empty_like(flat).bernoulli_(1 - p).div_(1 - p)
            flat = flat * keep
        low = flat @ a.t()
        out.addmm_(low, b.t(), alpha=scaling)
        ctx.save_for_backward(flat, weight, a, b, low, keep)
        ctx.scaling = scaling
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        flat, weight, a, b, low, keep = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        g_low = (g @ b).mul_(ctx.scaling)  # [tokens, rank]
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            if keep is None:
                grad_x = (g @ weight).addmm_(g_low, a)
            else:
                grad_x = (g @ weight).add_((g_low @ a).mul_(keep))
            grad_x = grad_x.view(*grad.shape[:-1], grad_x.shape[-1])
        if ctx.needs_input_grad[3]:
            grad_a = g_low.t() @ flat
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ low).mul_(ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, None, None


def _dropout_p(dropout):
    return dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0


class LoRALinear(lora.LoRALinear):
    def forward(self, x):
        return _LoRAProjection.apply(x, self.weight, self.bias, self.lora_A.weight.to(x.dtype),
                                     self.lora_B.weight.to(x.dtype), self.scaling, _dropout_p(self.dropout))


class FusedLoRA(lora.FusedLoRA):
    def forward(self, x):
        a, b = self.stacked(x.dtype)
        return _LoRAProjection.apply(x, self.weight, self.bias, a, b, 1.0, _dropout_p(self.dropout))


_HELPER = None


def _one_thread(work, items):
    """work(item) for each item, on one OpenMP thread each: this thread and, with two or more
    threads allowed, a helper thread that takes about half of the items (by `item[-1]`, a cost).
    Torch releases the GIL inside each op, so the two run side by side, and none of an example's
    small ops wakes a sleeping OpenMP thread (OMP_WAIT_POLICY=PASSIVE makes each wake-up dear)."""
    global _HELPER
    threads = torch.get_num_threads()
    results = [None] * len(items)
    mine, theirs = list(range(len(items))), []
    if threads > 1 and len(items) > 1:
        load = [0, 0]
        mine = []
        for i in sorted(range(len(items)), key=lambda i: -items[i][-1]):
            side = 0 if load[0] <= load[1] else 1
            (mine if side == 0 else theirs).append(i)
            load[side] += items[i][-1]
    if theirs and _HELPER is None:
        _HELPER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="attention")

    def run(indices):
        with torch.no_grad():
            for i in indices:
                results[i] = work(items[i])

    def helper(indices):
        torch.set_num_threads(1)
        run(indices)

    torch.set_num_threads(1)
    try:
        future = _HELPER.submit(helper, theirs) if theirs else None
        run(mine)
        if future is not None:
            future.result()
    finally:
        torch.set_num_threads(threads)
    return results


class _PerExampleAttention(torch.autograd.Function):
    """Attention one example at a time over packed q, k, v ([1, N, heads, D]); the output is
    [1, N, heads * D]. `examples` holds (start, n, width, bias) per example: each is laid out
    padded to `width`, transposed into the bmm layout in the same copy, and `bias` is its additive
    mask. Each key/value head serves its group of query heads as one taller matrix, so k and v are
    never repeated. Forward and backward run each example on one thread (`_one_thread`); the
    backward forms the products autograd would."""

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
            scores = torch.bmm(qs, ks.transpose(1, 2)).view(kv_heads, groups, width, width) + bias
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


def padded_bias(n, window, dtype, device):
    """(width, additive mask [1, width, width]) of one example of n tokens padded to a multiple of
    PAD_MULTIPLE. A padded query sees only itself: with a short sliding window it may have no real
    key in reach, and a row with no key at all would be NaN. Real queries never see padded keys."""
    width = -(-n // PAD_MULTIPLE) * PAD_MULTIPLE
    pos = torch.arange(width, device=device)
    allowed = attention_mod.allowed(pos[:, None], pos[None, :], window) & (pos[None, :] < n)
    allowed |= torch.eye(width, dtype=torch.bool, device=device) & (pos[:, None] >= n)
    return width, torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))[None]


class Examples(attention_mod.Examples):
    """attention.Examples through _PerExampleAttention; the masks built once for all layers."""

    def __init__(self, lengths):
        super().__init__(lengths)
        self._masks = {}

    def __call__(self, layer, q, k, v, window):
        examples, start = [], 0
        for n in self.lengths:
            key = (n, window, q.dtype)
            if key not in self._masks:
                self._masks[key] = padded_bias(n, window, q.dtype, q.device)
            examples.append((start, n) + self._masks[key])
            start += n
        return _PerExampleAttention.apply(q, k, v, examples).unflatten(-1, (-1, q.shape[-1]))


def frozen_linear(weight, bias):
    """x -> F.linear(x, weight, bias) for a weight that never changes (serving's). On a CPU with
    native bf16 a bf16 weight is reordered once into oneDNN's blocked layout and products of many
    rows (a prefill) run from it: F.linear goes through a path that reads the plain layout at
    about half the speed. Products of up to ROWS rows (a decode step) go to the C kernel where it
    is built and runs (`native`): reading each weight row front to back, it streams the weights
    faster than oneDNN's product does for so few rows. The packed copy sits beside the weight."""
    if weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available() \
            and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        many = lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")  # noqa: E731
        lib = native.library()
        if lib is None or not weight.is_contiguous() or (bias is not None and not bias.is_contiguous()):
            return many
        return _rows_linear(lib, weight, bias, many)
    return lambda x: F.linear(x, weight, bias)


ROWS = 4  # up to here the kernel wins (it streams the weight); from about 8 rows oneDNN computes faster


def _rows_linear(lib, weight, bias, many):
    out_features, in_features = weight.shape
    product = lib.tl_bf16_rows_linear
    w, b = weight.data_ptr(), None if bias is None else bias.data_ptr()
    keep = (weight, bias)  # the pointers' owners live as long as the product

    def rows_linear(x, keep=keep):
        if x.is_contiguous():  # a decode step's input: no reshaping (a call is a few microseconds, 121 a step)
            rows = x.numel() // in_features
            if rows > ROWS or x.dtype != torch.bfloat16:
                return many(x)
            y = torch.empty(*x.shape[:-1], out_features, dtype=torch.bfloat16)
            product(x.data_ptr(), rows, in_features, w, in_features, out_features, b, y.data_ptr(), torch.get_num_threads())
            return y
        flat = x.reshape(-1, in_features)
        rows = flat.shape[0]
        if rows > ROWS or x.dtype != torch.bfloat16:
            return many(x)
        if flat.stride(-1) != 1:
            flat = flat.contiguous()
        y = torch.empty(rows, out_features, dtype=torch.bfloat16)
        product(flat.data_ptr(), rows, flat.stride(0), w, in_features, out_features, b, y.data_ptr(),
                torch.get_num_threads())
        return y.view(*x.shape[:-1], out_features)

    return rows_linear


def decode_attention(q, keys, values, bias):
    """One new query per row against the row's cached keys: q [B, 1, heads, D], keys and values
    [B, kv_heads, S, D], bias [B, 1, 1, S] additive; out [B, 1, heads, D]. Each key/value head's
    group of query heads is one small matrix, so the cache is never repeated; two bmm's and a
    softmax, where SDPA's CPU kernels cost several times more for a single query."""
    b, _, h, d = q.shape
    kv_heads, span = keys.shape[1], keys.shape[2]
    groups = h // kv_heads
    qg = (q * d ** -0.5).reshape(b * kv_heads, groups, d)
    scores = torch.bmm(qg, keys.reshape(b * kv_heads, span, d).transpose(1, 2)).view(b, kv_heads, groups, span) + bias
    probs = torch.softmax(scores, dim=-1).view(b * kv_heads, groups, span)
    return torch.bmm(probs, values.reshape(b * kv_heads, span, d)).view(b, 1, h, d)


class NativeRMSNorm(model_mod.RMSNorm):
    """model.RMSNorm in one C call (native/decode_ops.c) for bf16 rows; serving's (`native_modules`),
    whose weights never change."""

    def forward(self, x):
        dim = x.shape[-1]
        if x.dtype != torch.bfloat16 or self.weight_ptr is None:
            return super().forward(x)
        if x.is_contiguous():
            rows, stride = x.numel() // dim, dim
        else:
            try:
                flat = x.view(-1, dim)
            except RuntimeError:  # rows not evenly spaced (a strided view of several heads and rows)
                return super().forward(x)
            rows, stride = flat.shape[0], flat.stride(0)
        y = torch.empty(x.shape, dtype=torch.bfloat16)
        self.lib.tl_rms_norm(x.data_ptr(), rows, stride, self.weight_ptr, dim, self.eps, y.data_ptr())
        return y


class NativeRotary(model_mod.Rotary):
    """model.Rotary in one C call, rotating q and k in place (no gradients are taken through a
    served forward), for bf16 q and k of one token per row or one row of tokens."""

    def forward(self, q, k, cos, sin):
        b, t, heads, d = q.shape
        if t == 1 or b == 1:
            row = 0 if t == 1 else 1
            if (q.dtype == k.dtype == cos.dtype == sin.dtype == torch.bfloat16 and not torch.is_grad_enabled()
                    and q.stride(-1) == k.stride(-1) == 1 and q.stride(-2) == k.stride(-2) == d
                    and cos.is_contiguous() and sin.is_contiguous()):
                self.lib.tl_rope_qk(q.data_ptr(), q.stride(row), heads, k.data_ptr(), k.stride(row), k.shape[2], b * t,
                                    cos.data_ptr(), sin.data_ptr(), d)
                return q, k
        return super().forward(q, k, cos, sin)


def native_modules(model):
    """Serving's: swaps `model`'s RMSNorm and Rotary modules for the C kernels' versions, where the
    library is built and runs on this CPU (a CPU model); the library, or None."""
    lib = native.library()
    if lib is None or model.lm_head.weight.device.type != "cpu":
        return None
    use_native(model.modules(), lib)
    return lib


def use_native(modules, lib):
    swaps = {model_mod.RMSNorm: NativeRMSNorm, model_mod.Rotary: NativeRotary}
    for module in modules:
        if type(module) in swaps:
            module.__class__ = swaps[type(module)]
            module.lib = lib
            if isinstance(module, NativeRMSNorm):
                weight = module.weight.detach()
                module.weight_ptr = weight.data_ptr() if weight.dtype == torch.bfloat16 and weight.is_contiguous() else None


def cached_attention(lib, q, k, v, keys, values, positions, window):
    """kv_cache's step for one new token per row in one C call: k, v [B, 1, kv_heads, D] written to
    the bf16 cache `keys`, `values` ([rows, kv_heads, capacity, D], one layer's, contiguous) at
    `positions` [B] (int64), and q [B, 1, heads, D] attending to each row's own positions (within
    `window`) in fp32; out [B, 1, heads, D] in bf16. None where the kernel does not take these tensors."""
    b, _, heads, d = q.shape
    if q.dtype != torch.bfloat16 or k.dtype != torch.bfloat16 or v.dtype != torch.bfloat16 \
            or keys.dtype != torch.bfloat16 \
            or q.stride()[2:] != (d, 1) or k.stride()[2:] != (d, 1) or v.stride()[2:] != (d, 1):
        return None
    out = torch.empty(b, 1, heads, d, dtype=torch.bfloat16)
    if lib.tl_decode_attention(q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0), b, heads,
                               k.shape[2], d, keys.data_ptr(), values.data_ptr(), keys.stride(0), keys.stride(1),
                               positions.data_ptr(), window or 0, out.data_ptr()) != 0:
        return None
    return out


def apply(model):
    """Swaps `model`'s RMSNorm, LoRALinear and FusedLoRA modules for their kernel versions."""
    swaps = {model_mod.RMSNorm: RMSNorm, lora.LoRALinear: LoRALinear, lora.FusedLoRA: FusedLoRA}
    for module in model.modules():
        if type(module) in swaps:
            module.__class__ = swaps[type(module)]


def attention(attend):
    """The kernel version of an attend from data.Batch, where there is one."""
    if type(attend) is attention_mod.Examples:
        return Examples(attend.lengths)
    return attend
