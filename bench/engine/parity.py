"""Parity fixtures: tiny random models built by transformers, and the logits transformers computes.

Run where transformers is installed (a GPU host; CPU is fine too, the models are tiny):

    python3 bench/engine/parity.py --out engine/tests/fixtures/parity

For each family it writes <out>/<family>/: the model folder as `save_pretrained` writes it
(config.json, safetensors, sharded for `llama-sharded`), and `expected.safetensors` holding
`input_ids` (int64 [2, 24]) and `logits` (float32 [2, 24, vocab]) from eager fp32 attention.
engine/tests/test_parity.py loads each folder with the engine and requires max |diff| <= 1e-4.
Commit the output folder: from then on CI checks parity on every run without transformers.
"""

import argparse
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "engine"))
from tunelab_engine import safetensors  # noqa: E402

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)

FAMILIES = {
    "llama": lambda: LlamaConfig(**COMMON, rope_theta=10000.0, tie_word_embeddings=False),
    "llama3": lambda: LlamaConfig(**COMMON, rope_theta=500000.0, tie_word_embeddings=False,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "llama-sharded": lambda: LlamaConfig(**COMMON, rope_theta=10000.0, tie_word_embeddings=False),
    "smollm": lambda: LlamaConfig(**dict(COMMON, num_key_value_heads=1), rope_theta=100000.0, tie_word_embeddings=True),
    "mistral": lambda: MistralConfig(**COMMON, rope_theta=10000.0, sliding_window=8, tie_word_embeddings=False),
    "qwen2": lambda: Qwen2Config(**COMMON, rope_theta=1000000.0, tie_word_embeddings=True),
    "qwen3": lambda: Qwen3Config(**COMMON, head_dim=32, rope_theta=1000000.0, tie_word_embeddings=True),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join("engine", "tests", "fixtures", "parity"))
    args = ap.parse_args()
    for family, make_config in FAMILIES.items():
        torch.manual_seed(0)
        config = make_config()
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", torch_dtype=torch.float32).eval()
        folder = os.path.join(args.out, family)
        os.makedirs(folder, exist_ok=True)
        shard = "8KB" if family.endswith("sharded") else "5GB"
        model.save_pretrained(folder, safe_serialization=True, max_shard_size=shard)
        ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = model(ids).logits.float()
        safetensors.save_file({"input_ids": ids, "logits": logits.contiguous()}, os.path.join(folder, "expected.safetensors"),
                              {"transformers": transformers.__version__, "torch": torch.__version__})
        print(f"{family}: {folder}", flush=True)


if __name__ == "__main__":
    main()
