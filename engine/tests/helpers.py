"""Tiny models, training arrays and engine runs shared by the tests."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

from tunelab_engine import checkpoint, config
from tunelab_engine.model import Transformer, init_weights

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "max_position_embeddings": 256,
        "hidden_act": "silu", "initializer_range": 0.02}

# One tiny config per family and per variant the loader distinguishes.
FAMILIES = {
    "llama": dict(BASE, model_type="llama", rope_theta=10000.0, tie_word_embeddings=False),
    "llama3": dict(BASE, model_type="llama", rope_theta=500000.0, tie_word_embeddings=False,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    "smollm": dict(BASE, model_type="llama", rope_theta=100000.0, tie_word_embeddings=True, num_key_value_heads=1),
    "mistral": dict(BASE, model_type="mistral", rope_theta=10000.0, tie_word_embeddings=False, sliding_window=8),
    "qwen2": dict(BASE, model_type="qwen2", rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
    "qwen3": dict(BASE, model_type="qwen3", rope_theta=1000000.0, tie_word_embeddings=True, head_dim=32,
                  attention_bias=False),
}


def random_model(family, seed=0, dtype=torch.float32):
    cfg = config.from_dict(json.loads(json.dumps(FAMILIES[family])))
    model = Transformer(cfg)
    init_weights(model, seed, 0.2)  # larger than 0.02 so differences between variants show in the logits
    return model.to(dtype)


def save_random_model(folder, family="llama", seed=0, overrides=None):
    raw = dict(FAMILIES[family], **(overrides or {}))
    cfg = config.from_dict(raw)
    model = Transformer(cfg)
    init_weights(model, seed, 0.2)
    checkpoint.save_full_model(model, folder)
    return folder


def write_arrays(folder, examples):
    """examples: list of (ids, mask) lists."""
    os.makedirs(folder, exist_ok=True)
    ids = np.concatenate([np.asarray(e[0], dtype=np.int32) for e in examples])
    mask = np.concatenate([np.asarray(e[1], dtype=np.uint8) for e in examples])
    offsets = np.concatenate([[0], np.cumsum([len(e[0]) for e in examples])]).astype(np.int64)
    np.save(os.path.join(folder, "input_ids.npy"), ids)
    np.save(os.path.join(folder, "loss_mask.npy"), mask)
    np.save(os.path.join(folder, "offsets.npy"), offsets)
    return folder


def random_examples(n, vocab=96, low=6, high=20, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(low, high))
        ids = rng.integers(0, vocab, size=length)
        mask = (np.arange(length) >= length // 2).astype(np.uint8)
        out.append((ids, mask))
    return out


def engine_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ENGINE_DIR + os.pathsep + env.get("PYTHONPATH", "")
    return env


def parse_events(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def run_engine(*args, timeout=120):
    """(exit code, events, stderr) of `python -m tunelab_engine ARGS`."""
    proc = subprocess.run([sys.executable, "-m", "tunelab_engine", *args], env=engine_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return proc.returncode, parse_events(proc.stdout), proc.stderr


def start_engine(*args):
    return subprocess.Popen([sys.executable, "-m", "tunelab_engine", *args], env=engine_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def write_spec(self, name="spec.json", **fields):
        spec = {"model": self.path("model"), "train_data": self.path("train"), "output_dir": self.path("out"),
                "work_dir": self.path("work"), "n_epochs": 2, "batch_size": 4, "learning_rate": 1e-2,
                "seq_len": 64, "seed": 0, "dtype": "float32", "device": "cpu", "threads": 1}
        spec.update(fields)
        spec = {k: v for k, v in spec.items() if v is not None}
        path = self.path(name)
        with open(path, "w") as f:
            json.dump(spec, f)
        return path

