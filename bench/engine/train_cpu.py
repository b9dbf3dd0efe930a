"""CPU training benchmark: the engine's `train` command on a random model of a real shape.

    PYTHONPATH=engine /usr/bin/python3 bench/engine/train_cpu.py --shape smollm2-135m

Writes bench/engine/results/train-cpu-<shape>.json: the command, the machine, tokens/s over the
timed steps (real tokens, padding not counted) and the child's peak RSS.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "..", "engine")
sys.path.insert(0, HERE)
sys.path.insert(0, ENGINE)

from result_file import write_result  # noqa: E402
from shapes import SHAPES  # noqa: E402


def write_arrays(folder, vocab, n_examples, seq_len, seed):
    """Chat-like examples: lengths spread over [seq_len/8, seq_len], the second half trained."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq_len // 8, seq_len + 1, size=n_examples)
    ids = rng.integers(0, vocab, size=int(lengths.sum()), dtype=np.int32)
    mask = np.concatenate([(np.arange(n) >= n // 2) for n in lengths]).astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "input_ids.npy"), ids)
    np.save(os.path.join(folder, "loss_mask.npy"), mask)
    np.save(os.path.join(folder, "offsets.npy"), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def prepare(tmp, shape, n_examples, seq_len):
    """A random model of `shape` stored in bf16 (as the hub ships them) and the training arrays, in `tmp`."""
    env = dict(os.environ, PYTHONPATH=ENGINE)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(SHAPES[shape], f)
    model_dir = os.path.join(tmp, "model")
    subprocess.run([sys.executable, "-m", "tunelab_engine", "init", "--config", os.path.join(tmp, "config.json"),
                    "--seed", "0", "--out", model_dir, "--dtype", "bfloat16"], env=env, check=True, stdout=subprocess.DEVNULL)
    write_arrays(os.path.join(tmp, "train"), SHAPES[shape]["vocab_size"], n_examples, seq_len, 0)
    return model_dir, os.path.join(tmp, "train")


def process_cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far, all its threads (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(cmd, env):
    """`cmd` as a child process: (its JSON-line events, each with `cpu_s`, the child's process CPU
    seconds when the line arrived; its return code). Read here, not reported by the child, so every
    child is measured the same way, the engine's events unchanged."""
    events = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            if line.startswith('{"'):  # JSON lines; a trainer's printed dicts (single quotes) are not events
                events.append(dict(json.loads(line), cpu_s=process_cpu_seconds(child.pid)))
    return events, child.returncode


def run_engine(tmp, model_dir, train_dir, args):
    """The engine's `train` as a child process: (started event, step events, wall seconds)."""
    env = dict(os.environ, PYTHONPATH=ENGINE)
    spec = {"model": model_dir, "train_data": train_dir, "output_dir": os.path.join(tmp, "out"),
            "work_dir": os.path.join(tmp, "work"), "n_epochs": 1, "batch_size": args.batch_size,
            "learning_rate": 1e-4, "seq_len": args.seq_len, "training": args.method,
            "lora": {"rank": args.rank, "alpha": 2 * args.rank}, "dtype": args.dtype, "device": "cpu"}
    with open(os.path.join(tmp, "spec.json"), "w") as f:
        json.dump(spec, f)
    t0 = time.time()
    evs, returncode = run_child([sys.executable, "-m", "tunelab_engine", "train", "--spec", os.path.join(tmp, "spec.json")], env)
    wall = time.time() - t0
    if returncode != 0:
        sys.exit(f"train failed: {evs[-1] if evs else returncode}")
    return next(e for e in evs if e["type"] == "started"), [e for e in evs if e["type"] == "step"], wall


def tokens_per_second(steps, warmup_steps):
    """Real tokens over the seconds of the steps after the first `warmup_steps`."""
    timed = steps[warmup_steps:]
    return round(sum(e["tokens"] for e in timed) / sum(e["tokens"] / e["tokens_per_second"] for e in timed), 1)


def tokens_per_cpu_second(steps, warmup_steps):
    """Real tokens over the child's CPU seconds (all its threads) from the end of the last warmup
    step (so `warmup_steps` >= 1) to the end of the last step: what the load of other processes moves least."""
    timed = steps[warmup_steps:]
    return round(sum(e["tokens"] for e in timed) / (steps[-1]["cpu_s"] - steps[warmup_steps - 1]["cpu_s"]), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8, help="examples per step")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the timing")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, train_dir = prepare(tmp, args.shape, args.batch_size * args.steps, args.seq_len)
        started, steps, wall = run_engine(tmp, model_dir, train_dir, args)
        peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures = {
        "shape": args.shape, "method": args.method, "lora_rank": args.rank, "seq_len": args.seq_len,
        "batch_size": args.batch_size, "dtype": started["dtype"], "threads": started["threads"],
        "packing_efficiency": started["packing_efficiency"],
        "timed_steps": len(steps) - args.warmup_steps, "tokens_per_second": tokens_per_second(steps, args.warmup_steps),
        "step_seconds": [round(e["tokens"] / e["tokens_per_second"], 3) for e in steps],
        "peak_rss_mib": round(peak_rss_mib), "wall_s": round(wall, 1),
        "trainable_parameters": started["trainable_parameters"], "parameters": started["parameters"],
    }
    out = args.out or os.path.join(HERE, "results", f"train-cpu-{args.shape}-{args.method}.json")
    print(json.dumps(write_result(out, figures), indent=2))


if __name__ == "__main__":
    main()
