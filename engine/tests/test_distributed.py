"""The engine under `torchrun` (gloo on CPU): N processes train the curve of one process with N
times the gradient accumulation, and a checkpoint they wrote resumes in one process."""

import os
import subprocess
import sys

import numpy as np

from .helpers import TempDirTest, engine_env, parse_events, random_examples, save_random_model, write_arrays


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


def torchrun(processes, spec):
    """(exit code, events, stderr) of `torchrun --standalone --nproc-per-node N -m tunelab_engine train --spec SPEC`."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                           "-m", "tunelab_engine", "train", "--spec", spec],
                          env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    return proc.returncode, parse_events(proc.stdout), proc.stderr


class DistributedTrainingTest(TempDirTest):
    def setUp(self):
        super().setUp()
        save_random_model(self.path("model"), "llama")
        write_arrays(self.path("train"), random_examples(16, seed=1))

    def spec(self, name, **fields):
        # seq_len 20: each example (at most 19 tokens) is a row of its own, so a step's 4 rows split across processes.
        return self.write_spec(name=name, output_dir=self.path(f"out-{name}"), work_dir=self.path(f"work-{name}"),
                               seq_len=20, n_epochs=2, batch_size=4, **fields)

    def run_spec(self, processes, spec):
        code, events, err = torchrun(processes, spec)
        self.assertEqual(code, 0, err)
        return events

    def test_two_processes_train_the_curve_of_one_with_twice_the_accumulation_and_resume_in_one(self):
        for training, lr in (("lora", 2e-2), ("full", 3e-3)):
            with self.subTest(training=training):
                one = self.run_spec(1, self.spec(f"{training}-one", training=training, learning_rate=lr, gradient_accumulation_steps=2))
                two = self.run_spec(2, self.spec(f"{training}-two", training=training, learning_rate=lr, gradient_accumulation_steps=1))
                one_steps, two_steps = of_type(one, "step"), of_type(two, "step")
                # Rank 0 alone speaks: each step once.
                self.assertEqual([s["step"] for s in two_steps], list(range(1, 9)))
                np.testing.assert_allclose([s["train_loss"] for s in two_steps], [s["train_loss"] for s in one_steps], rtol=0, atol=1e-5)
                self.assertEqual([s["tokens"] for s in two_steps], [s["tokens"] for s in one_steps])
                self.assertEqual(two[-1]["trained_tokens"], one[-1]["trained_tokens"])
                # Checkpoints written once, by rank 0.
                self.assertEqual([c["step"] for c in of_type(two, "checkpoint")], [4, 8])

                first_epoch = of_type(two, "checkpoint")[0]
                resumed = self.run_spec(1, self.spec(f"{training}-resumed", training=training, learning_rate=lr,
                                                     gradient_accumulation_steps=2, resume_from=first_epoch["path"]))
                resumed_steps = of_type(resumed, "step")
                self.assertEqual([s["step"] for s in resumed_steps], [5, 6, 7, 8])
                np.testing.assert_allclose([s["train_loss"] for s in resumed_steps], [s["train_loss"] for s in two_steps[4:]], rtol=0, atol=1e-5)
