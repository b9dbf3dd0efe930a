"""GPU training benchmark: the engine against transformers + PEFT, side by side in one process.

    python3 bench/engine/train_gpu.py --shapes smollm2-135m,qwen2.5-0.5b,llama3-8b

Needs CUDA, torch 2.x, transformers and peft. Both sides get random weights of the same shape in
bf16, LoRA r=16 (alpha 32) on all linear layers of attention and MLP, AdamW, and the same rows of
`--seq-len` random tokens, every token trained. Writes bench/engine/results/train-gpu.json.

MFU counts the FLOPs a LoRA step must do per token: 2N forward and 2N for the input gradients
through the frozen weights (N = non-embedding parameters plus the output layer), 6 per LoRA
parameter, and causal attention (3 passes x 2 matmuls x 2 FLOPs x layers x seq_len x heads*head_dim / 2),
divided by the GPU's dense bf16 peak (--peak-tflops, 989 for H100/H200 SXM).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "engine"))

from result_file import write_result  # noqa: E402
from shapes import SHAPES  # noqa: E402
from tunelab_engine import config as config_mod, data, lora  # noqa: E402
from tunelab_engine.model import Transformer  # noqa: E402
from tunelab_engine.train import make_optimizer, scored  # noqa: E402

TARGETS = list(lora.ALL_LINEAR)


def flops_per_token(cfg, seq_len, lora_params):
    attn_width = cfg.num_attention_heads * cfg.head_dim
    kv_width = cfg.num_key_value_heads * cfg.head_dim
    per_layer = cfg.hidden_size * (attn_width * 2 + kv_width * 2) + 3 * cfg.hidden_size * cfg.intermediate_size
    frozen = cfg.num_hidden_layers * per_layer + cfg.vocab_size * cfg.hidden_size
    attention = 3 * 2 * 2 * cfg.num_hidden_layers * seq_len * attn_width / 2
    return 4 * frozen + 6 * lora_params + attention


def timed(step, steps, warmup):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def random_rows(folder, vocab, rows, seq_len):
    ids = np.random.default_rng(0).integers(0, vocab, size=rows * seq_len, dtype=np.int32)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "input_ids.npy"), ids)
    np.save(os.path.join(folder, "loss_mask.npy"), np.ones(rows * seq_len, dtype=np.uint8))
    np.save(os.path.join(folder, "offsets.npy"), np.arange(0, rows * seq_len + 1, seq_len, dtype=np.int64))
    return data.Arrays(folder, vocab)


def ours(raw, arrays, args):
    cfg = config_mod.from_dict(dict(raw))
    model = Transformer(cfg, device="meta")
    model.to_empty(device="cuda")
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    params = lora.apply(model, args.rank, 2 * args.rank, 0.0, TARGETS)
    lora.fuse(model)  # as the training loop does
    model.gradient_checkpointing = args.gradient_checkpointing
    model.train()

    class Spec:
        learning_rate, adam_beta1, adam_beta2, adam_eps, weight_decay = 1e-4, 0.9, 0.999, 1e-8, 0.0
    opt = make_optimizer(params, Spec)
    batch = data.Batch(arrays, [[i] for i in range(arrays.n_examples)], args.seq_len, torch.device("cuda"))

    def step():
        loss, _ = scored(model, batch, torch.bfloat16, False)
        (loss / len(batch.labels)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = timed(step, args.steps, args.warmup)
    result = cfg, sum(p.numel() for p in params), seconds, torch.cuda.max_memory_allocated()
    del model, opt, params
    torch.cuda.empty_cache()
    return result


def reference(raw, arrays, args):
    import peft
    import transformers
    cfg = transformers.AutoConfig.for_model(**raw)
    attn = "flash_attention_2" if args.flash else "sdpa"
    torch.cuda.reset_peak_memory_stats()
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation=attn)
    model = peft.get_peft_model(model, peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS,
                                                       lora_dropout=0.0, task_type="CAUSAL_LM"))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    ids = torch.from_numpy(np.asarray(arrays.input_ids).astype(np.int64)).view(-1, args.seq_len).cuda()

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = timed(step, args.steps, args.warmup)
    peak = torch.cuda.max_memory_allocated()
    del model, opt, params
    torch.cuda.empty_cache()
    return seconds, peak, transformers.__version__, peft.__version__, attn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b,llama3-8b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=0, help="rows per step (default: 8, 4 for 0.5B, 1 for 8B)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--flash", action="store_true", help="transformers with flash_attention_2 instead of sdpa")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "train-gpu.json"))
    args = ap.parse_args()
    results = []
    for shape in args.shapes.split(","):
        raw = SHAPES[shape]
        rows = args.rows or {"llama3-8b": 1, "qwen2.5-0.5b": 4}.get(shape, 8)
        with tempfile.TemporaryDirectory() as tmp:
            arrays = random_rows(tmp, raw["vocab_size"], rows, args.seq_len)
            torch.cuda.reset_peak_memory_stats()
            cfg, lora_params, our_s, our_peak = ours(raw, arrays, args)
            ref_s, ref_peak, tf_version, peft_version, attn = reference(raw, arrays, args)
        tokens = rows * args.seq_len
        fpt = flops_per_token(cfg, args.seq_len, lora_params)
        entry = {
            "shape": shape, "rows": rows, "seq_len": args.seq_len, "lora_rank": args.rank,
            "engine": {"tokens_per_second": round(tokens / our_s), "mfu": round(fpt * tokens / our_s / args.peak_tflops / 1e12, 4),
                       "peak_memory_gib": round(our_peak / 2 ** 30, 2)},
            "transformers_peft": {"tokens_per_second": round(tokens / ref_s), "mfu": round(fpt * tokens / ref_s / args.peak_tflops / 1e12, 4),
                                  "peak_memory_gib": round(ref_peak / 2 ** 30, 2), "attn_implementation": attn,
                                  "transformers": tf_version, "peft": peft_version},
            "speedup": round(ref_s / our_s, 3),
        }
        print(json.dumps(entry), flush=True)
        results.append(entry)
    write_result(args.out, {"peak_tflops": args.peak_tflops, "results": results}, gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)


if __name__ == "__main__":
    main()
