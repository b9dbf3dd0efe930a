"""Hand-written products that beat torch's general ones where they are used, each tested against
the plain op (engine/tests/test_kernels.py) with its measured gain in bench/engine/README.md."""

import torch
import torch.nn.functional as F

FEW_ROWS = 16


def rows_linear(x, weight, bias):
    """F.linear(x, weight, bias) for decoding's few rows on CPU. One row is a matrix-vector
    product (`torch.mv`); up to FEW_ROWS bf16 rows are `W @ x^T` transposed back, the product
    oneDNN runs faster when the weight is the tall operand. Anything else is F.linear."""
    rows = x.numel() // x.shape[-1]
    if x.device.type != "cpu" or rows > FEW_ROWS or (rows > 1 and weight.dtype != torch.bfloat16):
        return F.linear(x, weight, bias)
    if rows == 1:
        out = torch.mv(weight, x.reshape(-1))
    else:
        out = torch.mm(weight, x.reshape(rows, -1).t()).t().contiguous()
    if bias is not None:
        out += bias
    return out.view(*x.shape[:-1], weight.shape[0])
