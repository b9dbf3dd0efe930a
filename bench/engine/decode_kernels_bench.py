"""Serving's speed pieces against the plain code they stand in for, on CPU with the engine's OpenMP
wait policy (runtime.py), bf16, SmolLM2-135M's shapes unless named:

- `kernels.frozen_linear` (oneDNN, weight packed once) against `F.linear`: the products of one
  layer (qkv, o, gate_up, down) and the lm_head, for 1 and 8 rows (decode) and 128 (a prefill);
- the grammar mask (`grammar.Constraint.mask`, numpy) against torch's `masked_fill_` of the
  bytes llguidance gives, over Qwen's 151,936-token vocabulary, 97%, 50% and 1% of it allowed;
- a whole decode step (`decode.Decoder.step`, 128 cached positions), 1 and 8 rows, with the packed
  products against F.linear ones.

    PYTHONPATH=engine python bench/engine/decode_kernels_bench.py [--threads N]

Each pair alternates; each figure is the fastest of its rounds (the least disturbed by other
processes on a shared machine). Writes results/decode_kernels.json with the machine and the load
averages.
"""

import argparse
import json
import os
import sys
import time

from tunelab_engine import runtime

runtime.prepare_threads()  # the engine's own thread waiting, set before torch loads OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from shapes import SHAPES  # noqa: E402
from train_cpu import machine  # noqa: E402
from tunelab_engine import config as config_mod, decode, grammar, kernels, model  # noqa: E402

SMOL = SHAPES["smollm2-135m"]


def per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def products():
    h, mlp, heads, kv = SMOL["hidden_size"], SMOL["intermediate_size"], SMOL["num_attention_heads"], SMOL["num_key_value_heads"]
    shapes = {"qkv": ((heads + 2 * kv) * 64, h), "o": (h, heads * 64), "gate_up": (2 * mlp, h), "down": (h, mlp),
              "lm_head": (SMOL["vocab_size"], h)}
    for rows in (1, 8, 128):
        plain, fast = [], []
        for out_features, in_features in shapes.values():
            weight = torch.randn(out_features, in_features).to(torch.bfloat16)
            x = torch.randn(rows, in_features).to(torch.bfloat16)
            packed = kernels.frozen_linear(weight, None)
            plain.append(lambda x=x, weight=weight: F.linear(x, weight))
            fast.append(lambda x=x, packed=packed: packed(x))
        yield f"frozen products, a layer + lm_head, {rows} rows", lambda: [f() for f in plain], lambda: [f() for f in fast], 10


def mask():
    for share in (0.97, 0.5, 0.01):  # inside a JSON string most tokens are allowed, between values few
        yield from mask_case(share)


def mask_case(share):
    vocab = SHAPES["qwen2.5-0.5b"]["vocab_size"]
    allowed = bytes(np.where(np.random.default_rng(0).random(vocab) < share, 200, 0).astype(np.uint8))
    logits = torch.randn(vocab)

    class Done:
        def result(self):
            return allowed

    constraint = grammar.Constraint.__new__(grammar.Constraint)
    constraint.allowed = Done()

    def masked_fill():
        a = torch.frombuffer(bytearray(allowed), dtype=torch.uint8)
        logits[: a.numel()].masked_fill_(a == 0, float("-inf"))

    yield f"grammar mask, 151,936 tokens, {share:.0%} allowed (masked_fill_ / numpy)", masked_fill, lambda: constraint.mask(logits), 200


def decode_step():
    cfg = config_mod.from_dict(SMOL)
    m = model.Transformer(cfg)
    model.init_weights(m, 0)
    m = m.to(torch.bfloat16).eval()
    decoder = decode.Decoder(m, 8)
    linears = [mod for mod in m.modules() if isinstance(mod, decode.RowLinear)]
    packed = [mod.product for mod in linears]
    plain = [(lambda w, b: (lambda x: F.linear(x, w, b)))(mod.weight, mod.bias) for mod in linears]

    def use(chosen):
        for mod, product in zip(linears, chosen):
            mod.product = product

    for rows in (1, 8):
        with torch.inference_mode():
            decoder.cache.reserve(rows, 200)
            for row in range(rows):
                decoder.prefill(row, list(range(1, 129)), None)

        def step(chosen, rows=rows):
            use(chosen)
            with torch.inference_mode():
                decoder.step([5] * rows, [128] * rows, None)  # the same position again: the cache does not grow

        yield f"decode step, {rows} rows (F.linear / packed products)", lambda: step(plain), lambda: step(packed), 5
    use(packed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    for group in (products, mask, decode_step):
        for name, plain, fast, calls in group():
            plain(), fast()
            a = b = float("inf")
            for _ in range(args.rounds):
                a, b = min(a, per_call(plain, calls)), min(b, per_call(fast, calls))
            results.append({"case": name, "plain_ms": round(a * 1e3, 3), "kernel_ms": round(b * 1e3, 3), "gain": round(a / b, 2)})
            print(results[-1], flush=True)
    result = {"command": "PYTHONPATH=engine " + " ".join([sys.executable] + sys.argv), "machine": machine(),
              "threads": torch.get_num_threads(), "results": results,
              "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}}
    with open(os.path.join(HERE, "results", "decode_kernels.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
