"""Two processes under torchrun (gloo, CPU): this engine against another checkout's engine, runs
alternated, on a random model of a real shape.

    mkdir /tmp/engine-before && git archive <commit> engine | tar -x -C /tmp/engine-before   # e.g. 16567dc, the hand-written all-reduce
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=engine /work/venv/bin/python bench/engine/distributed_bench.py \
        --baseline /tmp/engine-before/engine --shape smollm2-135m --method lora

Writes bench/engine/results/distributed-<shape>-<method>.json: the command, the machine, the load
averages, tokens/s of every run of each engine and the ratio of their medians (this / baseline).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "..", "engine")
sys.path.insert(0, HERE)

from result_file import write_result  # noqa: E402
from train_cpu import prepare, tokens_per_second  # noqa: E402


def run(engine, tmp, model_dir, train_dir, args, name):
    spec = {"model": model_dir, "train_data": train_dir, "output_dir": os.path.join(tmp, f"out-{name}"),
            "work_dir": os.path.join(tmp, f"work-{name}"), "n_epochs": 1, "batch_size": args.batch_size,
            "learning_rate": 1e-4, "seq_len": args.seq_len, "training": args.method,
            "lora": {"rank": args.rank, "alpha": 2 * args.rank}, "dtype": "float32", "device": "cpu"}
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}",
                           "-m", "tunelab_engine", "train", "--spec", path],
                          env=dict(os.environ, PYTHONPATH=engine), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        sys.exit(f"{engine}: train failed: {proc.stderr[-2000:]}")
    return tokens_per_second([e for e in events if e["type"] == "step"], args.warmup_steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="the engine folder of the checkout to compare with")
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tokens = {"this": [], "baseline": []}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, train_dir = prepare(tmp, args.shape, args.batch_size * args.steps, args.seq_len)
        for r in range(args.rounds):
            # Alternated, the order flipped each round, so drifting load hits both alike.
            order = [("this", ENGINE), ("baseline", args.baseline)]
            for name, engine in order if r % 2 == 0 else order[::-1]:
                tokens[name].append(run(engine, tmp, model_dir, train_dir, args, f"{name}-{r}"))
    figures = {
        "shape": args.shape, "method": args.method, "processes": args.processes, "seq_len": args.seq_len,
        "batch_size": args.batch_size, "timed_steps": args.steps - args.warmup_steps,
        "tokens_per_second": tokens,
        "ratio_of_medians": round(statistics.median(tokens["this"]) / statistics.median(tokens["baseline"]), 3),
        "wall_s": round(time.time() - started, 1),
    }
    out = os.path.join(HERE, "results", f"distributed-{args.shape}-{args.method}.json")
    print(json.dumps(write_result(out, figures), indent=2))


if __name__ == "__main__":
    main()
