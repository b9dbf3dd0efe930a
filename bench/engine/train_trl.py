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
figures between runs; the ratio is of the means over rounds. Each side is also counted per CPU
second: the child's user + system time over the same steps, read from /proc as each step's event
arrives (tokens per CPU second, `cpu_ratio`), which other processes' load moves far less than wall
time. Writes results/train-vs-trl-<shape>.json with the machine and the load averages (the run
before under `earlier_run`), and prints both ratios per round and of the means.
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
from train_cpu import prepare, run_child, run_engine, tokens_per_cpu_second, tokens_per_second  # noqa: E402
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
    step_tokens = []
    print(json.dumps({"type": "started", "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}), flush=True)

    class Timing(TrainerCallback):
        """A step event at each step's end, as the engine's, for the parent to read this process's CPU time at."""
        def __init__(self):
            self.last = None

        def on_step_begin(self, *_, **__):
            # The first step's clock starts at its beginning; each later one at the end of the one before.
            self.last = self.last or time.perf_counter()

        def on_step_end(self, *_, **__):
            now, tokens = time.perf_counter(), step_tokens[-1]
            print(json.dumps({"type": "step", "tokens": tokens, "tokens_per_second": tokens / (now - self.last),
                              "threads": torch.get_num_threads()}), flush=True)
            self.last = now

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
    trainer.train()


def run_trl(model_dir, train_dir):
    """trl_child in its own process: (its started event, its step events)."""
    events, returncode = run_child([sys.executable, __file__, "--trl-child", model_dir, train_dir] + sys.argv[1:],
                                   dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if returncode != 0:
        sys.exit("the TRL run failed")
    return next(e for e in events if e["type"] == "started"), [e for e in events if e["type"] == "step"]


def side(steps, warmup_steps):
    """One side's figures of one run: tokens per wall second and per CPU second, and the cores it kept busy."""
    wall, cpu = tokens_per_second(steps, warmup_steps), tokens_per_cpu_second(steps, warmup_steps)
    return {"tokens_per_second": wall, "tokens_per_cpu_second": cpu, "cores_busy": round(wall / cpu, 2),
            "step_tokens": [e["tokens"] for e in steps]}


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
    if args.warmup_steps < 1:
        ap.error("--warmup-steps: at least 1 (each side's CPU time is counted from the end of a step)")
    args.method, args.dtype = "lora", "bfloat16"
    # Both children inherit these: the same torch threads (the engine reads TUNELAB_THREADS, TRL's
    # child --threads) and idle threads that sleep, so CPU time is work, not spinning.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["TUNELAB_THREADS"] = str(args.threads)
    rounds, loads = [], [[round(x, 2) for x in os.getloadavg()]]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, train_dir = prepare(tmp, args.shape, args.batch_size * args.steps, args.seq_len)
        for r in range(args.rounds):
            runs = {}
            for who in (("engine", "trl") if r % 2 == 0 else ("trl", "engine")):
                if who == "engine":
                    started, runs["engine"], _ = run_engine(tmp, model_dir, train_dir, args)
                else:
                    trl_started, runs["trl"] = run_trl(model_dir, train_dir)
                loads.append([round(x, 2) for x in os.getloadavg()])
            trl_threads = {trl_started["threads"]} | {e["threads"] for e in runs["trl"]}
            if trl_threads != {started["threads"]} or trl_started["omp_wait_policy"] != os.environ["OMP_WAIT_POLICY"]:
                sys.exit(f"the sides differ: engine {started['threads']} threads, TRL {sorted(trl_threads)} threads "
                         f"with OMP_WAIT_POLICY={trl_started['omp_wait_policy']}")
            engine, trl_side = side(runs["engine"], args.warmup_steps), side(runs["trl"], args.warmup_steps)
            rounds.append({"first": "engine" if r % 2 == 0 else "trl", "engine": engine, "trl": trl_side,
                           "ratio": round(engine["tokens_per_second"] / trl_side["tokens_per_second"], 2),
                           "cpu_ratio": round(engine["tokens_per_cpu_second"] / trl_side["tokens_per_cpu_second"], 2)})
            print(json.dumps(rounds[-1]), flush=True)

    def mean(who, figure):
        return round(sum(r[who][figure] for r in rounds) / len(rounds), 1)

    engine_tps, trl_tps = mean("engine", "tokens_per_second"), mean("trl", "tokens_per_second")
    engine_cpu, trl_cpu = mean("engine", "tokens_per_cpu_second"), mean("trl", "tokens_per_cpu_second")
    import peft
    import transformers
    import trl
    figures = {
        "shape": args.shape, "lora_rank": args.rank, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "steps": args.steps, "timed_steps": args.steps - args.warmup_steps, "dtype": "bfloat16", "threads": started["threads"],
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "engine_tokens_per_second": engine_tps, "trl_tokens_per_second": trl_tps, "ratio": round(engine_tps / trl_tps, 2),
        # Real tokens over each child's user + system CPU seconds (all its threads) across the timed steps.
        "engine_tokens_per_cpu_second": engine_cpu, "trl_tokens_per_cpu_second": trl_cpu, "cpu_ratio": round(engine_cpu / trl_cpu, 2),
        "rounds": rounds,
        # 1/5/15-minute load averages before the first run and after each run, in run order.
        "load_average_each_run": loads,
    }
    path = os.path.join(HERE, "results", f"train-vs-trl-{args.shape}.json")
    if os.path.exists(path):
        with open(path) as f:
            earlier = json.load(f)
        # The run before this one (older ones are in git's history of the file).
        figures["earlier_run"] = {k: v for k, v in earlier.items() if k != "earlier_run"}
    result = write_result(path, figures, transformers=transformers.__version__, peft=peft.__version__, trl=trl.__version__)
    print(json.dumps({k: v for k, v in result.items() if k != "earlier_run"}, indent=2))
    for r in rounds:
        print(f"round, {r['first']} first: engine {r['engine']['tokens_per_second']} / TRL {r['trl']['tokens_per_second']} tok/s "
              f"({r['ratio']}x); per CPU second {r['engine']['tokens_per_cpu_second']} / {r['trl']['tokens_per_cpu_second']} ({r['cpu_ratio']}x)")
    print(f"ratio of means: engine {engine_tps} tok/s, TRL SFTTrainer+PEFT {trl_tps} tok/s: {result['ratio']}x; "
          f"per CPU second {engine_cpu} / {trl_cpu}: {result['cpu_ratio']}x")

if __name__ == "__main__":
    main()
