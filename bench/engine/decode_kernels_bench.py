"""Serving's speed pieces against the plain code they stand in for, on CPU with the engine's OpenMP
wait policy (runtime.py), bf16, SmolLM2-135M's shapes unless named:

- `kernels.frozen_linear` against `F.linear`: the products of one layer (qkv, o, gate_up, down)
  and the lm_head, for 1, 4 and 8 rows (decode) and 128 (a prefill);
- the C kernel (`native/`, products of up to `kernels.ROWS` rows) against oneDNN's packed product
  it replaces there, over a whole model's weights (30 layers and the lm_head, 269 MB: not in any
  cache, as in a decode step), 1, 2, 4 and 8 rows;
- the grammar mask (`grammar.Constraint.mask`, numpy) against torch's `masked_fill_` of the
  bytes llguidance gives, over Qwen's 151,936-token vocabulary, 97%, 50% and 1% of it allowed;
- the C kernels of the small ops (`native/decode_ops.c`, `kernels.native_modules` and
  `kernels.cached_attention`) against model.py's modules and kv_cache's torch path: RMSNorm, rope on
  q and k, a step's cached attention with its cache write (128 cached positions), 1 and 8 rows;
- a whole decode step (`decode.Decoder.step`, 128 cached positions), 1 and 8 rows, with the
  engine's products against F.linear ones; 1 and 4 rows with the C kernel against oneDNN's
  packed products alone (the engine before the kernel); 1 and 8 rows with the small ops' C
  kernels against torch's ops (the engine before them).

    PYTHONPATH=engine python bench/engine/decode_kernels_bench.py [--threads N] [--out FILE]

Each pair alternates; each figure is the fastest of its rounds (the least disturbed by other
processes on a shared machine), in wall time and in the process's CPU time (what a busy machine
moves least). Writes results/decode_kernels.json (or --out) with the machine and the load averages.
"""

import argparse
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
from result_file import write_result  # noqa: E402
from tunelab_engine import config as config_mod, decode, grammar, kernels, kv_cache, model, native  # noqa: E402

SMOL = SHAPES["smollm2-135m"]


def per_call(fn, calls):
    """(wall, process CPU) seconds a call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def onednn_only(weight, bias):
    """frozen_linear as it was before the C kernel: oneDNN's packed product for every row count."""
    real = native.library
    native.library = lambda path=None: None
    try:
        return kernels.frozen_linear(weight, bias)
    finally:
        native.library = real


def products():
    h, mlp, heads, kv = SMOL["hidden_size"], SMOL["intermediate_size"], SMOL["num_attention_heads"], SMOL["num_key_value_heads"]
    shapes = {"qkv": ((heads + 2 * kv) * 64, h), "o": (h, heads * 64), "gate_up": (2 * mlp, h), "down": (h, mlp),
              "lm_head": (SMOL["vocab_size"], h)}
    for rows in (1, 4, 8, 128):
        plain, fast = [], []
        for out_features, in_features in shapes.values():
            weight = torch.randn(out_features, in_features).to(torch.bfloat16)
            x = torch.randn(rows, in_features).to(torch.bfloat16)
            packed = kernels.frozen_linear(weight, None)
            plain.append(lambda x=x, weight=weight: F.linear(x, weight))
            fast.append(lambda x=x, packed=packed: packed(x))
        yield f"frozen products, a layer + lm_head, {rows} rows", lambda: [f() for f in plain], lambda: [f() for f in fast], 10


def native_products():
    if native.library() is None:
        print("no C kernel here (not built, or no AVX512-BF16): skipping its comparison", flush=True)
        return
    h, mlp, heads, kv = SMOL["hidden_size"], SMOL["intermediate_size"], SMOL["num_attention_heads"], SMOL["num_key_value_heads"]
    shapes = [((heads + 2 * kv) * 64, h), (h, heads * 64), (2 * mlp, h), (h, mlp)] * SMOL["num_hidden_layers"]
    weights = [torch.randn(shape).to(torch.bfloat16) for shape in shapes + [(SMOL["vocab_size"], h)]]
    onednn = [onednn_only(w, None) for w in weights]
    lib = native.library()
    ours = [kernels._rows_linear(lib, w, None, None) for w in weights]
    ceiling = kernels.ROWS
    kernels.ROWS = 8  # so that 8 rows reach the kernel too (the engine sends it up to ROWS)
    for rows in (1, 2, 4, 8):
        xs = [torch.randn(rows, w.shape[1]).to(torch.bfloat16) for w in weights]
        yield (f"C kernel against oneDNN's packed product, a whole model's weights (269 MB), {rows} rows",
               lambda xs=xs: [f(x) for f, x in zip(onednn, xs)], lambda xs=xs: [f(x) for f, x in zip(ours, xs)], 3)
    kernels.ROWS = ceiling


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


