"""DPO with LoRA, the engine beside TRL's DPOTrainer + PEFT, in one run on the same machine.

    PYTHONPATH=engine python bench/engine/dpo_trl.py --shape smollm2-135m --rounds 2

Both train the same random bf16 weights (the engine's `init`) on the same pairs (a prompt of
64..128 tokens, chosen and rejected answers of 32..96 tokens each), 4 pairs a step, beta 0.1,
LoRA r=8 alpha 16 on every linear layer of attention and MLP, bf16, the same torch threads and
OpenMP wait policy (PASSIVE), each in its own child process; the engine and TRL alternate,
`--rounds` times. TRL runs its defaults (the reference by switching the adapter off, every step)
except gradient checkpointing (off, as in the engine's run), SDPA attention. The engine computes
the reference once before its first step; that pass is reported apart (`engine_reference_s`) and
also charged to the engine in `ratio_with_reference` (one epoch over the timed pairs).
Pairs/s counts the steps after the first `--warmup-steps`. Writes results/dpo-vs-trl-<shape>.json
with the machine and the load averages, and prints the ratios.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "..", "engine")
sys.path.insert(0, HERE)

from shapes import SHAPES  # noqa: E402
from result_file import write_result  # noqa: E402


def write_pairs(tmp, vocab, n_pairs, seed=0):
    """(prompt, chosen, rejected) id lists, and the engine's arrays of them (train/)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_pairs):
        prompt = rng.integers(2, vocab, size=int(rng.integers(64, 129))).tolist()
        chosen = rng.integers(2, vocab, size=int(rng.integers(32, 97))).tolist()
        rejected = rng.integers(2, vocab, size=int(rng.integers(32, 97))).tolist()
        pairs.append((prompt, chosen, rejected))
    ids, mask, offsets = [], [], [0]
    for prompt, *answers in pairs:
        for answer in answers:
            ids += prompt + answer
            mask += [0] * len(prompt) + [1] * len(answer)
            offsets.append(len(ids))
    folder = os.path.join(tmp, "train")
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "input_ids.npy"), np.asarray(ids, dtype=np.int32))
    np.save(os.path.join(folder, "loss_mask.npy"), np.asarray(mask, dtype=np.uint8))
    np.save(os.path.join(folder, "offsets.npy"), np.asarray(offsets, dtype=np.int64))
    with open(os.path.join(tmp, "pairs.json"), "w") as f:
        json.dump(pairs, f)
    return folder


