"""The engine's CPU training figures on two torch builds, side by side: an older tree under one
Python (say Debian's torch 1.13) and this tree under another (torch 2.x from PyPI), alternated run by
run so both see the same machine.

    git archive 27cf95f | tar -x -C /tmp/engine-1.13
    python3 bench/engine/torch_versions.py --old-tree /tmp/engine-1.13 --old-python /usr/bin/python3 \\
        --new-python .venv/bin/python --shape smollm2-135m --steps 10 --rounds 3

Each run is that tree's own `bench/engine/train_cpu.py` (same shape, steps and settings); writes
results/train-cpu-torch-versions-<shape>.json with every run, the load averages and the ratio of
the means (new / old).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

from result_file import write_result  # noqa: E402


def run(tree, python, args):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([python, os.path.join(tree, "bench", "engine", "train_cpu.py"), "--shape", args.shape,
                        "--steps", str(args.steps), "--out", out.name],
                       env=dict(os.environ, PYTHONPATH=os.path.join(tree, "engine")), check=True,
                       stdout=subprocess.DEVNULL)
        with open(out.name) as f:
            result = json.load(f)
    # A tree older than result_file.py wrote its load averages beside the machine, not under it.
    result.setdefault("load_average", result["machine"].get("load_average"))
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-tree", required=True)
    ap.add_argument("--old-python", required=True)
    ap.add_argument("--new-python", default=sys.executable)
    ap.add_argument("--shape", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs = {"old": [], "new": []}
    for _ in range(args.rounds):
        for side, tree, python in (("old", args.old_tree, args.old_python), ("new", TREE, args.new_python)):
            result = run(tree, python, args)
            runs[side].append({key: result[key] for key in ("tokens_per_second", "load_average", "peak_rss_mib", "dtype", "threads")}
                              | {"torch": result["machine"]["torch"]})
            print(side, result["machine"]["torch"], result["tokens_per_second"], result["load_average"], flush=True)
    mean = {side: round(statistics.mean(r["tokens_per_second"] for r in runs[side]), 1) for side in runs}
    figures = {
        "shape": args.shape, "steps": args.steps,
        "old": {"tree": args.old_tree, "python": args.old_python, "mean_tokens_per_second": mean["old"], "runs": runs["old"]},
        "new": {"tree": TREE, "python": args.new_python, "mean_tokens_per_second": mean["new"], "runs": runs["new"]},
        "ratio_new_over_old": round(mean["new"] / mean["old"], 3),
    }
    summary = write_result(os.path.join(HERE, "results", f"train-cpu-torch-versions-{args.shape}.json"), figures)
    print(json.dumps({"cpu": summary["machine"]["cpu"], "shape": args.shape, "ratio_new_over_old": summary["ratio_new_over_old"], "means": mean}))


if __name__ == "__main__":
    main()
