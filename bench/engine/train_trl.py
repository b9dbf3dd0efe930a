"""LoRA training, the engine beside TRL's SFTTrainer + PEFT, in one run on the same machine.

    PYTHONPATH=engine python bench/engine/train_trl.py --shape smollm2-135m

Both train the same random bf16 weights (the engine's `init`) on the same examples (lengths
uniform in seq_len/8..seq_len, the second half of each trained) in the same batches (TRL reads
them in the engine's epoch order, sequentially), 8 examples a step, LoRA r=8
alpha 16 on every linear layer of attention and MLP, bf16, the same torch threads and OpenMP wait policy, each in its own
child process. The engine packs; TRL runs its defaults for a pre-tokenized dataset (padding to the
longest example of the batch, `completion_only_loss`) except gradient checkpointing (off, as in the
engine's run), SDPA attention. Tokens/s counts real
tokens (padding excluded) over the steps after the first `--warmup-steps`. `--rounds` runs both
that many times, alternating which goes first, since other processes on the machine move the
figures between runs; the ratio is of the means over rounds. Writes
results/train-vs-trl-<shape>.json with the machine and the load averages, and prints the ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from result_file import write_result  # noqa: E402
from train_cpu import prepare, run_engine, tokens_per_second  # noqa: E402
from tunelab_engine.data import epoch_order  # noqa: E402


def trl_child(model_dir, train_dir, args):
    """Runs in its own process: TRL's SFTTrainer with a PEFT LoRA, one step per batch of 8."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    ids = np.load(os.path.join(train_dir, "input_ids.npy"))
    mask = np.load(os.path.join(train_dir, "loss_mask.npy"))
    offsets = np.load(os.path.join(train_dir, "offsets.npy"))
    # The engine's order (data.epoch_order, its seed 0, epoch 0), read sequentially: the same
    # examples in the same steps, so both pad or pack the same batches.
    order = epoch_order(len(offsets) - 1, 0, 0)
    rows = {"input_ids": [ids[offsets[i]:offsets[i + 1]].tolist() for i in order],
            "completion_mask": [mask[offsets[i]:offsets[i + 1]].tolist() for i in order]}
    # The data is token ids already; the trainer still wants a tokenizer for its pad id.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>")),
                                        pad_token="<pad>", eos_token="<eos>")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    step_ends, step_tokens = [], []

    class Timing(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            mask = inputs.get("attention_mask")
            step_tokens.append(int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, *rest, **kw)

    config = SFTConfig(output_dir=os.path.join(os.path.dirname(train_dir), "trl-out"), per_device_train_batch_size=args.batch_size,
                       max_steps=args.steps, learning_rate=1e-4, bf16=True, use_cpu=True, max_length=args.seq_len,
                       completion_only_loss=True, logging_steps=args.steps, save_strategy="no", report_to=[],
                       gradient_checkpointing=False,  # SFTConfig turns it on by default; the engine's run has none
                       dataloader_num_workers=0, seed=0, train_sampling_strategy="sequential")
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = Counting(model=model, args=config, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer,
                       peft_config=lora, callbacks=[Timing()])
    start = time.perf_counter()
    trainer.train()
    starts = [start] + step_ends[:-1]
    steps = [{"tokens": n, "tokens_per_second": n / (end - begin)} for n, begin, end in zip(step_tokens, starts, step_ends)]
    print(json.dumps({"steps": steps}))


def run_trl(model_dir, train_dir):
    """trl_child in its own process: its step events."""
    child = subprocess.run([sys.executable, __file__, "--trl-child", model_dir, train_dir] + sys.argv[1:],
                           stdout=subprocess.PIPE, text=True,
                           # The engine's thread waiting for both (runtime.py): spinning OpenMP
                           # threads on shared cores would slow TRL, not the engine.
                           env=dict(os.environ, TOKENIZERS_PARALLELISM="false",
                                    OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE")))
    if child.returncode != 0:
        sys.exit("the TRL run failed")
    return json.loads(child.stdout.strip().splitlines()[-1])["steps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--trl-child", nargs=2, metavar=("MODEL", "TRAIN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_child:
        return trl_child(*args.trl_child, args)
    args.method, args.dtype = "lora", "bfloat16"
    rounds, loads = [], [[round(x, 2) for x in os.getloadavg()]]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, train_dir = prepare(tmp, args.shape, args.batch_size * args.steps, args.seq_len)
        for r in range(args.rounds):
            runs = {}
            for who in (("engine", "trl") if r % 2 == 0 else ("trl", "engine")):
                if who == "engine":
                    started, runs["engine"], _ = run_engine(tmp, model_dir, train_dir, args)
                else:
                    runs["trl"] = run_trl(model_dir, train_dir)
                loads.append([round(x, 2) for x in os.getloadavg()])
            rounds.append({"first": "engine" if r % 2 == 0 else "trl",
                           "engine_tokens_per_second": tokens_per_second(runs["engine"], args.warmup_steps),
                           "trl_tokens_per_second": tokens_per_second(runs["trl"], args.warmup_steps),
                           "engine_step_tokens": [e["tokens"] for e in runs["engine"]],
                           "trl_step_tokens": [e["tokens"] for e in runs["trl"]]})
            rounds[-1]["ratio"] = round(rounds[-1]["engine_tokens_per_second"] / rounds[-1]["trl_tokens_per_second"], 2)
            print(json.dumps(rounds[-1]), flush=True)
    engine_tps = round(sum(r["engine_tokens_per_second"] for r in rounds) / len(rounds), 1)
    trl_tps = round(sum(r["trl_tokens_per_second"] for r in rounds) / len(rounds), 1)
    import peft
    import transformers
    import trl
    figures = {
        "shape": args.shape, "lora_rank": args.rank, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "steps": args.steps, "timed_steps": args.steps - args.warmup_steps, "dtype": "bfloat16", "threads": started["threads"],
        "engine_tokens_per_second": engine_tps, "trl_tokens_per_second": trl_tps, "ratio": round(engine_tps / trl_tps, 2),
        "rounds": rounds,
        # 1/5/15-minute load averages before the first run and after each run, in run order.
        "load_average_each_run": loads,
    }
    result = write_result(os.path.join(HERE, "results", f"train-vs-trl-{args.shape}.json"), figures,
                          transformers=transformers.__version__, peft=peft.__version__, trl=trl.__version__)
    print(json.dumps(result, indent=2))
    print(f"engine {engine_tps} tok/s, TRL SFTTrainer+PEFT {trl_tps} tok/s: {result['ratio']}x")


if __name__ == "__main__":
    main()
