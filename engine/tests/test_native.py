import os
import tempfile
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from tunelab_engine import decode, kernels, native, runtime

from .helpers import random_model

RUNS_HERE = set(native.CPU_FLAGS) <= runtime.cpu_flags()


class NativeTest(unittest.TestCase):
    """The C kernel (native/bf16_rows.c) against F.linear, built into a cache of the test's own;
    and the engine's products without it."""

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

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16 (the library is never loaded on it)")
    def test_a_cpu_without_avx512_bf16_does_not_load_it(self):
        path = native.build()
        self.addCleanup(native._loaded.pop, path, None)
        with mock.patch.object(runtime, "cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"}):
            self.assertIsNone(native.library(path))
            self.assertNotEqual(kernels.frozen_linear(torch.ones(8, 8, dtype=torch.bfloat16), None).__name__, "rows_linear")

    @unittest.skipUnless(RUNS_HERE, "this CPU lacks AVX512-BF16")
    def test_decoding_with_the_kernel_matches_torch_s_products(self):
        # A bf16 model's greedy tokens and logits through serving's decode, with the kernel and without.
        runs = []
        for built in (False, True):
            if built:
                native.build()
            model = random_model("qwen2").to(torch.bfloat16).eval()  # q/k/v biases too
            decoder = decode.Decoder(model, 4)
            self.assertEqual(model.lm_head.product.__name__ == "rows_linear", built)
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
        self.assertEqual(runs[0][0], runs[1][0])
        scale = runs[0][1].abs().max().item()
        self.assertLessEqual((runs[0][1] - runs[1][1]).abs().max().item(), 0.05 * scale)


if __name__ == "__main__":
    unittest.main()
