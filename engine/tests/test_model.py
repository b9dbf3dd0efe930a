import json
import math
import os

import torch
import torch.nn.functional as F

from tunelab_engine import config, safetensors
from tunelab_engine.errors import EngineError
from tunelab_engine.model import build

from .helpers import FAMILIES, TempDirTest, random_model, run_engine, save_random_model


class FamiliesTest(TempDirTest):
    def assert_packed_like_alone(self, model, batch, examples):
        """The packed batch's logits and labels equal each example's run on its own."""
        with torch.no_grad():
            hidden = model(batch.input_ids, batch.position_ids, batch.seq_ids, batch.layout)
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
                together = model.logits(model(packed, positions, seq_ids))
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
        self.assertIsNotNone(batch.layout)
        self.assertEqual(tuple(batch.input_ids.shape), (1, 24))
        model = random_model("qwen2").eval()
        self.assert_packed_like_alone(model, batch, examples)

    def test_per_example_attention_matches_autograd_through_padded_attention(self):
        # The hand-written forward and backward (on one thread) against autograd through
        # `attention` on each example padded to its width; grouped, multi-query and plain heads.
        from tunelab_engine import model as m
        g = torch.Generator().manual_seed(5)
        lengths = [50, 31, 7, 64, 9]
        n = sum(lengths)
        for dtype in (torch.float32, torch.bfloat16):
            for heads, kv_heads in ((6, 2), (4, 1), (4, 4)):
                q, k, v = (torch.randn(1, n, h, 16, generator=g).to(dtype).requires_grad_()
                           for h in (heads, kv_heads, kv_heads))
                grad = torch.randn(1, n, heads * 16, generator=g).to(dtype)
                examples, outs, start = [], [], 0
                for length in lengths:
                    width = -(-length // 32) * 32
                    allowed = torch.ones(width, width, dtype=torch.bool).tril()[None, None] & (torch.arange(width) < length)
                    bias = m.attention_bias(allowed, width, width, dtype, "cpu")
                    examples.append((start, length, width, bias))
                    qe, ke, ve = (F.pad(z[:, start:start + length], (0, 0, 0, 0, 0, width - length)).transpose(1, 2)
                                  for z in (q, k, v))
                    outs.append(m.attention(qe, ke, ve, bias)[:, :, :length].transpose(1, 2))
                    start += length
                want = torch.cat(outs, 1).reshape(1, n, heads * 16)
                want_grads = torch.autograd.grad(want, (q, k, v), grad)
                threads = torch.get_num_threads()
                got = m._PerExampleAttention.apply(q, k, v, examples)
                got_grads = torch.autograd.grad(got, (q, k, v), grad)
                self.assertEqual(torch.get_num_threads(), threads)
                self.assertLess((got - want).abs().max().item(), 1e-5)
                for a, b in zip(got_grads, want_grads):
                    self.assertLess((a - b).abs().max().item(), 1e-5)

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
                self.assertEqual(batch.layout.lengths is None, per_example == 0)
                chosen = [examples[i] for row in rows for i in row]
                self.assertEqual(batch.tokens, sum(map(len, chosen)))
                self.assertEqual(batch.input_ids.shape[1] % 8, 0)
                self.assertEqual(batch.layout.width % 8, 0)
                self.assert_packed_like_alone(model, batch, chosen)
        finally:
            data.SHAPE_MULTIPLE, data.PER_EXAMPLE_ATTENTION = saved

    def test_hand_written_backwards_match_autograd(self):
        # float64 takes the same hand-written paths as bf16 (only fp32 keeps transformers' code),
        # so they are checked here against the plain formulas at full precision.
        from tunelab_engine import model as m
        g = torch.Generator().manual_seed(5)

        def check(fn, ref, *shapes):
            inputs = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
            upstream = torch.randn(fn(*inputs).shape, generator=g, dtype=torch.float64)
            got = torch.autograd.grad(fn(*inputs), inputs, upstream)
            want = torch.autograd.grad(ref(*inputs), inputs, upstream)
            self.assertLess((fn(*inputs) - ref(*inputs)).abs().max().item(), 1e-5)
            for a, b in zip(got, want):
                self.assertLess((a - b).abs().max().item(), 1e-5)

        norm = m.RMSNorm(16, 1e-5)
        norm.weight = torch.nn.Parameter(torch.randn(16, generator=g, dtype=torch.float64))
        check(norm, lambda x: norm.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5), (2, 5, 16))
        check(lambda x, w: m._RMSNorm.apply(x, w, 1e-5), lambda x, w: w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5), (7, 16), (16,))

        def rotate_half(x):
            return torch.cat((-x[..., 4:], x[..., :4]), dim=-1)
        angles = torch.rand(1, 5, 1, 4, generator=g, dtype=torch.float64) * 6
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        check(lambda x: m.rope(x, cos, sin), lambda x: x * cos + rotate_half(x) * sin, (1, 5, 3, 8))
        check(m.swiglu, lambda gu: F.silu(gu[..., :6]) * gu[..., 6:], (1, 5, 12))

    def test_mistral_sliding_window_limits_attention(self):
        model = random_model("mistral").eval()
        model.config.sliding_window = 4
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
