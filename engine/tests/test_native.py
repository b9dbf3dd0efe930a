import os
import tempfile
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from tunelab_engine import decode, kernels, kv_cache, model as model_mod, native, runtime

from .helpers import random_model

RUNS_HERE = set(native.CPU_FLAGS) <= runtime.cpu_flags()


class NativeTest(unittest.TestCase):
    """The C kernels (native/) against the torch code they stand in for (F.linear, model.py's
    modules, kv_cache's torch path), built into a cache of the test's own; and the engine without them."""

    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        patch = mock.patch.dict(os.environ, {"XDG_CACHE_HOME": folder.name})
        patch.start()
        self.addCleanup(patch.stop)

    def assert_close(self, got, want):
        # Both round an fp32 sum to bf16; the sums differ in order only.
        self.assertEqual(got.dtype, want.dtype)
        self.assertEqual(got.shape, want.shape)
        scale = want.double().abs().max().item()
        self.assertLessEqual((got.double() - want.double()).abs().max().item(), 1e-2 * scale)

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16: the kernel cannot run (the fallback test covers it)")
    @mock.patch.object(kernels, "ROWS", 16)
    def test_rows_linear_against_f_linear(self):
        native.build()
        self.assertIsNotNone(native.library())
        g = torch.Generator().manual_seed(3)
        # Sizes off every multiple of 32 (masked tails), and one with whole chunks; every row
        # count the kernel has a path for (the engine sends it up to kernels.ROWS; 11 is 8 + 3), a
        # strided x (a slice of a wider tensor), a [B, 1, in] decode input.
        for out_features, in_features in ((37, 45), (130, 200), (1000, 64), (96, 7)):
            for bias in (False, True):
                weight = torch.randn(out_features, in_features, generator=g).to(torch.bfloat16)
                b = torch.randn(out_features, generator=g).to(torch.bfloat16) if bias else None
                product = kernels.frozen_linear(weight, b)
                self.assertEqual(product.__name__, "rows_linear")
                for rows in (1, 2, 3, 4, 5, 6, 7, 8, 11):
                    wide = torch.randn(rows, in_features + 11, generator=g).to(torch.bfloat16)
                    for x in (wide[:, :in_features].contiguous(), wide[:, 5:5 + in_features],
                              wide[:, :in_features].contiguous()[:, None]):
                        with self.subTest(shape=(out_features, in_features), bias=bias, x=tuple(x.shape), stride=x.stride()):
                            self.assert_close(product(x), F.linear(x, weight, b))

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16")
    def test_threads_split_the_features(self):
        native.build()
        g = torch.Generator().manual_seed(4)
        weight = torch.randn(4099, 96, generator=g).to(torch.bfloat16)
        x = torch.randn(2, 96, generator=g).to(torch.bfloat16)
        product = kernels.frozen_linear(weight, None)
        threads = torch.get_num_threads()
        try:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                with self.subTest(threads=n):
                    self.assert_close(product(x), F.linear(x, weight))
        finally:
            torch.set_num_threads(threads)

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16")
    def test_rms_norm_against_the_module(self):
        native.build()
        g = torch.Generator().manual_seed(6)
        for dim in (64, 45, 576):
            plain = model_mod.RMSNorm(dim, 1e-5)
            with torch.no_grad():
                plain.weight.copy_(torch.randn(dim, generator=g))
            plain = plain.to(torch.bfloat16)
            fast = model_mod.RMSNorm(dim, 1e-5).to(torch.bfloat16)
            fast.load_state_dict(plain.state_dict())
            kernels.use_native([fast], native.library())
            self.assertIs(type(fast), kernels.NativeRMSNorm)
            wide = (torch.randn(5, 1, dim + 7, generator=g) * 3).to(torch.bfloat16)
            # Rows of a [B, 1, dim] decode input, a strided view, and per-head rows (qwen3's q norm).
            for x in (wide[:, :, :dim].contiguous(), wide[:, :, 3:3 + dim], wide[:1, :, :dim].contiguous().view(1, 1, -1, dim)):
                with self.subTest(dim=dim, shape=tuple(x.shape), stride=x.stride()), torch.inference_mode():
                    got, want = fast(x), plain(x)
                    # The mean of squares is summed in another order: at most one bf16 step apart.
                    self.assertEqual(got.shape, want.shape)
                    self.assertLessEqual(((got.float() - want.float()).abs() / want.float().abs().clamp_min(1e-3)).max().item(), 2 ** -7)
                    self.assertGreater((got == want).float().mean().item(), 0.95)

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16")
    def test_rope_in_place_against_the_module(self):
        native.build()
        g = torch.Generator().manual_seed(7)
        fast = model_mod.Rotary()
        kernels.use_native([fast], native.library())
        d = 64
        for b, t in ((3, 1), (1, 5)):  # a decode step's rows; a prefill's tokens
            # q and k as views of one fused q|k|v output, as the model takes them.
            qkv = torch.randn(b, t, (4 + 2 + 2) * d, generator=g).to(torch.bfloat16)
            q, k, _ = (z.unflatten(-1, (-1, d)) for z in qkv.split([4 * d, 2 * d, 2 * d], dim=-1))
            angles = torch.randn(b, t, 1, d, generator=g)
            cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
            with self.subTest(b=b, t=t), torch.inference_mode():
                want_q, want_k = model_mod.Rotary()(q, k, cos, sin)
                got_q, got_k = fast(q, k, cos, sin)
                self.assertEqual(got_q.data_ptr(), q.data_ptr())  # in place
                self.assertTrue(torch.equal(got_q, want_q))  # the same roundings: bit for bit
                self.assertTrue(torch.equal(got_k, want_k))

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16")
    def test_cached_attention_against_the_torch_path(self):
        native.build()
        g = torch.Generator().manual_seed(8)
        # GQA groups of 3, a head size off the vector width, rows at different positions, a
        # sliding window shorter than some rows and none.
        heads, kv_heads, d = 6, 2, 40
        for window in (None, 5):
            # torch's path over an fp32 cache, the kernel over a bf16 one (as decode.Decoder makes them).
            caches = [kv_cache.KVCache(1, kv_heads, d, dtype, torch.device("cpu"), 4, 64, lib)
                      for dtype, lib in ((torch.float32, None), (torch.bfloat16, native.library()))]
            history = torch.randn(1, 3, kv_heads, 64, d, generator=g).to(torch.bfloat16)
            for cache in caches:
                cache.reserve(3, 64)
                cache.k.copy_(history)
                cache.v.copy_(history.flip(-1))
            positions = torch.tensor([9, 0, 30])
            qkv = torch.randn(3, 1, (heads + 2 * kv_heads) * d, generator=g).to(torch.bfloat16)
            q, k, v = (z.unflatten(-1, (-1, d)) for z in qkv.split([heads * d, kv_heads * d, kv_heads * d], dim=-1))
            with self.subTest(window=window), torch.inference_mode():
                want, got = (cache.step(positions)(0, q, k, v, window) for cache in caches)
                self.assertEqual(got.dtype, torch.bfloat16)
                self.assertEqual(got.shape, want.shape)
                self.assertLessEqual((got.float() - want.float()).abs().max().item(), 1e-2 * want.float().abs().max().item())
                self.assertTrue(torch.equal(caches[0].k, caches[1].k.float()))  # bf16 keys and values, held exactly
                self.assertTrue(torch.equal(caches[0].v, caches[1].v.float()))

    def test_without_the_library_products_are_torch_s(self):
        # Nothing built in this cache: the engine takes torch's products, with no error.
        self.assertIsNone(native.library())
        g = torch.Generator().manual_seed(5)
        weight = torch.randn(37, 45, generator=g).to(torch.bfloat16)
        b = torch.randn(37, generator=g).to(torch.bfloat16)
        product = kernels.frozen_linear(weight, b)
        self.assertNotEqual(product.__name__, "rows_linear")
        x = torch.randn(3, 1, 45, generator=g).to(torch.bfloat16)
        self.assert_close(product(x), F.linear(x, weight, b))
        served = random_model("llama").to(torch.bfloat16)
        decoder = decode.Decoder(served, 2)
        self.assertIsNone(decoder.cache.native)
        self.assertEqual({type(m) for m in served.modules()} & {kernels.NativeRMSNorm, kernels.NativeRotary}, set())

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16 (the library is never loaded on it)")
    def test_a_cpu_without_avx512_bf16_does_not_load_it(self):
        path = native.build()
        self.addCleanup(native._loaded.pop, path, None)
        with mock.patch.object(runtime, "cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"}):
            self.assertIsNone(native.library(path))
            self.assertNotEqual(kernels.frozen_linear(torch.ones(8, 8, dtype=torch.bfloat16), None).__name__, "rows_linear")

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16")
    def test_decoding_with_the_kernels_matches_torch(self):
        # A bf16 model's greedy tokens and logits through serving's decode, with the kernels and
        # without: qwen2's q/k/v biases, qwen3's per-head q/k norms and own head size, mistral's
        # sliding window (8, passed by the rows' positions).
        for family in ("qwen2", "qwen3", "mistral"):
            runs = []
            for built in (False, True):
                with mock.patch.object(native, "library", native.library if built else lambda path=None: None):
                    if built:
                        native.build()
                    model = random_model(family).to(torch.bfloat16).eval()
                    decoder = decode.Decoder(model, 4)
                self.assertEqual(model.lm_head.product.__name__ == "rows_linear", built)
                self.assertEqual(decoder.cache.native is not None, built)
                self.assertEqual(decoder.cache.dtype, torch.bfloat16 if built else torch.float32)
                self.assertEqual(type(model.model.norm) is kernels.NativeRMSNorm, built)
                tokens, logits = [], []
                with torch.inference_mode():
                    decoder.cache.reserve(2, 64)
                    for row, prompt in enumerate(([3, 17, 5, 40, 2], [9, 1])):
                        decoder.prefill(row, prompt, None)
                    rows_tokens, lengths = [7, 8], [5, 2]
                    for _ in range(12):
                        out = decoder.step(rows_tokens, lengths, None)
                        logits.append(out)
                        rows_tokens = out.argmax(-1).tolist()
                        tokens.append(rows_tokens)
                        lengths = [n + 1 for n in lengths]
                runs.append((tokens, torch.stack(logits)))
            with self.subTest(family=family):
                self.assertEqual(runs[0][0], runs[1][0])
                scale = runs[0][1].abs().max().item()
                self.assertLessEqual((runs[0][1] - runs[1][1]).abs().max().item(), 0.05 * scale)

if __name__ == "__main__":
    unittest.main()
