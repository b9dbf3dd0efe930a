"""Where a training step's time goes: torch.profiler over the engine's own `Trainer.train_step`.

    PYTHONPATH=engine python bench/engine/profile_train.py --shape smollm2-135m --steps 2

The same random bf16 model and examples as train_cpu.py (LoRA r=8 on all linear layers, seq_len
256, 8 examples a step), in this process: `--warmup-steps` steps run unprofiled first (oneDNN
builds its kernels), then `--steps` steps under the profiler. Prints the ops by self CPU time, the
step times and the load average; writes nothing (a profile is read, not compared).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the engine's default (runtime.py), before torch loads

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from result_file import cpu_model  # noqa: E402
from train_cpu import prepare  # noqa: E402

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from shapes import SHAPES  # noqa: E402
from tunelab_engine import spec as spec_mod, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", type=int, default=30, help="ops listed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n_steps = args.warmup_steps + args.steps
        model_dir, train_dir = prepare(tmp, args.shape, 8 * n_steps, 256)
        spec = spec_mod.from_dict({
            "model": model_dir, "train_data": train_dir, "output_dir": os.path.join(tmp, "out"),
            "work_dir": os.path.join(tmp, "work"), "n_epochs": 1, "batch_size": 8, "learning_rate": 1e-4,
            "seq_len": 256, "training": "lora", "lora": {"rank": 8, "alpha": 16}, "dtype": "bfloat16",
            "device": "cpu", "threads": args.threads})
        trainer = train.Trainer(spec)
        rows = [trainer.step_rows(0, i) for i in range(n_steps)]
        for r in rows[:args.warmup_steps]:
            trainer.train_step(r)
        load_before = os.getloadavg()
        seconds, tokens = [], 0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for r in rows[args.warmup_steps:]:
                t0 = time.perf_counter()
                _, _, step_tokens = trainer.train_step(r)
                tokens += step_tokens
                seconds.append(round(time.perf_counter() - t0, 3))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))
    print(f"{args.shape}, {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"{tokens} tokens in steps of {seconds} s ({tokens / sum(seconds):.1f} tok/s under the profiler), "
          f"load {load_before} before, {os.getloadavg()} after")


if __name__ == "__main__":
    main()
