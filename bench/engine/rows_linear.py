"""kernels.rows_linear against F.linear on decoding's shapes (SmolLM2-135M's and Qwen2.5-0.5B's
projections), one row and 8 rows, bf16 and fp32, CPU.

    PYTHONPATH=engine python bench/engine/rows_linear.py

Calls alternate between the two, and each figure is the fastest of its repeats (the least
disturbed by other processes on a shared machine). Prints the gain and writes
results/rows-linear.json with the machine and the load average.
"""

import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from tunelab_engine.kernels import rows_linear  # noqa: E402
from train_cpu import machine  # noqa: E402

SHAPES = {"smollm2-135m qkv": (960, 576), "smollm2-135m gate_up": (3072, 576), "smollm2-135m down": (576, 1536),
          "qwen2.5-0.5b gate_up": (9728, 896), "qwen2.5-0.5b down": (896, 4864)}


def fastest(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    torch.set_num_threads(os.cpu_count())
    load_before = os.getloadavg()
    rows_out = []
    with torch.inference_mode():
        for name, (out_f, in_f) in SHAPES.items():
            for dtype in (torch.bfloat16, torch.float32):
                w = torch.randn(out_f, in_f).to(dtype)
                for rows in (1, 8):
                    x = torch.randn(rows, 1, in_f).to(dtype)
                    plain, ours = float("inf"), float("inf")
                    for _ in range(20):
                        plain = min(plain, fastest(lambda: F.linear(x, w), 10))
                        ours = min(ours, fastest(lambda: rows_linear(x, w, None), 10))
                    rows_out.append({"shape": name, "dtype": str(dtype).replace("torch.", ""), "rows": rows,
                                     "linear_us": round(plain * 1e6, 1), "rows_linear_us": round(ours * 1e6, 1),
                                     "gain": round(plain / ours, 2)})
                    print(rows_out[-1])
    result = {"command": "PYTHONPATH=engine " + " ".join([sys.executable] + sys.argv), "machine": machine(),
              "threads": torch.get_num_threads(), "results": rows_out,
              "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}}
    with open(os.path.join(HERE, "results", "rows-linear.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
