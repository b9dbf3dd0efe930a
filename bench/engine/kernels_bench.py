"""kernels.py against the plain modules they stand in for, forward + backward, SmolLM2-135M's
shapes (hidden 576, 9 query and 3 key/value heads of 64, MLP 1536, LoRA r=8), 1,100 tokens as in
a training step, bf16 and fp32, on CPU, with the engine's OpenMP wait policy (runtime.py).

    PYTHONPATH=engine python bench/engine/kernels_bench.py

The two alternate, and each figure is the fastest of its repeats (the least disturbed by other
processes on a shared machine). Writes results/kernels.json with the machine and the load average.
"""

import os
import sys
import time

from tunelab_engine import runtime

runtime.prepare_threads()  # the engine's own thread waiting, set before torch loads OpenMP

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from tunelab_engine import attention, kernels, lora, model  # noqa: E402
from result_file import write_result  # noqa: E402

TOKENS, HIDDEN, MLP = 1100, 576, 1536
LENGTHS = [200, 150, 120, 250, 100, 130, 90, 60]  # the examples of a packed step


def fastest(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def forward_backward(fn, *inputs):
    def run():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return run


def cases(dtype):
    x = torch.randn(1, TOKENS, HIDDEN, dtype=dtype, requires_grad=True)
    plain_norm = model.RMSNorm(HIDDEN, 1e-5).to(dtype)
    fast_norm = model.RMSNorm(HIDDEN, 1e-5).to(dtype)
    fast_norm.__class__ = kernels.RMSNorm
    yield "RMSNorm", forward_backward(plain_norm, x), forward_backward(fast_norm, x)
    base = torch.nn.Linear(HIDDEN, 2 * MLP, bias=False).to(dtype)
    plain_lora, fast_lora = lora.LoRALinear(base, 8, 16, 0.0), lora.LoRALinear(base, 8, 16, 0.0)
    fast_lora.__class__ = kernels.LoRALinear
    yield "LoRA projection (gate_up)", forward_backward(plain_lora, x), forward_backward(fast_lora, x)
    n = sum(LENGTHS)
    q = torch.randn(1, n, 9, 64, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(1, n, 3, 64, dtype=dtype, requires_grad=True) for _ in range(2))
    plain_attention, fast_attention = attention.Examples(LENGTHS), kernels.Examples(LENGTHS)
    yield ("attention, 8 examples (SDPA each / the kernel)", forward_backward(lambda *z: plain_attention(0, *z, None), q, k, v),
           forward_backward(lambda *z: fast_attention(0, *z, None), q, k, v))


def main():
    torch.set_num_threads(os.cpu_count())
    results = []
    for dtype in (torch.bfloat16, torch.float32):
        for name, plain, fast in cases(dtype):
            plain(), fast()
            a = b = float("inf")
            for _ in range(5):
                a, b = min(a, fastest(plain)), min(b, fastest(fast))
            results.append({"op": name, "dtype": str(dtype).replace("torch.", ""), "plain_ms": round(a * 1e3, 2),
                            "kernel_ms": round(b * 1e3, 2), "gain": round(a / b, 2)})
            print(results[-1], flush=True)
    write_result(os.path.join(HERE, "results", "kernels.json"), {"threads": torch.get_num_threads(), "results": results})


if __name__ == "__main__":
    main()
