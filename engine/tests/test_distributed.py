"""The engine under `torchrun` (gloo on CPU): N processes train the curve of one process with N
times the gradient accumulation (LoRA under DistributedDataParallel, full fine-tuning sharded by
FSDP, DPO with either), and a checkpoint they wrote resumes in one process and loads in transformers."""

import os
import signal
import subprocess
import sys

import numpy as np

from tunelab_engine import dpo, safetensors

from .helpers import TempDirTest, engine_env, parse_events, random_examples, save_random_model, write_arrays
from .test_dpo import learnable_pairs, pair_arrays

try:
    import torch
    import transformers
except ImportError:  # engine/requirements-test.txt installs it
    transformers = None


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def torchrun(processes, spec):
    """(exit code, events, stderr) of `torchrun --standalone --nproc-per-node N -m tunelab_engine train --spec SPEC`."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                           "-m", "tunelab_engine", "train", "--spec", spec],
                          env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    return proc.returncode, parse_events(proc.stdout), proc.stderr


class DistributedTest(TempDirTest):
    def setUp(self):
        super().setUp()
        save_random_model(self.path("model"), "llama")

    def spec(self, name, **fields):
        return self.write_spec(name=name, output_dir=self.path(f"out-{name}"), work_dir=self.path(f"work-{name}"), **fields)

    def run_spec(self, processes, spec):
        code, events, err = torchrun(processes, spec)
        self.assertEqual(code, 0, err)
        return events

    def assertSameCurve(self, steps, expected, keys=("train_loss",)):
        self.assertEqual([s["step"] for s in steps], [s["step"] for s in expected])
        for key in keys:
            np.testing.assert_allclose([s[key] for s in steps], [s[key] for s in expected], rtol=0, atol=1e-5, err_msg=key)


class SupervisedTest(DistributedTest):
    def setUp(self):
        super().setUp()
        # seq_len 20: each example (at most 19 tokens) is a row of its own, so a step's 4 rows split
        # across processes; 13 examples make each epoch's last step one row, which only rank 0
        # trains while rank 1 runs a stand-in.
        write_arrays(self.path("train"), random_examples(13, seed=1))

    def supervised(self, name, training, lr, accumulation, **fields):
        fields = dict(dict(seq_len=20, n_epochs=2, batch_size=4), **fields)
        return self.spec(f"{training}-{name}", training=training, learning_rate=lr, gradient_accumulation_steps=accumulation, **fields)

    def test_two_processes_train_the_curve_of_one_with_twice_the_accumulation_and_resume_in_one(self):
        for training, lr in (("lora", 2e-2), ("full", 3e-3)):
            with self.subTest(training=training):
                one = self.run_spec(1, self.supervised("one", training, lr, 2))
                two = self.run_spec(2, self.supervised("two", training, lr, 1))
                one_steps, two_steps = of_type(one, "step"), of_type(two, "step")
                # Rank 0 alone speaks: each step once.
                self.assertEqual([s["step"] for s in two_steps], list(range(1, 9)))
                self.assertSameCurve(two_steps, one_steps, ("train_loss", "train_mean_token_accuracy"))
                self.assertEqual([s["tokens"] for s in two_steps], [s["tokens"] for s in one_steps])
                self.assertEqual(two[-1]["trained_tokens"], one[-1]["trained_tokens"])
                # Checkpoints written once, by rank 0.
                self.assertEqual([c["step"] for c in of_type(two, "checkpoint")], [4, 8])

                first_epoch = of_type(two, "checkpoint")[0]
                resumed = self.run_spec(1, self.supervised("resumed", training, lr, 2, resume_from=first_epoch["path"]))
                self.assertSameCurve(of_type(resumed, "step"), two_steps[4:])

    def test_a_sigterm_to_the_group_stops_every_process_at_one_step_with_a_checkpoint(self):
        # As the server stops an engine: SIGTERM to its process group, torchrun and its processes alike.
        spec = self.supervised("stopped", "lora", 2e-2, 1, n_epochs=3)
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                 "-m", "tunelab_engine", "train", "--spec", spec],
                                env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        events = []
        try:
            for line in proc.stdout:
                events += parse_events(line)
                if events[-1]["type"] == "step":
                    os.killpg(proc.pid, signal.SIGTERM)
                    break
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        events += parse_events(out)
        cancelled = of_type(events, "cancelled")
        self.assertEqual(len(cancelled), 1, err)
        step = cancelled[0]["step"]
        self.assertEqual(of_type(events, "step")[-1]["step"], step)
        self.assertTrue(os.path.exists(os.path.join(cancelled[0]["path"], "adapter_model.safetensors")))
        resumed = self.run_spec(1, self.supervised("after-stop", "lora", 2e-2, 2, n_epochs=3, resume_from=cancelled[0]["path"]))
        self.assertEqual(resumed[0]["resumed_from_step"], step)

    def test_full_fine_tuning_sharded_writes_whole_checkpoints_that_resume_at_any_number_of_processes(self):
        one = self.run_spec(1, self.supervised("one", "full", 3e-3, 2))
        two = self.run_spec(2, self.supervised("two", "full", 3e-3, 1))
        # The shards gathered by rank 0: the whole model, as one process wrote it.
        ours, theirs = (safetensors.load_model(of_type(run, "checkpoint")[0]["path"]) for run in (two, one))
        self.assertEqual(sorted(ours), sorted(theirs))
        for name in ours:
            np.testing.assert_allclose(ours[name].numpy(), theirs[name].numpy(), rtol=0, atol=1e-5, err_msg=name)
        # A one-process checkpoint (weights and AdamW's moments) resumes sharded across two.
        resumed = self.run_spec(2, self.supervised("resumed", "full", 3e-3, 1, resume_from=of_type(one, "checkpoint")[0]["path"]))
        self.assertSameCurve(of_type(resumed, "step"), of_type(one, "step")[4:])
        if transformers is not None:
            model = transformers.AutoModelForCausalLM.from_pretrained(two[-1]["path"], dtype=torch.float32)
            self.assertEqual(sum(p.numel() for p in model.parameters()), two[0]["parameters"])


class PreferenceTest(DistributedTest):
    def test_dpo_in_two_processes_trains_and_evaluates_as_one_with_twice_the_accumulation(self):
        keys = ("train_loss", "train_reward_accuracy", "train_reward_margin", "train_chosen_reward", "train_mean_token_accuracy")
        for training, lr in (("lora", 2e-2), ("full", 1e-3)):
            with self.subTest(training=training):
                runs = {}
                for processes, accumulation in ((1, 2), (2, 1)):
                    name = f"{training}-{processes}"
                    # Arrays of its own: the reference log-probabilities are computed (and split across the processes) anew.
                    # seq_len 20: a pair (at most 19 tokens) is a row of its own; 9 pairs make each epoch's
                    # last step one row, which rank 1 only stands in for.
                    pair_arrays(self.path(f"train-{name}"), learnable_pairs(9, seed=1))
                    # 5 validation pairs: an evaluation window of 4 is one micro-batch, which rank 1
                    # stands in for; the whole set at the end is two, one a rank.
                    pair_arrays(self.path(f"valid-{name}"), learnable_pairs(5, seed=2))
                    runs[processes] = self.run_spec(processes, self.spec(name, training=training, method="dpo", dpo={"beta": 0.1},
                                                                         train_data=self.path(f"train-{name}"), valid_data=self.path(f"valid-{name}"),
                                                                         n_epochs=2, seq_len=20, learning_rate=lr,
                                                                         gradient_accumulation_steps=accumulation))
                    runs[processes, "reference"] = np.load(self.path(f"train-{name}", dpo.REFERENCE))
                np.testing.assert_allclose(runs[2, "reference"], runs[1, "reference"], rtol=0, atol=1e-5)
                self.assertEqual(len(of_type(runs[2], "step")), 6)
                self.assertSameCurve(of_type(runs[2], "step"), of_type(runs[1], "step"), keys)
                evals = [of_type(runs[p], "eval") for p in (2, 1)]
                self.assertEqual([e["step"] for e in evals[1]], [3, 6])
                self.assertSameCurve(*evals, [key.replace("train_", "valid_") for key in keys])
                self.assertSameCurve(evals[0][-1:], evals[1][-1:], ("full_valid_loss", "full_valid_reward_accuracy", "full_valid_reward_margin"))
