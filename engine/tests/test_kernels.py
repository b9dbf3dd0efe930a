import unittest

import torch

from tunelab_engine import attention, kernels, lora

from .helpers import random_model


def grads(fn, inputs, upstream):
    out = fn(*inputs)
    return [out] + list(torch.autograd.grad(out, inputs, upstream))


class KernelsTest(unittest.TestCase):
    """Each kernel against autograd through the plain module it stands in for."""

    def assert_close(self, got, want, tolerance):
        for a, b in zip(got, want):
            self.assertLessEqual((a.double() - b.double()).abs().max().item(), tolerance * b.abs().max().item())

    def test_rms_norm(self):
        # float64 takes the kernel's path (fp32 keeps transformers' code); its mean of squares is fp32
        g = torch.Generator().manual_seed(0)
        norm = random_model("llama").model.norm
        norm.__class__ = kernels.RMSNorm
        norm.weight = torch.nn.Parameter(torch.randn(64, generator=g).double())
        x = torch.randn(3, 7, 64, generator=g, dtype=torch.float64, requires_grad=True)
        upstream = torch.randn(3, 7, 64, generator=g, dtype=torch.float64)
        self.assert_close(grads(lambda x, w: norm(x), [x, norm.weight], upstream),
                          grads(lambda x, w: w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps), [x, norm.weight], upstream),
                          1e-5)

    def test_lora_projections(self):
        for fused in (False, True):
            with self.subTest(fused=fused):
                runs = []
                for use_kernels in (False, True):
                    model = random_model("qwen2")  # q/k/v biases too
                    params = lora.apply(model, rank=4, alpha=8, seed=2)
                    for p in params:
                        torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(p.numel()))
                    if fused:
                        lora.fuse(model)
                    if use_kernels:
                        kernels.apply(model)
                        self.assertIsInstance(model.model.layers[0].self_attn.o_proj, kernels.LoRALinear)
                    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(0))
                    out = model.logits(model(ids))
                    out.square().mean().backward()
                    runs.append([out] + [p.grad for p in params])
                self.assert_close(runs[1], runs[0], 1e-5)

    def test_per_example_attention(self):
        # Lengths across the padding multiple, grouped, multi-query and plain heads, no window and
        # a window shorter than the padding (padded queries then reach no real key).
        g = torch.Generator().manual_seed(5)
        lengths = [50, 31, 7, 64, 9]
        n = sum(lengths)
        for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
            for heads, kv_heads in ((6, 2), (4, 1), (4, 4)):
                for window in (None, 3):
                    with self.subTest(dtype=dtype, heads=heads, kv_heads=kv_heads, window=window):
                        q, k, v = (torch.randn(1, n, h, 16, generator=g).to(dtype).requires_grad_()
                                   for h in (heads, kv_heads, kv_heads))
                        upstream = torch.randn(1, n, heads, 16, generator=g).to(dtype)
                        got = grads(lambda *z: kernels.Examples(lengths)(0, *z, window), [q, k, v], upstream)
                        # the reference in float64 for bf16, whose rounding differs between the two
                        ref_inputs = [z.detach().double().requires_grad_() if dtype == torch.bfloat16 else z for z in (q, k, v)]
                        want = grads(lambda *z: attention.Examples(lengths)(0, *z, window), ref_inputs,
                                     upstream.double() if dtype == torch.bfloat16 else upstream)
                        self.assertTrue(all(torch.isfinite(t).all() for t in got))
                        self.assert_close(got, want, tolerance)

    def test_decode_attention(self):
        g = torch.Generator().manual_seed(6)
        b, heads, kv_heads, span, d = 3, 6, 2, 11, 16
        q = torch.randn(b, 1, heads, d, generator=g)
        keys, values = (torch.randn(b, kv_heads, span, d, generator=g) for _ in range(2))
        lengths = torch.tensor([4, 11, 7])
        allowed = (torch.arange(span)[None, :] < lengths[:, None])[:, None, None]
        bias = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))
        want = attention.sdpa(q.transpose(1, 2), keys, values, allowed).transpose(1, 2)
        self.assert_close([kernels.decode_attention(q, keys, values, bias)], [want], 1e-6)

    def test_frozen_linear(self):
        # bf16 takes the packed oneDNN product where the CPU has native bf16; the plain F.linear is
        # the reference, for one row (a decode step), several, and a [1, T] prefill.
        g = torch.Generator().manual_seed(7)
        for dtype in (torch.bfloat16, torch.float32):
            for bias in (False, True):
                weight = torch.randn(48, 40, generator=g).to(dtype)
                b = torch.randn(48, generator=g).to(dtype) if bias else None
                product = kernels.frozen_linear(weight, b)
                for shape in ((1, 1, 40), (5, 1, 40), (1, 33, 40)):
                    with self.subTest(dtype=dtype, bias=bias, shape=shape):
                        x = torch.randn(shape, generator=g).to(dtype)
                        got = product(x)
                        self.assertEqual(got.dtype, dtype)
                        self.assert_close([got], [torch.nn.functional.linear(x, weight, b)], 1e-2 if dtype == torch.bfloat16 else 1e-6)
