import json
import math
import os

import torch

from tunelab_engine import config, safetensors
from tunelab_engine.attention import Examples, Rows
from tunelab_engine.errors import EngineError
from tunelab_engine.model import Transformer, build, init_weights

from .helpers import FAMILIES, TempDirTest, random_model, run_engine, save_random_model


class FamiliesTest(TempDirTest):
    def assert_packed_like_alone(self, model, batch, examples):
        """The packed batch's logits and labels equal each example's run on its own."""
        with torch.no_grad():
            hidden = model(batch.input_ids, batch.position_ids, batch.attend)
            got = model.logits(hidden[0][batch.positions])
            want = torch.cat([model.logits(model(torch.tensor([e])))[0, :-1] for e in examples])
        self.assertEqual(batch.labels.tolist(), [t for e in examples for t in e[1:]])
        self.assertLess((got - want).abs().max().item(), 1e-5)

    def test_each_family_builds_and_runs(self):
        ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
        for family in FAMILIES:
            with self.subTest(family=family):
                model = random_model(family).eval()
                with torch.no_grad():
                    logits = model.logits(model(ids))
                self.assertEqual(tuple(logits.shape), (2, 12, 96))
                self.assertTrue(torch.isfinite(logits).all())

    def test_family_switches(self):
        qwen2 = random_model("qwen2").model.layers[0].self_attn
        self.assertIsNotNone(qwen2.q_proj.bias)
        self.assertIsNotNone(qwen2.v_proj.bias)
        self.assertIsNone(qwen2.o_proj.bias)
        qwen3 = random_model("qwen3")
        self.assertEqual(tuple(qwen3.model.layers[0].self_attn.q_norm.weight.shape), (32,))
        self.assertEqual(qwen3.model.layers[0].self_attn.q_proj.out_features, 4 * 32)
        self.assertIs(qwen3.lm_head.weight, qwen3.model.embed_tokens.weight)
        llama = random_model("llama")
        self.assertIsNot(llama.lm_head.weight, llama.model.embed_tokens.weight)
        self.assertFalse(hasattr(llama.model.layers[0].self_attn, "q_norm"))

    def test_packed_rows_compute_what_separate_examples_compute(self):
        # Attention stays inside each example and positions restart, so packing changes nothing.
        for family in ("llama", "qwen3"):
            model = random_model(family).eval()
            g = torch.Generator().manual_seed(1)
            a, b = torch.randint(0, 96, (1, 7), generator=g), torch.randint(0, 96, (1, 5), generator=g)
            packed = torch.cat([a, b], dim=1)
            positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
            seq_ids = torch.tensor([[0] * 7 + [1] * 5])
            with torch.no_grad():
                together = model.logits(model(packed, positions, Rows(seq_ids)))
                apart = torch.cat([model.logits(model(a)), model.logits(model(b))], dim=1)
            self.assertLess((together - apart).abs().max().item(), 1e-5, family)

    def test_unpadded_packed_batches_compute_what_separate_examples_compute(self):
        from tunelab_engine import data
        from .helpers import write_arrays
        g = torch.Generator().manual_seed(3)
        examples = [torch.randint(0, 96, (n,), generator=g).tolist() for n in (7, 5, 9, 3)]
        write_arrays(self.path("arrays"), [(e, [1] * len(e)) for e in examples])
        arrays = data.Arrays(self.path("arrays"), 96)
        batch = data.Batch(arrays, [[0, 1], [2], [3]], 16, "cpu")  # rows of 12, 9 and 3 tokens
        self.assertIsInstance(batch.attend, Examples)
        self.assertEqual(tuple(batch.input_ids.shape), (1, 24))
        model = random_model("qwen2").eval()
        self.assert_packed_like_alone(model, batch, examples)

    def test_rounded_pass_sizes_change_nothing(self):
        # Filler tokens round N and the row width up (here to multiples of 8); they are untrained
        # and attention keeps them apart, whether they fit in a row's room or need a row of their own.
        from tunelab_engine import data
        from .helpers import write_arrays
        g = torch.Generator().manual_seed(4)
        examples = [torch.randint(0, 96, (n,), generator=g).tolist() for n in (37, 25, 41, 13, 37)]
        write_arrays(self.path("arrays"), [(e, [1] * len(e)) for e in examples])
        arrays = data.Arrays(self.path("arrays"), 96)
        model = random_model("qwen2").eval()
        saved = data.SHAPE_MULTIPLE, data.PER_EXAMPLE_ATTENTION
        data.SHAPE_MULTIPLE = 8
        try:
            for rows, per_example in [(r, p) for r in ([[0, 1], [2], [3]], [[0], [4]]) for p in (0, 16)]:
                data.PER_EXAMPLE_ATTENTION = per_example  # attention over padded rows, then per example
                batch = data.Batch(arrays, rows, 64, "cpu")
                self.assertIsInstance(batch.attend, Rows if per_example == 0 else Examples)
                chosen = [examples[i] for row in rows for i in row]
                self.assertEqual(batch.tokens, sum(map(len, chosen)))
                self.assertEqual(batch.input_ids.shape[1] % 8, 0)
                if per_example == 0:
                    self.assertEqual(batch.attend.width % 8, 0)
                self.assert_packed_like_alone(model, batch, chosen)
        finally:
            data.SHAPE_MULTIPLE, data.PER_EXAMPLE_ATTENTION = saved

    def test_mistral_sliding_window_limits_attention(self):
        model = Transformer(config.from_dict(dict(FAMILIES["mistral"], sliding_window=4)))
        init_weights(model, 0, 0.2)
        model.eval()
        ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(2))
        changed = ids.clone()
        changed[0, 0] = (ids[0, 0] + 1) % 96
        with torch.no_grad():
            x, y = model.logits(model(ids)), model.logits(model(changed))
        # Two layers of a 4-token window reach 6 tokens back: position 6 still sees token 0, 11 cannot.
        self.assertGreater((x[0, 6] - y[0, 6]).abs().max().item(), 1e-4)
        self.assertLess((x[0, 11] - y[0, 11]).abs().max().item(), 1e-6)


