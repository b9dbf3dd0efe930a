"""CPU serving benchmark: the engine's `serve` command, spoken to over its pipes, on random models of
real shapes.

    PYTHONPATH=engine /usr/bin/python3 bench/engine/serve_bench.py

For each shape (default smollm2-135m and qwen2.5-0.5b; weights written by `init --dtype bfloat16`
as the hub ships them) it starts `python3 -m tunelab_engine serve --model DIR` and measures,
after one warm-up request:

- time to first token: a 128-token prompt sent, its first `tokens` event back (median of 3);
- one stream: 128 new tokens (greedy, no stop ids), decode tokens/s = 127 / (last token's arrival -
  first token's arrival), median of 3;
- 8 streams: 8 such requests (different prompts) written at once; aggregate decode tokens/s while
  all 8 decode together (tokens that arrive between the 8th stream's first token and the first
  stream's last token, over that time), median of 3; also tokens/s end to end (all 8 x 128 tokens
  over the time from the write to the last `done`, prefills included).

Writes bench/engine/results/serve_cpu.json: figures, command, machine, torch version, date, git
commit and the load averages around each shape (other processes on the two cores move the figures).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "..", "..", "engine")
sys.path.insert(0, HERE)

from shapes import SHAPES  # noqa: E402
from train_cpu import cpu_model  # noqa: E402


class Serve:
    def __init__(self, model_dir, env, extra):
        self.command = [sys.executable, "-m", "tunelab_engine", "serve", "--model", model_dir, *extra]
        self.proc = subprocess.Popen(self.command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.ready = self.next()[1]
        if self.ready.get("type") != "ready":
            raise SystemExit(f"serve did not start: {self.ready}")
        self.count = 0

    def next(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"serve exited with {self.proc.wait()}")
        return time.perf_counter(), json.loads(line)

    def send(self, prompts, max_tokens, **fields):
        """Writes one request per prompt in one write (`fields` added to each); returns (send time, their ids)."""
        ids, lines = [], []
        for p in prompts:
            self.count += 1
            rid = f"r{self.count}"
            ids.append(rid)
            lines.append(json.dumps({"type": "generate", "id": rid, "input_ids": p, "adapter": None,
                                     "max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0, "seed": 0,
                                     "stop_ids": [], "presence_penalty": 0.0, "frequency_penalty": 0.0, **fields}))
        sent = time.perf_counter()
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()
        return sent, ids

    def collect(self, ids):
        """{id: [arrival time of each token]} and the time the last `done` arrived."""
        arrivals, open_ids = {i: [] for i in ids}, set(ids)
        while open_ids:
            t, e = self.next()
            if e["type"] == "tokens":
                arrivals[e["id"]].extend([t] * len(e["ids"]))
            elif e["type"] == "done":
                open_ids.discard(e["id"])
            else:
                raise SystemExit(f"unexpected event {e}")
        return arrivals, t

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def load():
    return [round(x, 2) for x in os.getloadavg()]


def decode_arguments(ap):
    """The options `decode_rates` reads."""
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)


def decode_rates(serve, prompts, args, **fields):
    """Decode tokens/s of one stream and of args.streams streams (and their end-to-end rate), one
    figure per repeat; `fields` go into every request."""
    single, multi, multi_e2e = [], [], []
    for _ in range(args.repeats):
        sent, ids = serve.send(prompts(1), args.new_tokens, **fields)
        times = serve.collect(ids)[0][ids[0]]
        single.append((len(times) - 1) / (times[-1] - times[0]))
    for _ in range(args.repeats):
        sent, ids = serve.send(prompts(args.streams), args.new_tokens, **fields)
        arrivals, last_done = serve.collect(ids)
        begin = max(times[0] for times in arrivals.values())
        end = min(times[-1] for times in arrivals.values())
        inside = sum(1 for times in arrivals.values() for t in times if begin < t <= end)
        multi.append(inside / (end - begin))
        multi_e2e.append(sum(len(times) for times in arrivals.values()) / (last_done - sent))
    return single, multi, multi_e2e


def bench_shape(shape, args, env, tmp):
    with open(os.path.join(tmp, f"{shape}.json"), "w") as f:
        json.dump(SHAPES[shape], f)
    model_dir = os.path.join(tmp, shape)
    subprocess.run([sys.executable, "-m", "tunelab_engine", "init", "--config", os.path.join(tmp, f"{shape}.json"),
                    "--seed", "0", "--out", model_dir, "--dtype", "bfloat16"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    vocab = SHAPES[shape]["vocab_size"]
    rng = np.random.default_rng(0)

    def prompts(n):
        return [rng.integers(0, vocab, size=args.prompt_tokens).tolist() for _ in range(n)]

    extra = ["--dtype", args.dtype] if args.dtype != "auto" else []
    load_before = load()
    started = time.perf_counter()
    serve = Serve(model_dir, env, extra)
    startup_s = time.perf_counter() - started
    serve.collect(serve.send(prompts(1), 8)[1])  # warm-up
    ttft = []
    for _ in range(args.repeats):
        sent, ids = serve.send(prompts(1), 1)
        arrivals, _ = serve.collect(ids)
        ttft.append(arrivals[ids[0]][0] - sent)
    single, multi, multi_e2e = decode_rates(serve, prompts, args)
    serve.close()
    one, agg = statistics.median(single), statistics.median(multi)
    return {
        "shape": shape, "dtype": serve.ready["dtype"], "device": serve.ready["device"],
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "streams": args.streams,
        "startup_s": round(startup_s, 2),
        "ttft_ms": round(1000 * statistics.median(ttft), 1), "ttft_ms_runs": [round(1000 * x, 1) for x in ttft],
        "one_stream_tokens_per_s": round(one, 1), "one_stream_runs": [round(x, 1) for x in single],
        "streams_tokens_per_s": round(agg, 1), "streams_runs": [round(x, 1) for x in multi],
        "streams_end_to_end_tokens_per_s": round(statistics.median(multi_e2e), 1),
        "streams_over_one": round(agg / one, 2),
        "load_average": {"before": load_before, "after": load()},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b")
    ap.add_argument("--dtype", default="auto", help="passed to serve --dtype (auto: what the server would get)")
    decode_arguments(ap)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "serve_cpu.json"))
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ENGINE))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "engine/tunelab_engine", "bench/engine/serve_bench.py"], cwd=os.path.join(HERE, "..", ".."),
                           capture_output=True, text=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            r = bench_shape(shape, args, env, tmp)
            print(json.dumps(r), flush=True)
            results.append(r)
    record = {
        "command": " ".join(["PYTHONPATH=engine", sys.executable] + sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": commit + (" (engine or bench files modified)" if dirty else ""),
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "torch": __import__("torch").__version__,
                    "python": platform.python_version(), "omp_wait_policy": env.get("OMP_WAIT_POLICY", "PASSIVE (engine default)")},
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
