"""DPO: TRL's DPOTrainer as the referee for the loss, rewards and gradients, and the engine's DPO
runs (metrics, checkpoints, resume after kill -9)."""

import os
import signal
import unittest

import numpy as np
import torch

from tunelab_engine import data, dpo, generate, lora
from tunelab_engine.pair_batch import PairBatch

from .helpers import TempDirTest, parse_events, random_model, run_engine, save_random_model, start_engine, write_arrays
from .test_parity import COMMON, referee
from .test_train import of_type

try:
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
except ImportError:  # engine/requirements-test.txt installs them; without them the referee tests say why
    trl = None

BETA = 0.25
TOLERANCE = 1e-4


def pairs_of(seed=0, n=3, vocab=COMMON["vocab_size"]):
    """(prompt, chosen, rejected) token lists of different lengths."""
    rng = np.random.default_rng(seed)
    tokens = lambda k: rng.integers(2, vocab, size=k).tolist()  # noqa: E731
    return [(tokens(p), tokens(c), tokens(r)) for p, c, r in [(7, 5, 9), (12, 6, 3), (4, 11, 8)][:n]]


def pair_arrays(folder, pairs):
    """The server's layout: a pair is two examples, the prompt with each answer, the answer trained."""
    examples = []
    for prompt, *answers in pairs:
        for answer in answers:
            examples.append((prompt + answer, [0] * len(prompt) + [1] * len(answer)))
    return write_arrays(folder, examples)


def trl_trainer(model, pairs, beta, out_dir, ref_model=None):
    """TRL's DPOTrainer (sigmoid loss, fp32) on `model`, and a batch of `pairs` collated its way.
    Without `ref_model`, TRL's reference for a PEFT model is the adapter as it was given."""
    words = {f"w{i}": i for i in range(COMMON["vocab_size"])}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="w0", eos_token="w1")
    text = lambda ids: "".join(f" w{i}" for i in ids)  # noqa: E731
    # Unused (the batch is collated from the ids below), but TRL tokenizes it when it starts.
    dataset = Dataset.from_dict({"prompt": [text(p).strip() for p, _, _ in pairs], "chosen": [text(c) for _, c, _ in pairs],
                                 "rejected": [text(r) for _, _, r in pairs]})
    config = trl.DPOConfig(output_dir=out_dir, beta=beta, loss_type=["sigmoid"], per_device_train_batch_size=len(pairs),
                           use_cpu=True, bf16=False, report_to=[], precompute_ref_log_probs=False, max_length=None)
    trainer = trl.DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset, processing_class=tokenizer)
    collate = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=0)
    return trainer, collate([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in pairs])


def trl_step(trainer, batch):
    """TRL's loss of the batch, backpropagated, and the metrics it logged for it."""
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}


def nudge(parameters, scale=0.01):
    """Moves the policy away from its reference, so rewards are not all 0."""
    with torch.no_grad():
        for p in parameters:
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))