class ConfigTest(TempDirTest):
    def test_unknown_model_type_is_named(self):
        with self.assertRaises(EngineError) as e:
            config.from_dict(dict(FAMILIES["llama"], model_type="gpt2"))
        self.assertEqual(e.exception.code, "unsupported_model_type")
        self.assertIn("'gpt2'", e.exception.message)

    def test_missing_field_is_named(self):
        raw = dict(FAMILIES["llama"])
        del raw["hidden_size"]
        with self.assertRaises(EngineError) as e:
            config.from_dict(raw)
        self.assertIn("hidden_size", e.exception.message)

    def test_llama3_rope_scaling(self):
        cfg = config.from_dict(FAMILIES["llama3"])  # head_dim 16, theta 5e5, factor 8, original 32
        inv = config.rope_inv_freq(cfg)
        plain = 1.0 / (500000.0 ** (torch.arange(0, 16, 2).float() / 16))
        for got, f in zip(inv.tolist(), plain.tolist()):
            wavelen = 2 * math.pi / f
            if wavelen < 32 / 4:  # high frequencies: unchanged
                want = f
            elif wavelen > 32 / 1:  # low frequencies: divided by the factor
                want = f / 8
            else:
                smooth = (32 / wavelen - 1) / (4 - 1)
                want = (1 - smooth) * f / 8 + smooth * f
            self.assertAlmostEqual(got, want, places=6)

    def test_defaults_follow_transformers(self):
        raw = dict(FAMILIES["qwen3"])
        del raw["head_dim"]
        self.assertEqual(config.from_dict(raw).head_dim, 128)
        self.assertEqual(config.from_dict(FAMILIES["llama"]).head_dim, 16)
        self.assertTrue(config.from_dict(FAMILIES["qwen2"]).attention_bias)
        raw = dict(FAMILIES["llama"])
        del raw["num_key_value_heads"]
        self.assertEqual(config.from_dict(raw).num_key_value_heads, 4)


class LoadTest(TempDirTest):
    def test_init_writes_a_hugging_face_folder_that_loads(self):
        with open(self.path("config.json"), "w") as f:
            json.dump(FAMILIES["qwen2"], f)
        code, events, err = run_engine("init", "--config", self.path("config.json"), "--seed", "3",
                                       "--out", self.path("model"), "--dtype", "bfloat16")
        self.assertEqual(code, 0, err)
        self.assertEqual(events[-1]["type"], "done")
        tensors = safetensors.load_model(self.path("model"))
        self.assertNotIn("lm_head.weight", tensors)  # tied, as transformers writes it
        self.assertEqual(tensors["model.layers.0.self_attn.q_proj.bias"].dtype, torch.bfloat16)
        with open(self.path("model", "config.json")) as f:
            self.assertEqual(json.load(f)["torch_dtype"], "bfloat16")
        model = build(config.load(self.path("model")), tensors)
        self.assertEqual(model.model.layers[1].mlp.up_proj.weight.dtype, torch.float32)

    def test_weights_that_do_not_match_the_config_are_named(self):
        save_random_model(self.path("model"), "llama")
        cfg = config.from_dict(dict(FAMILIES["llama"], num_hidden_layers=3))
        with self.assertRaises(EngineError) as e:
            build(cfg, safetensors.load_model(self.path("model")))
        self.assertIn("model.layers.2.", e.exception.message)
        cfg = config.from_dict(dict(FAMILIES["llama"], intermediate_size=96))
        with self.assertRaises(EngineError) as e:
            build(cfg, safetensors.load_model(self.path("model")))
        self.assertIn("mlp", e.exception.message)
        self.assertTrue(os.path.exists(self.path("model", "model.safetensors")))


class ShortWindowTest(TempDirTest):
    def test_windows_shorter_than_examples_train_with_finite_gradients(self):
        # A query with no allowed key once made a NaN softmax row that reached the real tokens'
        # gradients (sliding_window below the padding multiple): two steps, then train_loss null.
        from tunelab_engine import data, lora, train
        from .helpers import write_arrays
        model = Transformer(config.from_dict(dict(FAMILIES["mistral"], sliding_window=3)))
        init_weights(model, 0, 0.2)
        params = lora.apply(model, rank=4, alpha=8)
        for p in params:
            torch.nn.init.normal_(p, std=0.1)
        g = torch.Generator().manual_seed(4)
        examples = [torch.randint(0, 96, (n,), generator=g).tolist() for n in (37, 25, 41, 13, 37)]
        write_arrays(self.path("arrays"), [(e, [1] * len(e)) for e in examples])
        arrays = data.Arrays(self.path("arrays"), 96)
        saved = data.PER_EXAMPLE_ATTENTION
        self.addCleanup(setattr, data, "PER_EXAMPLE_ATTENTION", saved)
        for dtype in (torch.float32, torch.bfloat16):
            model.to(dtype)
            for per_example in (0, 16):
                data.PER_EXAMPLE_ATTENTION = per_example
                batch = data.Batch(arrays, [[0, 1], [2], [3, 4]], 64, "cpu")
                loss, _ = train.scored(model, batch, dtype, False)
                loss.backward()
                with self.subTest(dtype=dtype, per_example=per_example):
                    self.assertTrue(torch.isfinite(loss).item())
                    self.assertTrue(all(torch.isfinite(p.grad).all() for p in params))
                for p in params:
                    p.grad = None