def decode_ops():
    lib = native.library()
    if lib is None:
        print("no C kernels here (not built, or no AVX512-BF16): skipping the small ops", flush=True)
        return
    h, heads, kv, d = SMOL["hidden_size"], SMOL["num_attention_heads"], SMOL["num_key_value_heads"], 64
    for rows in (1, 8):
        plain = model.RMSNorm(h, 1e-5).to(torch.bfloat16)
        fast = model.RMSNorm(h, 1e-5).to(torch.bfloat16)
        kernels.use_native([fast], lib)
        x = torch.randn(rows, 1, h).to(torch.bfloat16)
        yield f"RMSNorm, hidden {h}, {rows} rows (model.RMSNorm / C)", lambda: plain(x), lambda: fast(x), 200

        qkv = torch.randn(rows, 1, (heads + 2 * kv) * d).to(torch.bfloat16)
        q, k, v = (z.unflatten(-1, (-1, d)) for z in qkv.split([heads * d, kv * d, kv * d], dim=-1))
        angles = torch.randn(rows, 1, 1, d)
        cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
        rotary, native_rotary = model.Rotary(), model.Rotary()
        kernels.use_native([native_rotary], lib)

        def rope(module, q=q, k=k, cos=cos, sin=sin):
            with torch.inference_mode():  # as serving runs it (the kernel rotates in place only there)
                module(q, k, cos, sin)

        yield (f"rope on q and k, {rows} rows (model.Rotary / C, in place)", lambda: rope(rotary),
               lambda: rope(native_rotary), 200)

        caches = [kv_cache.KVCache(1, kv, d, dtype, torch.device("cpu"), rows, 256, chosen)
                  for dtype, chosen in ((torch.float32, None), (torch.bfloat16, lib))]  # as decode.Decoder makes them
        attends = []
        for cache in caches:
            cache.reserve(rows, 256)
            cache.k.normal_()
            cache.v.normal_()
            attends.append(cache.step(torch.full((rows,), 128)))
        yield (f"cached attention and its cache write, 128 positions, {rows} rows (torch / C)",
               lambda: attends[0](0, q, k, v, None), lambda: attends[1](0, q, k, v, None), 200)


def decode_step():
    cfg = config_mod.from_dict(SMOL)
    m = model.Transformer(cfg)
    model.init_weights(m, 0)
    m = m.to(torch.bfloat16).eval()
    decoder = decode.Decoder(m, 8)
    linears = [mod for mod in m.modules() if isinstance(mod, decode.RowLinear)]
    engine = [mod.product for mod in linears]
    plain = [(lambda w, b: (lambda x: F.linear(x, w, b)))(mod.weight, mod.bias) for mod in linears]
    packed = [onednn_only(mod.weight, mod.bias) for mod in linears]

    def use(chosen):
        for mod, product in zip(linears, chosen):
            mod.product = product

    cases = [(1, "F.linear / the engine's products", plain), (8, "F.linear / the engine's products", plain)]
    if native.library() is not None:
        cases += [(1, "oneDNN packed / with the C kernel", packed), (4, "oneDNN packed / with the C kernel", packed)]
    for rows, what, baseline in cases:
        prefill(decoder, rows)

        def step(chosen, rows=rows):
            use(chosen)
            with torch.inference_mode():
                decoder.step([5] * rows, [128] * rows, None)  # the same position again: the cache does not grow

        yield f"decode step, {rows} rows ({what})", lambda b=baseline: step(b), lambda: step(engine), 5
    use(engine)
    if native.library() is None:
        return
    # The engine before the small ops' kernels: the same model and products, torch's norms, rope and attention.
    same = model.Transformer(cfg)
    model.init_weights(same, 0)
    real = decode.native_modules
    decode.native_modules = lambda model: None
    try:
        torch_ops = decode.Decoder(same.to(torch.bfloat16).eval(), 8)
    finally:
        decode.native_modules = real
    for rows in (1, 8):
        for d in (decoder, torch_ops):
            prefill(d, rows)
        yield (f"decode step, {rows} rows (torch's small ops / their C kernels)",
               lambda rows=rows: one_step(torch_ops, rows), lambda rows=rows: one_step(decoder, rows), 5)


def prefill(decoder, rows):
    with torch.inference_mode():
        decoder.cache.reserve(rows, 200)
        for row in range(rows):
            decoder.prefill(row, list(range(1, 129)), None)


def one_step(decoder, rows):
    with torch.inference_mode():
        decoder.step([5] * rows, [128] * rows, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="products,native_products,mask,decode_ops,decode_step",
                    help="which groups of cases to run (comma-separated)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "decode_kernels.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    groups = {"products": products, "native_products": native_products, "mask": mask, "decode_ops": decode_ops,
              "decode_step": decode_step}
    for group in (groups[name] for name in args.only.split(",")):
        for name, plain, fast, calls in group():
            plain(), fast()
            a = b = (float("inf"), float("inf"))
            for _ in range(args.rounds):
                a = tuple(map(min, a, per_call(plain, calls)))
                b = tuple(map(min, b, per_call(fast, calls)))
            results.append({"case": name, "plain_ms": round(a[0] * 1e3, 3), "kernel_ms": round(b[0] * 1e3, 3),
                            "gain": round(a[0] / b[0], 2), "plain_cpu_ms": round(a[1] * 1e3, 3),
                            "kernel_cpu_ms": round(b[1] * 1e3, 3), "cpu_gain": round(a[1] / b[1], 2)})
            print(results[-1], flush=True)
    write_result(args.out, {"threads": torch.get_num_threads(), "results": results})


if __name__ == "__main__":
    main()