@unittest.skipIf(trl is None, "trl, transformers and peft are not installed (pip install -r engine/requirements-test.txt)")
class TRLRefereeTest(TempDirTest):
    def ours(self, model, reference, pairs):
        """Our loss, rewards and reward accuracy over the same pairs, packed as training packs them
        (two pairs in one row, one in another, each pair's prompt computed once)."""
        arrays = data.Arrays(pair_arrays(self.path("arrays"), pairs), COMMON["vocab_size"])
        rows = [[0, 1], [2]]
        with torch.no_grad():
            ref_chosen, ref_rejected, _, _ = dpo.pair_logps(reference, PairBatch(arrays, rows, 64, "cpu"), torch.float32, False)
        chosen, rejected, _, _ = dpo.pair_logps(model, PairBatch(arrays, rows, 64, "cpu"), torch.float32, False)
        losses, chosen_rewards, rejected_rewards = dpo.sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, BETA)
        losses.mean().backward()
        return losses.mean().item(), chosen_rewards, rejected_rewards

    def assertClose(self, got, want, what):
        self.assertLessEqual(abs(got - want), TOLERANCE * max(abs(want), 1e-3), what)

    def check_metrics(self, loss, chosen_rewards, rejected_rewards, trl_loss, logged):
        self.assertGreater(abs(loss - np.log(2)), 1e-3)  # the policy has moved from the reference
        self.assertClose(loss, trl_loss, "loss")
        self.assertClose(chosen_rewards.mean().item(), logged["rewards/chosen"], "chosen reward")
        self.assertClose(rejected_rewards.mean().item(), logged["rewards/rejected"], "rejected reward")
        self.assertClose((chosen_rewards - rejected_rewards).mean().item(), logged["rewards/margins"], "margin")
        self.assertEqual((chosen_rewards > rejected_rewards).float().mean().item(), logged["rewards/accuracies"])

    def assertGradsClose(self, got, want):
        self.assertEqual(set(got), set(want))
        for name, grad in got.items():
            scale = want[name].abs().max().item()
            self.assertGreater(scale, 0, name)
            self.assertLessEqual((grad - want[name]).abs().max().item(), TOLERANCE * scale, name)

    def test_lora_loss_rewards_and_gradients_match_trl(self):
        import peft
        pairs = pairs_of()
        base = self.path("base")
        referee("llama").save_pretrained(base)
        torch.manual_seed(3)
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
        peft_model = peft.get_peft_model(referee("llama"), config)
        peft_model.save_pretrained(self.path("start"))  # a fine-tune's adapter, continued: it is the reference
        trainer, batch = trl_trainer(peft_model, pairs, BETA, self.path("trl"))
        nudge([p for n, p in peft_model.named_parameters() if "lora_" in n and ".default" in n])
        peft_model.save_pretrained(self.path("moved"))
        trl_loss, logged = trl_step(trainer, batch)
        want = {n.replace("base_model.model.", "").replace(".default", ""): p.grad
                for n, p in peft_model.named_parameters() if "lora_" in n and ".default" in n}

        reference, ours = generate.load(base), generate.load(base)
        lora.load_adapter(reference, self.path("start"))
        lora.load_adapter(ours, self.path("moved"))
        lora.fuse(ours)  # as training runs
        ours.train()
        loss, chosen_rewards, rejected_rewards = self.ours(ours, reference, pairs)
        self.check_metrics(loss, chosen_rewards, rejected_rewards, trl_loss, logged)
        self.assertGradsClose({n: p.grad for n, p in ours.named_parameters() if "lora_" in n}, want)

    def test_full_loss_rewards_and_gradients_match_trl(self):
        pairs = pairs_of(seed=1)
        model = referee("qwen2")
        base = self.path("base")
        model.save_pretrained(base)
        trainer, batch = trl_trainer(model, pairs, BETA, self.path("trl"), ref_model=referee("qwen2"))
        nudge(model.parameters())
        model.save_pretrained(self.path("moved"))
        trl_loss, logged = trl_step(trainer, batch)
        want = {n: p.grad for n, p in model.named_parameters()}

        ours = generate.load(self.path("moved"))
        ours.train()
        loss, chosen_rewards, rejected_rewards = self.ours(ours, generate.load(base), pairs)
        self.check_metrics(loss, chosen_rewards, rejected_rewards, trl_loss, logged)
        got = {n: p.grad for n, p in ours.named_parameters()}
        if "lm_head.weight" not in want:  # tied: one tensor, under the embedding's name
            got.pop("lm_head.weight", None)
        self.assertGradsClose(got, want)


def scored_apart(model, arrays, n_pairs):
    """pair_logps's figures with each answer's example run through the model alone."""
    sums, correct, count = torch.zeros(2 * n_pairs), 0, 0
    for e in range(2 * n_pairs):
        ids, mask = arrays.example(e, 64)
        logps = model.logits(model(torch.tensor(ids[None], dtype=torch.int64)))[0, :-1].float().log_softmax(-1)
        trained = torch.from_numpy(np.nonzero(mask[1:])[0])
        labels = torch.from_numpy(ids[1:].astype(np.int64))[trained]
        sums[e] = logps[trained].gather(1, labels[:, None]).sum()
        if e % 2 == 0:
            correct += int((logps[trained].argmax(-1) == labels).sum())
            count += len(trained)
    return sums[0::2], sums[1::2], correct, count


class SharedPrefixTest(TempDirTest):
    def test_a_pair_sharing_its_prompt_scores_as_its_two_examples_apart(self):
        # Mistral's window of 8 is crossed by the rejected tails, whose positions continue the prompt's.
        pairs = pairs_of(seed=4, vocab=96) + [([5, 6, 7], [8, 9], [8, 9, 10])]  # a chosen answer that starts the rejected one
        arrays = data.Arrays(pair_arrays(self.path("arrays"), pairs), 96)
        for family in ("llama", "mistral", "qwen3"):
            with self.subTest(family=family), torch.no_grad():
                model = random_model(family)
                shared = dpo.pair_logps(model, PairBatch(arrays, [[0, 3], [1, 2]], 64, "cpu"), torch.float32, False)
                apart = scored_apart(model, arrays, 4)
                for got, want in zip(shared[:2], apart[:2]):
                    self.assertLessEqual((got - want).abs().max().item(), TOLERANCE * want.abs().max().item())
                self.assertEqual(shared[2:], apart[2:])


