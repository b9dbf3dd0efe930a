"""transformers and PEFT as referees: tiny random models built by transformers itself, here, for
every family the engine loads, checked in fp32 against transformers' eager attention."""

import json
import os
import unittest

import numpy as np
import torch
import torch.nn.functional as F

from tunelab_engine import data, generate, kernels, lora, train
from tunelab_engine.adapters import AdapterCache
from tunelab_engine.decode import Decoder

from .helpers import TempDirTest, run_engine, write_arrays

try:
    import peft
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
except ImportError:  # engine/requirements-test.txt installs both; without them these tests say why
    transformers = peft = None

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, bos_token_id=None,
              eos_token_id=None, pad_token_id=None)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
FAMILIES = {
    "llama": ("LlamaConfig", dict(rope_theta=10000.0, tie_word_embeddings=False)),
    "llama3": ("LlamaConfig", dict(rope_theta=500000.0, tie_word_embeddings=False, rope_scaling=LLAMA3_ROPE)),
    "smollm": ("LlamaConfig", dict(rope_theta=100000.0, tie_word_embeddings=True, num_key_value_heads=1)),
    "mistral": ("MistralConfig", dict(rope_theta=10000.0, sliding_window=8, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(rope_theta=1000000.0, tie_word_embeddings=True, head_dim=32)),
}
TOLERANCE = 1e-4


def referee(family, seed=0):
    """transformers' own model of `family` (eager attention, fp32) with random weights, norm
    weights and biases included (transformers starts those at 1 and 0, which would hide an engine
    that dropped them)."""
    name, fields = FAMILIES[family]
    config = getattr(transformers, name)(**dict(COMMON, **fields))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif pname.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def ids(rows, length, seed=1):
    return torch.randint(0, COMMON["vocab_size"], (rows, length), generator=torch.Generator().manual_seed(seed))


def max_diff(a, b):
    return (a - b).abs().max().item()


@unittest.skipIf(transformers is None, "transformers and peft are not installed (pip install -r engine/requirements-test.txt)")
class ParityTest(TempDirTest):
    def save(self, model, name, **kwargs):
        folder = self.path(name)
        model.save_pretrained(folder, **kwargs)
        return folder

    def test_logits_match_transformers_for_every_family(self):
        x = ids(2, 24)
        for family in list(FAMILIES) + ["llama-sharded"]:
            with self.subTest(family=family):
                ref = referee(family.replace("-sharded", ""))
                sharded = dict(max_shard_size="20KB") if family.endswith("sharded") else {}
                folder = self.save(ref, family, **sharded)
                if sharded:
                    self.assertTrue(os.path.exists(os.path.join(folder, "model.safetensors.index.json")))
                ours = generate.load(folder)
                with torch.no_grad():
                    want = ref(x).logits
                    got = ours.logits(ours(x))
                self.assertGreater(want.abs().max().item(), 1.0)
                self.assertLessEqual(max_diff(got, want), TOLERANCE)

    def test_a_wrong_model_fails(self):
        # The referee must see a small error: rope theta off by 1%, or qwen3's norm on q and k
        # read with another eps.
        x = ids(1, 24)
        for family, field, change in (("llama", "rope_theta", 1.01), ("qwen3", "rms_norm_eps", 1e4)):
            with self.subTest(family=family, field=field):
                ref = referee(family)
                folder = self.save(ref, family)
                with open(os.path.join(folder, "config.json")) as f:
                    raw = json.load(f)
                if field == "rope_theta":
                    raw["rope_parameters"]["rope_theta"] *= change
                else:
                    raw[field] *= change
                with open(os.path.join(folder, "config.json"), "w") as f:
                    json.dump(raw, f)
                ours = generate.load(folder)
                with torch.no_grad():
                    self.assertGreater(max_diff(ours.logits(ours(x)), ref(x).logits), 100 * TOLERANCE)

    def test_packed_examples_compute_what_transformers_computes_for_each_alone(self):
        lengths = (13, 7, 21, 5, 9)
        examples = [ids(1, n, seed=10 + n)[0].tolist() for n in lengths]
        write_arrays(self.path("arrays"), [(e, [1] * len(e)) for e in examples])
        arrays = data.Arrays(self.path("arrays"), COMMON["vocab_size"])
        saved = data.PER_EXAMPLE_ATTENTION
        self.addCleanup(setattr, data, "PER_EXAMPLE_ATTENTION", saved)
        for family in ("mistral", "qwen3"):
            ref = referee(family)
            ours = generate.load(self.save(ref, family))
            with torch.no_grad():
                want = torch.cat([ref(torch.tensor([e])).logits[0, :-1] for e in examples])
            for per_example in (0, 16):  # padded rows, then one example at a time
                data.PER_EXAMPLE_ATTENTION = per_example
                with self.subTest(family=family, per_example=per_example), torch.no_grad():
                    batch = data.Batch(arrays, [[0, 1], [2], [3, 4]], 32, "cpu")
                    hidden = ours(batch.input_ids, batch.position_ids, batch.attend)
                    got = ours.logits(hidden.reshape(-1, hidden.shape[-1])[batch.positions])
                    self.assertLessEqual(max_diff(got, want), TOLERANCE)

    def peft_adapter(self, ref, name, seed=3):
        """A PEFT LoRA adapter on all linear layers with random A and B, saved; the PEFT model."""
        torch.manual_seed(seed)
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                 init_lora_weights=False)
        model = peft.get_peft_model(ref, config).eval()
        folder = self.path(name)
        model.save_pretrained(folder)
        return model, folder

    def test_our_adapters_load_in_peft_and_peft_adapters_in_ours(self):
        x = ids(2, 16)
        for family in ("llama", "qwen2", "qwen3"):
            with self.subTest(family=family, direction="peft -> engine"):
                base = self.save(referee(family), f"{family}-base")
                peft_model, folder = self.peft_adapter(referee(family), f"{family}-peft")
                with open(os.path.join(folder, "adapter_config.json")) as f:
                    self.assertTrue(json.load(f)["target_modules"])
                with torch.no_grad():
                    want = peft_model(x).logits
                    ours = generate.load(base)
                    self.assertGreater(max_diff(ours.logits(ours(x)), want), 100 * TOLERANCE)
                    lora.load_adapter(ours, folder)  # unmerged: the LoRA path beside the frozen weights
                    self.assertLessEqual(max_diff(ours.logits(ours(x)), want), TOLERANCE)
                    merged = generate.load(base, folder)
                    self.assertLessEqual(max_diff(merged.logits(merged(x)), want), TOLERANCE)
                # our merge, loaded by transformers
                code, _, err = run_engine("merge", "--base", base, "--adapter", folder, "--out", self.path(f"{family}-merged"))
                self.assertEqual(code, 0, err)
                reloaded = transformers.AutoModelForCausalLM.from_pretrained(self.path(f"{family}-merged"), dtype=torch.float32).eval()
                with torch.no_grad():
                    self.assertLessEqual(max_diff(reloaded(x).logits, want), TOLERANCE)
                # served: prefill logits and cached greedy decoding with the adapter applied per row
                served = Decoder(generate.load(base), 2)
                adapter = AdapterCache(served, 2).get(folder)
                served.cache.reserve(1, 32)
                with torch.no_grad():
                    logits = served.prefill(0, x[0].tolist(), adapter)
                self.assertLessEqual(max_diff(logits, want[0, -1]), TOLERANCE)

            with self.subTest(family=family, direction="engine -> peft"):
                ours = generate.load(base)
                lora.apply(ours, rank=4, alpha=8, seed=5)
                for name, p in ours.named_parameters():
                    if "lora_B" in name:
                        torch.nn.init.normal_(p, std=0.2)
                lora.save_adapter(ours, self.path(f"{family}-ours"), 4, 8, 0.0, None, base)
                loaded = peft.PeftModel.from_pretrained(referee(family), self.path(f"{family}-ours")).eval()
                with torch.no_grad():
                    self.assertLessEqual(max_diff(loaded(x).logits, ours.logits(ours(x))), TOLERANCE)

    def test_one_training_step_matches_transformers_and_peft(self):
        # Loss and LoRA gradients of one step over packed examples (only the marked tokens scored)
        # against PEFT's model run on each example alone, the loss summed over the same tokens.
        rng = np.random.default_rng(0)
        examples = []
        for n in (19, 11, 26, 8):
            tokens = rng.integers(0, COMMON["vocab_size"], size=n)
            mask = np.zeros(n, dtype=np.uint8)
            mask[n // 3:n // 2] = 1  # an "assistant turn" inside the example
            mask[-3:] = 1
            examples.append((tokens, mask))
        write_arrays(self.path("arrays"), examples)
        arrays = data.Arrays(self.path("arrays"), COMMON["vocab_size"])
        for family in ("llama", "qwen2"):
            with self.subTest(family=family):
                peft_model, folder = self.peft_adapter(referee(family), f"{family}-peft")
                total, count = 0.0, 0
                for tokens, mask in examples:
                    logits = peft_model(torch.tensor([tokens.tolist()])).logits[0, :-1]
                    trained = torch.from_numpy(np.nonzero(mask[1:])[0])
                    total = total + F.cross_entropy(logits[trained], torch.from_numpy(tokens[1:][trained.numpy()]).long(), reduction="sum")
                    count += len(trained)
                (total / count).backward()
                want = {n.replace("base_model.model.", "").replace(".default", ""): p.grad
                        for n, p in peft_model.named_parameters() if "lora_" in n}

                base = self.save(referee(family), f"{family}-base")
                for use_kernels in (False, True):  # the plain modules, and the CPU kernels training uses
                    ours = generate.load(base)
                    lora.load_adapter(ours, folder)
                    lora.fuse(ours)  # as training runs
                    ours.train()
                    batch = data.Batch(arrays, data.pack(range(4), arrays.lengths, 64), 64, "cpu")
                    if use_kernels:
                        kernels.apply(ours)
                        batch.attend = kernels.attention(batch.attend)
                    loss, _ = train.scored(ours, batch, torch.float32, False)
                    self.assertEqual(len(batch.labels), count)
                    (loss / count).backward()
                    self.assertLessEqual(abs(loss.item() / count - (total / count).item()), TOLERANCE * (total / count).item())
                    got = {n: p.grad for n, p in ours.named_parameters() if "lora_" in n}
                    self.assertEqual(set(got), set(want))
                    for name, grad in got.items():
                        self.assertLessEqual(max_diff(grad, want[name]), TOLERANCE * want[name].abs().max().item(), (name, use_kernels))

    def test_cached_greedy_decoding_equals_generate(self):
        # Two prompts of different lengths decoded together, each against transformers' generate;
        # mistral's window of 8 is crossed by both.
        prompts = [ids(1, 11, seed=7)[0].tolist(), ids(1, 5, seed=8)[0].tolist()]
        new = 12
        for family in FAMILIES:
            with self.subTest(family=family):
                ref = referee(family)
                want = [ref.generate(torch.tensor([p]), max_new_tokens=new, do_sample=False)[0, len(p):].tolist()
                        for p in prompts]
                decoder = Decoder(generate.load(self.save(ref, family)), 2)
                decoder.cache.reserve(2, 32)
                got, lengths = [], []
                with torch.no_grad():
                    for row, p in enumerate(prompts):
                        got.append([int(decoder.prefill(row, p, None).argmax())])
                        lengths.append(len(p))
                    for _ in range(new - 1):
                        logits = decoder.step([g[-1] for g in got], lengths, None)
                        for row, token in enumerate(logits.argmax(-1).tolist()):
                            got[row].append(token)
                            lengths[row] += 1
                self.assertEqual(got, want)
