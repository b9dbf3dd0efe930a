import unittest

import torch
import torch.nn.functional as F

from tunelab_engine import kernels


class RowsLinearTest(unittest.TestCase):
    def test_one_and_few_row_products_equal_linear(self):
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(48, 64, generator=g), torch.randn(48, generator=g)
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 0.02)):
            for rows in (1, 3, 16, 20):
                x = torch.randn(rows, 1, 64, generator=g)
                expected = F.linear(x, w, b)
                for bias in (b, None):
                    got = kernels.rows_linear(x.to(dtype), w.to(dtype), None if bias is None else bias.to(dtype))
                    want = expected if bias is not None else expected - b
                    self.assertEqual(tuple(got.shape), (rows, 1, 48))
                    self.assertLess((got.float() - want).abs().max().item(), tolerance * want.abs().max().item(),
                                    (dtype, rows))