def run_engine(tmp, model_dir, train_dir, args, round_):
    """(step events, reference seconds) of the engine's `train` as a child process."""
    env = dict(os.environ, PYTHONPATH=ENGINE)
    spec = {"model": model_dir, "train_data": train_dir, "output_dir": os.path.join(tmp, f"out-{round_}"),
            "work_dir": os.path.join(tmp, f"work-{round_}"), "n_epochs": 1, "batch_size": args.pairs_per_step,
            "learning_rate": 1e-5, "seq_len": 256, "training": "lora", "method": "dpo", "dpo": {"beta": 0.1},
            "lora": {"rank": args.rank, "alpha": 2 * args.rank}, "dtype": "bfloat16", "device": "cpu",
            "threads": args.threads}
    spec_path = os.path.join(tmp, f"spec-{round_}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    # Each round computes its own reference (the file beside the arrays would be read back otherwise).
    reference = os.path.join(train_dir, "reference_logps.npy")
    if os.path.exists(reference):
        os.remove(reference)
    proc = subprocess.run([sys.executable, "-m", "tunelab_engine", "train", "--spec", spec_path], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        sys.exit(f"the engine failed: {events[-1] if events else proc.stderr[-2000:]}")
    seconds = float(re.search(r"reference log-probabilities of \d+ pairs in .*: ([\d.]+) s", proc.stderr).group(1))
    return [e for e in events if e["type"] == "step"], seconds


def trl_child(model_dir, tmp, args):
    """Runs in its own process: TRL's DPOTrainer with a PEFT LoRA, one step per `pairs_per_step` pairs."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.threads)
    with open(os.path.join(tmp, "pairs.json")) as f:
        pairs = json.load(f)
    vocab = SHAPES[args.shape]["vocab_size"]
    # The pairs are token ids; TRL tokenizes text, so each id is a word of a word-level tokenizer.
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="w0", eos_token="w1")
    text = lambda ids: "".join(f" w{i}" for i in ids)  # noqa: E731
    dataset = Dataset.from_dict({"prompt": [text(p).strip() for p, _, _ in pairs], "chosen": [text(c) for _, c, _ in pairs],
                                 "rejected": [text(r) for _, _, r in pairs]})
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    step_ends, step_tokens = [], []

    class Timing(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    class Counting(DPOTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            step_tokens.append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, *rest, **kw)

    config = DPOConfig(output_dir=os.path.join(tmp, "trl-out"), per_device_train_batch_size=args.pairs_per_step,
                       max_steps=args.steps, learning_rate=1e-5, beta=0.1, bf16=True, use_cpu=True, max_length=None,
                       logging_steps=args.steps, save_strategy="no", report_to=[], gradient_checkpointing=False,
                       dataloader_num_workers=0, seed=0)
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = Counting(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
                       callbacks=[Timing()])
    start = time.perf_counter()
    trainer.train()
    starts = [start] + step_ends[:-1]
    print(json.dumps({"steps": [{"tokens": n, "seconds": end - begin} for n, begin, end in zip(step_tokens, starts, step_ends)]}))


def write_rounds(args, rounds):
    """Rewritten after every round, so a run cut short keeps what it measured."""
    import peft
    import transformers
    import trl
    figures = {
        "shape": args.shape, "lora_rank": args.rank, "pairs_per_step": args.pairs_per_step, "steps": args.steps,
        "timed_steps": args.steps - args.warmup_steps, "threads": args.threads, "beta": 0.1, "dtype": "bfloat16",
        "rounds": rounds,
    }
    write_result(os.path.join(HERE, "results", f"dpo-vs-trl-{args.shape}.json"), figures,
                 transformers=transformers.__version__, peft=peft.__version__, trl=trl.__version__)


def pairs_per_second(seconds, pairs_per_step, warmup):
    timed = seconds[warmup:]
    return round(pairs_per_step * len(timed) / sum(timed), 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--pairs-per-step", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="engine and TRL runs, alternated")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--trl-child", nargs=2, metavar=("MODEL", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_child:
        return trl_child(*args.trl_child, args)
    env = dict(os.environ, PYTHONPATH=ENGINE, TOKENIZERS_PARALLELISM="false",
               OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(SHAPES[args.shape], f)
        model_dir = os.path.join(tmp, "model")
        subprocess.run([sys.executable, "-m", "tunelab_engine", "init", "--config", os.path.join(tmp, "config.json"),
                        "--seed", "0", "--out", model_dir, "--dtype", "bfloat16"], env=env, check=True, stdout=subprocess.DEVNULL)
        train_dir = write_pairs(tmp, SHAPES[args.shape]["vocab_size"], args.pairs_per_step * args.steps)
        for round_ in range(args.rounds):
            load = [round(x, 2) for x in os.getloadavg()]
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
            steps, reference_s = run_engine(tmp, model_dir, train_dir, args, round_)
            engine_seconds = [e["tokens"] / e["tokens_per_second"] for e in steps]
            child = subprocess.run([sys.executable, __file__, "--trl-child", model_dir, tmp] + sys.argv[1:],
                                   stdout=subprocess.PIPE, text=True, env=env)
            if child.returncode != 0:
                sys.exit("the TRL run failed")
            theirs = json.loads(child.stdout.strip().splitlines()[-1])["steps"]
            ours_pps = pairs_per_second(engine_seconds, args.pairs_per_step, args.warmup_steps)
            trl_pps = pairs_per_second([s["seconds"] for s in theirs], args.pairs_per_step, args.warmup_steps)
            timed_pairs = args.pairs_per_step * (args.steps - args.warmup_steps)
            # The reference pass covers every pair once; charge the timed pairs' share of it.
            share = reference_s * timed_pairs / (args.pairs_per_step * args.steps)
            with_reference = round(timed_pairs / (sum(engine_seconds[args.warmup_steps:]) + share), 3)
            rounds.append({"engine_commit": commit, "load_average_before": load, "engine_pairs_per_second": ours_pps, "trl_pairs_per_second": trl_pps,
                           "ratio": round(ours_pps / trl_pps, 2), "engine_reference_s": round(reference_s, 2),
                           "engine_pairs_per_second_with_reference": with_reference,
                           "ratio_with_reference": round(with_reference / trl_pps, 2),
                           "engine_step_s": [round(s, 3) for s in engine_seconds],
                           "trl_step_s": [round(s["seconds"], 3) for s in theirs],
                           "engine_step_tokens": [e["tokens"] for e in steps], "trl_step_tokens": [s["tokens"] for s in theirs]})
            print(json.dumps(rounds[-1]), flush=True)
            write_rounds(args, rounds)
    for r in rounds:
        print(f"engine {r['engine_pairs_per_second']} pairs/s ({r['engine_pairs_per_second_with_reference']} with its reference pass), "
              f"TRL DPOTrainer+PEFT {r['trl_pairs_per_second']} pairs/s: {r['ratio']}x ({r['ratio_with_reference']}x)")


if __name__ == "__main__":
    main()
