import json
import os
import signal
import time

import numpy as np
import torch

from tunelab_engine import safetensors

from .helpers import TempDirTest, random_examples, run_engine, save_random_model, start_engine, write_arrays


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


class TrainTest(TempDirTest):
    def setUp(self):
        super().setUp()
        save_random_model(self.path("model"), "llama")
        write_arrays(self.path("train"), random_examples(12, seed=1))
        write_arrays(self.path("valid"), random_examples(5, seed=2))

    def train(self, **fields):
        spec = self.write_spec(name=fields.pop("name", "spec.json"), **fields)
        code, events, err = run_engine("train", "--spec", spec)
        self.assertEqual(code, 0, err)
        return events

    def test_lora_run_streams_events_and_writes_a_peft_adapter(self):
        events = self.train(valid_data=self.path("valid"), eval_every=2, n_epochs=3, learning_rate=2e-2)
        kinds = [e["type"] for e in events]
        self.assertEqual(kinds[0], "started")
        self.assertEqual(kinds[-1], "done")
        started, steps = events[0], of_type(events, "step")
        self.assertEqual(started["total_steps"], 9)  # 3 epochs of ceil(12 / 4)
        self.assertEqual(len(steps), 9)
        self.assertEqual([s["step"] for s in steps], list(range(1, 10)))
        self.assertEqual([s["epoch"] for s in steps], [1] * 3 + [2] * 3 + [3] * 3)
        for key in ("train_loss", "train_mean_token_accuracy", "lr", "tokens", "trained_tokens"):
            self.assertIn(key, steps[0])
        self.assertLess(steps[-1]["train_loss"], steps[0]["train_loss"])
        self.assertGreater(started["packing_efficiency"], 0.5)
        evals = of_type(events, "eval")
        self.assertEqual([e["step"] for e in evals], [2, 3, 4, 6, 8, 9])
        self.assertIn("full_valid_loss", evals[-1])
        self.assertNotIn("full_valid_loss", evals[0])
        checkpoints = of_type(events, "checkpoint")
        self.assertEqual([c["step"] for c in checkpoints], [3, 6, 9])
        for c in checkpoints:
            self.assertEqual(sorted(os.listdir(c["path"])),
                             ["adapter_config.json", "adapter_model.safetensors", "training_state.pt"])
        done = events[-1]
        self.assertEqual(done["trained_tokens"], 3 * started["tokens_per_epoch"])
        with open(os.path.join(done["path"], "adapter_config.json")) as f:
            self.assertEqual(json.load(f)["base_model_name_or_path"], self.path("model"))

    def test_full_fine_tuning_writes_a_model_folder(self):
        events = self.train(training="full", learning_rate=3e-3, base_model_name="org/name")
        steps = of_type(events, "step")
        self.assertLess(steps[-1]["train_loss"], steps[0]["train_loss"])
        self.assertEqual(events[0]["trainable_parameters"], events[0]["parameters"])
        out = events[-1]["path"]
        self.assertTrue(os.path.exists(os.path.join(out, "config.json")))
        trained = safetensors.load_model(out)
        base = safetensors.load_model(self.path("model"))
        self.assertFalse(torch.equal(trained["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"]))

    def test_same_seed_same_curve_and_accumulation_changes_nothing(self):
        a = [s["train_loss"] for s in of_type(self.train(name="a.json"), "step")]
        b = [s["train_loss"] for s in of_type(self.train(name="b.json", output_dir=self.path("out-b"),
                                                          work_dir=self.path("work-b")), "step")]
        self.assertEqual(a, b)
        c = [s["train_loss"] for s in of_type(self.train(name="c.json", output_dir=self.path("out-c"),
                                                          work_dir=self.path("work-c"), seq_len=20,
                                                          gradient_accumulation_steps=3), "step")]
        # seq_len 20 packs differently but every example (at most 19 tokens) still fits, so only the float summation order differs.
        np.testing.assert_allclose(a, c, rtol=1e-5)

    def test_resume_from_the_first_epoch_ends_where_two_straight_epochs_end(self):
        # Tolerance: 1e-6 absolute on every trained weight (CPU fp32; the runs do the same operations).
        for training, lr, key in (("lora", 1e-2, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"),
                                ("full", 3e-3, "model.layers.1.mlp.down_proj.weight")):
            with self.subTest(training=training):
                straight = self.train(name=f"{training}.json", training=training, learning_rate=lr,
                                      output_dir=self.path(f"{training}-a"), work_dir=self.path(f"{training}-work-a"))
                first_epoch = of_type(straight, "checkpoint")[0]
                self.assertEqual(first_epoch["epoch"], 1)
                resumed = self.train(name=f"{training}-resume.json", training=training, learning_rate=lr,
                                     output_dir=self.path(f"{training}-b"), work_dir=self.path(f"{training}-work-b"),
                                     resume_from=first_epoch["path"])
                self.assertEqual(resumed[0]["resumed_from_step"], first_epoch["step"])
                self.assertEqual([s["step"] for s in of_type(resumed, "step")], [4, 5, 6])
                self.assertEqual(of_type(resumed, "step")[-1]["train_loss"], of_type(straight, "step")[-1]["train_loss"])
                self.assertEqual(resumed[-1]["trained_tokens"], straight[-1]["trained_tokens"])
                weights = "adapter_model.safetensors" if training == "lora" else "model.safetensors"
                a = safetensors.load_file(os.path.join(straight[-1]["path"], weights))
                b = safetensors.load_file(os.path.join(resumed[-1]["path"], weights))
                self.assertEqual(set(a), set(b))
                self.assertIn(key, a)
                for name in a:
                    self.assertLessEqual((a[name] - b[name]).abs().max().item(), 1e-6, name)

    def test_bf16_run(self):
        events = self.train(dtype="bfloat16", n_epochs=1)
        self.assertEqual(events[0]["dtype"], "bfloat16")
        self.assertTrue(all(np.isfinite(s["train_loss"]) for s in of_type(events, "step")))


class CancelTest(TempDirTest):
    def test_sigterm_saves_a_checkpoint_and_exits_cleanly(self):
        save_random_model(self.path("model"), "llama")
        write_arrays(self.path("train"), random_examples(8, seed=1))
        spec = self.write_spec(n_epochs=1000, batch_size=2)
        proc = start_engine("train", "--spec", spec)
        try:
            while True:
                line = proc.stdout.readline()
                self.assertTrue(line, "engine exited before its first step")
                if json.loads(line)["type"] == "step":
                    break
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
        self.assertEqual(proc.returncode, 0, err)
        self.assertLess(elapsed, 5.0)
        events = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(events[-1]["type"], "cancelled")
        self.assertEqual(events[-2]["type"], "checkpoint")
        self.assertTrue(os.path.exists(os.path.join(events[-1]["path"], "training_state.pt")))
        spec = self.write_spec(name="resume.json", n_epochs=1000, batch_size=2, resume_from=events[-1]["path"])
        proc = start_engine("train", "--spec", spec)
        try:
            first = json.loads(proc.stdout.readline())
        finally:
            proc.kill()
            proc.communicate()
        self.assertEqual(first["resumed_from_step"], events[-1]["step"])


class MalformedInputTest(TempDirTest):
    def setUp(self):
        super().setUp()
        save_random_model(self.path("model"), "llama")
        write_arrays(self.path("train"), random_examples(4, seed=1))

    def assert_error(self, spec_path, code, *words):
        status, events, err = run_engine("train", "--spec", spec_path)
        self.assertEqual(status, 1)
        self.assertEqual(len(events), 1, events)
        self.assertEqual(events[0]["type"], "error")
        self.assertEqual(events[0]["code"], code, events[0]["message"])
        for word in words:
            self.assertIn(word, events[0]["message"])
        self.assertNotIn("Traceback", err)

    def test_spec_errors(self):
        with open(self.path("bad.json"), "w") as f:
            f.write("{not json")
        self.assert_error(self.path("bad.json"), "invalid_spec", "not JSON")
        self.assert_error(self.path("absent.json"), "invalid_spec", "not found")
        self.assert_error(self.write_spec(n_epochs="3"), "invalid_spec", "n_epochs")
        self.assert_error(self.write_spec(learning_rate=None), "invalid_spec", "learning_rate", "required")
        self.assert_error(self.write_spec(epochs=3), "invalid_spec", "epochs", "unknown")
        self.assert_error(self.write_spec(training="qlora"), "invalid_spec", "training")
        self.assert_error(self.write_spec(lora={"rank": 0}), "invalid_spec", "lora.rank")
        self.assert_error(self.write_spec(lora={"target_modules": ["lm_head"]}), "invalid_spec", "lm_head")
        self.assert_error(self.write_spec(train_data=self.path("nowhere")), "invalid_spec", "train_data")

    def test_array_errors(self):
        np.save(self.path("train", "input_ids.npy"), np.arange(10, dtype=np.int64))
        self.assert_error(self.write_spec(), "invalid_arrays", "input_ids.npy", "int32")
        write_arrays(self.path("train"), [([1, 2, 500], [0, 1, 1])])
        self.assert_error(self.write_spec(), "invalid_arrays", "vocab_size")
        write_arrays(self.path("train"), random_examples(4, seed=1))
        np.save(self.path("train", "offsets.npy"), np.array([0, 5, 3], dtype=np.int64))
        self.assert_error(self.write_spec(), "invalid_arrays", "offsets.npy")
        with open(self.path("train", "loss_mask.npy"), "wb") as f:
            f.write(b"garbage")
        self.assert_error(self.write_spec(), "invalid_arrays", "loss_mask.npy")

    def test_model_errors(self):
        with open(self.path("model", "config.json")) as f:
            cfg = json.load(f)
        cfg["model_type"] = "falcon"
        with open(self.path("model", "config.json"), "w") as f:
            json.dump(cfg, f)
        self.assert_error(self.write_spec(), "unsupported_model_type", "falcon")