def learnable_pairs(n, seed):
    """Random prompts; the chosen answer is always one phrase, the rejected one another."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(10, 90, size=int(rng.integers(4, 12))).tolist(), [3, 4, 5, 6], [7, 8, 9]) for _ in range(n)]


class DPORunTest(TempDirTest):
    def setUp(self):
        super().setUp()
        save_random_model(self.path("model"), "llama")
        pair_arrays(self.path("train"), learnable_pairs(12, seed=1))
        pair_arrays(self.path("valid"), learnable_pairs(4, seed=2))

    def train(self, **fields):
        fields = dict(dict(method="dpo", dpo={"beta": 0.1}, n_epochs=3, learning_rate=2e-2), **fields)
        spec = self.write_spec(name=fields.pop("name", "spec.json"), **fields)
        code, events, err = run_engine("train", "--spec", spec)
        self.assertEqual(code, 0, err)
        return events

    def test_lora_run_reports_pair_metrics_and_learns_the_preference(self):
        events = self.train(valid_data=self.path("valid"), eval_every=2)
        started, steps = events[0], of_type(events, "step")
        self.assertEqual(started["method"], "dpo")
        self.assertEqual(started["total_steps"], 9)  # 3 epochs of ceil(12 pairs / 4)
        # A new adapter starts at zero: the policy is the reference, every pair's loss is log 2.
        self.assertAlmostEqual(steps[0]["train_loss"], np.log(2), places=5)
        self.assertEqual(steps[0]["train_reward_margin"], 0.0)
        for key in ("train_reward_accuracy", "train_chosen_reward", "train_rejected_reward", "train_mean_token_accuracy"):
            self.assertIn(key, steps[0])
        self.assertEqual(steps[-1]["train_reward_accuracy"], 1.0)
        self.assertLess(steps[-1]["train_loss"], 0.5)
        margins = [s["train_reward_margin"] for s in steps]
        self.assertGreater(margins[-1], margins[3])
        self.assertGreater(margins[3], 0)
        evals = of_type(events, "eval")
        self.assertEqual(evals[-1]["full_valid_reward_accuracy"], 1.0)
        self.assertGreater(evals[-1]["valid_reward_margin"], evals[0]["valid_reward_margin"])
        for folder, pairs in (("train", 12), ("valid", 4)):
            self.assertEqual(np.load(self.path(folder, dpo.REFERENCE)).shape, (pairs, 2))
        self.assertEqual([c["step"] for c in of_type(events, "checkpoint")], [3, 6, 9])
        self.assertTrue(os.path.exists(os.path.join(events[-1]["path"], "adapter_model.safetensors")))

    def test_full_run(self):
        events = self.train(training="full", learning_rate=1e-3)
        steps = of_type(events, "step")
        self.assertAlmostEqual(steps[0]["train_loss"], np.log(2), places=5)
        self.assertEqual(steps[-1]["train_reward_accuracy"], 1.0)
        self.assertTrue(os.path.exists(os.path.join(events[-1]["path"], "model.safetensors")))

    def test_continuing_an_adapter_takes_it_as_the_reference(self):
        first = self.train(name="first.json", n_epochs=1)
        # A new job has arrays of its own (the stored reference belongs to the run that wrote it).
        pair_arrays(self.path("again"), learnable_pairs(12, seed=1))
        second = self.train(name="second.json", n_epochs=1, init_adapter=first[-1]["path"], train_data=self.path("again"))
        steps = of_type(second, "step")
        # Continued from the trained adapter, measured against it: the first step starts at log 2 again.
        self.assertAlmostEqual(steps[0]["train_loss"], np.log(2), places=5)
        self.assertEqual(steps[0]["train_reward_accuracy"], 0.0)
        self.assertGreater(steps[0]["train_mean_token_accuracy"], of_type(first, "step")[0]["train_mean_token_accuracy"])

    def test_kill_9_then_resume_ends_where_a_straight_run_ends(self):
        straight = self.train(name="straight.json", n_epochs=2)
        os.remove(self.path("train", dpo.REFERENCE))
        spec = self.write_spec(name="killed.json", method="dpo", dpo={"beta": 0.1}, n_epochs=2, learning_rate=2e-2,
                               output_dir=self.path("out2"), work_dir=self.path("work2"))
        proc = start_engine("train", "--spec", spec)
        try:
            while True:
                line = proc.stdout.readline()
                self.assertTrue(line, "the engine exited before its first checkpoint")
                event = parse_events(line)[0]
                if event["type"] == "checkpoint":
                    break
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        resumed = self.train(name="resume.json", n_epochs=2, output_dir=self.path("out2"), work_dir=self.path("work2"),
                             resume_from=event["path"])
        self.assertEqual(resumed[0]["resumed_from_step"], 3)
        self.assertEqual(of_type(resumed, "step")[-1]["train_loss"], of_type(straight, "step")[-1]["train_loss"])
        self.assertEqual(of_type(resumed, "step")[-1]["train_reward_margin"], of_type(straight, "step")[-1]["train_reward_margin"])

    def test_resuming_without_the_stored_reference_fails_clearly(self):
        first = self.train(n_epochs=1)
        os.remove(self.path("train", dpo.REFERENCE))
        spec = self.write_spec(name="resume.json", method="dpo", n_epochs=2, resume_from=of_type(first, "checkpoint")[0]["path"])
        code, events, _ = run_engine("train", "--spec", spec)
        self.assertEqual(code, 1)
        self.assertEqual(events[-1]["code"], "invalid_arrays")
        self.assertIn("reference", events[-1]["message"])

    def test_odd_example_count_is_refused(self):
        write_arrays(self.path("odd"), [([1, 2, 3], [0, 1, 1])] * 3)
        code, events, _ = run_engine("train", "--spec", self.write_spec(method="dpo", train_data=self.path("odd")))
        self.assertEqual(code, 1)
        self.assertIn("odd number", events[-1]["message"])
