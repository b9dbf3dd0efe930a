import json
import os

import torch
import torch.nn.functional as F

from tunelab_engine import kernels, lora, safetensors
from tunelab_engine.loss import linear_cross_entropy

from .helpers import TempDirTest, random_model, run_engine, save_random_model


class LossTest(TempDirTest):
    def test_chunked_loss_and_gradients_match_cross_entropy(self):
        import tunelab_engine.loss as loss_mod
        g = torch.Generator().manual_seed(0)
        hidden = torch.randn(37, 16, generator=g, requires_grad=True)
        weight = torch.randn(50, 16, generator=g, requires_grad=True)
        labels = torch.randint(0, 50, (37,), generator=g)
        ref = F.cross_entropy(hidden @ weight.t(), labels, reduction="sum")
        ref.backward()
        ref_h, ref_w = hidden.grad.clone(), weight.grad.clone()
        hidden.grad = weight.grad = None
        saved = loss_mod.CHUNK_ELEMENTS, loss_mod.SLICE_ELEMENTS, loss_mod.VOCAB_SLICE
        # several chunks of 8 rows, softmax slices of 3 rows, the vocabulary in pieces of 16 (and 2)
        loss_mod.CHUNK_ELEMENTS, loss_mod.SLICE_ELEMENTS, loss_mod.VOCAB_SLICE = 50 * 8, 50 * 3, 16
        try:
            loss, correct = linear_cross_entropy(hidden, weight, labels)
        finally:
            loss_mod.CHUNK_ELEMENTS, loss_mod.SLICE_ELEMENTS, loss_mod.VOCAB_SLICE = saved
        (loss * 0.5).backward()
        self.assertAlmostEqual(loss.item(), ref.item(), places=3)
        self.assertEqual(int(correct), int(((hidden @ weight.t()).argmax(-1) == labels).sum()))
        self.assertLess((hidden.grad - 0.5 * ref_h).abs().max().item(), 1e-5)
        self.assertLess((weight.grad - 0.5 * ref_w).abs().max().item(), 1e-5)

    def test_chunked_token_log_probs_and_their_gradients_match_log_softmax(self):
        # DPO weighs each token's log-probability by its own factor (its pair's), which the
        # gradients must carry through the chunks, for the hidden states and the output weight.
        import tunelab_engine.loss as loss_mod
        g = torch.Generator().manual_seed(1)
        hidden = torch.randn(37, 16, generator=g, requires_grad=True)
        weight = torch.randn(50, 16, generator=g, requires_grad=True)
        labels = torch.randint(0, 50, (37,), generator=g)
        factors = torch.randn(37, generator=g)
        ref = (hidden @ weight.t()).log_softmax(-1).gather(1, labels[:, None]).squeeze(1)
        (ref * factors).sum().backward()
        ref_h, ref_w = hidden.grad.clone(), weight.grad.clone()
        hidden.grad = weight.grad = None
        saved = loss_mod.CHUNK_ELEMENTS, loss_mod.SLICE_ELEMENTS, loss_mod.VOCAB_SLICE
        loss_mod.CHUNK_ELEMENTS, loss_mod.SLICE_ELEMENTS, loss_mod.VOCAB_SLICE = 50 * 8, 50 * 3, 16
        try:
            logps, correct = loss_mod.token_log_probs(hidden, weight, labels)
            (logps * factors).sum().backward()
            with torch.no_grad():
                logps_no_grad, _ = loss_mod.token_log_probs(hidden, weight, labels)
        finally:
            loss_mod.CHUNK_ELEMENTS, loss_mod.SLICE_ELEMENTS, loss_mod.VOCAB_SLICE = saved
        self.assertLess((logps - ref).abs().max().item(), 1e-5)
        self.assertTrue(torch.equal(logps_no_grad, logps.detach()))
        self.assertTrue(torch.equal(correct, (hidden @ weight.t()).argmax(-1) == labels))
        self.assertLess((hidden.grad - ref_h).abs().max().item(), 1e-5)
        self.assertLess((weight.grad - ref_w).abs().max().item(), 1e-5)


class LoRATest(TempDirTest):
    def test_starts_as_the_base_model_and_trains_only_a_and_b(self):
        model = random_model("qwen2").eval()
        ids = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            before = model.logits(model(ids))
        params = lora.apply(model, rank=4, alpha=8)
        self.assertEqual(len(params), 2 * 7 * 2)  # A and B, 7 linear layers, 2 layers
        self.assertEqual(sum(p.requires_grad for p in model.parameters()), len(params))
        with torch.no_grad():
            self.assertTrue(torch.allclose(model.logits(model(ids)), before, atol=1e-6))

    def test_forward_and_gradients_are_the_low_rank_update(self):
        model = random_model("llama")
        lora.apply(model, rank=2, alpha=6, targets=["q_proj"])
        layer = model.model.layers[0].self_attn.q_proj
        torch.nn.init.normal_(layer.lora_B.weight)
        x = torch.randn(3, 5, 64, requires_grad=True)
        layer(x).square().sum().backward()
        got = (x.grad.clone(), layer.lora_A.weight.grad.clone(), layer.lora_B.weight.grad.clone())
        x.grad = layer.lora_A.weight.grad = layer.lora_B.weight.grad = None
        a, b = layer.lora_A.weight, layer.lora_B.weight
        (x @ (layer.weight + 3.0 * b @ a).t()).square().sum().backward()
        for g, want in zip(got, (x.grad, a.grad, b.grad)):
            # relative to the largest entry: fp32 sums of ~1e3-sized terms round near 1e-4 apart
            self.assertLess((g - want).abs().max().item(), 1e-5 * want.abs().max().item())

    def test_dropout_applies_to_the_low_rank_path_only(self):
        for use_kernels in (False, True):  # nn.Dropout in the plain module; the kernel draws its own mask
            model = random_model("llama")
            lora.apply(model, rank=2, alpha=6, dropout=0.5, targets=["q_proj"])
            if use_kernels:
                kernels.apply(model)
            layer = model.model.layers[0].self_attn.q_proj.train()
            torch.nn.init.normal_(layer.lora_B.weight)
            x = torch.randn(3, 5, 64, requires_grad=True)
            torch.manual_seed(7)
            layer(x).square().sum().backward()
            got = (x.grad.clone(), layer.lora_A.weight.grad.clone(), layer.lora_B.weight.grad.clone())
            x.grad = layer.lora_A.weight.grad = layer.lora_B.weight.grad = None
            torch.manual_seed(7)
            keep = torch.empty(15, 64).bernoulli_(0.5).div_(0.5).view(3, 5, 64)
            a, b = layer.lora_A.weight, layer.lora_B.weight
            (x @ layer.weight.t() + 3.0 * (x * keep) @ a.t() @ b.t()).square().sum().backward()
            for g, want in zip(got, (x.grad, a.grad, b.grad)):
                # relative to the largest entry: fp32 sums of ~1e3-sized terms round near 1e-4 apart
                self.assertLess((g - want).abs().max().item(), 1e-5 * want.abs().max().item(), use_kernels)

    def test_fused_projections_compute_the_same_outputs_and_gradients(self):
        model = random_model("qwen2")  # q/k/v biases too
        params = lora.apply(model, rank=4, alpha=8, seed=2)
        for p in params:
            torch.nn.init.normal_(p, std=0.1)
        ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(0))

        def run():
            out = model.logits(model(ids))
            out.square().mean().backward()
            grads = [p.grad.clone() for p in params]
            for p in params:
                p.grad = None
            return out.detach(), grads

        plain, plain_grads = run()
        lora.fuse(model)
        self.assertTrue(hasattr(model.model.layers[0].self_attn, "qkv"))
        fused, fused_grads = run()
        self.assertLess((plain - fused).abs().max().item(), 1e-5)
        for a, b in zip(plain_grads, fused_grads):
            self.assertTrue(torch.allclose(a, b, rtol=1e-4, atol=1e-6))
        self.assertEqual(set(lora.adapter_state(model)), {"base_model.model." + n for n, p in model.named_parameters() if ".lora_" in n})

    def test_adapter_files_use_peft_names_and_fields(self):
        model = random_model("llama")
        lora.apply(model, rank=4, alpha=8)
        lora.save_adapter(model, self.tmp, 4, 8, 0.05, None, "org/base-model")
        with open(self.path("adapter_config.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg["peft_type"], "LORA")
        self.assertEqual(cfg["task_type"], "CAUSAL_LM")
        self.assertEqual(cfg["base_model_name_or_path"], "org/base-model")
        self.assertEqual((cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]), (4, 8, 0.05))
        self.assertEqual(sorted(cfg["target_modules"]), sorted(lora.ALL_LINEAR))
        tensors = safetensors.load_file(self.path("adapter_model.safetensors"))
        self.assertIn("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", tensors)
        self.assertIn("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", tensors)
        self.assertEqual(tuple(tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].shape), (32, 4))
        self.assertEqual(tuple(tensors["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"].shape), (4, 64))
        self.assertEqual(len(tensors), 2 * 7 * 2)
        self.assertTrue(all(t.dtype == torch.float32 for t in tensors.values()))

    def test_merge_writes_a_model_that_computes_the_adapted_logits(self):
        save_random_model(self.path("base"), "qwen3")
        with open(self.path("base", "tokenizer.json"), "w") as f:
            f.write("{}")
        from tunelab_engine import generate
        model = generate.load(self.path("base"))
        lora.apply(model, rank=4, alpha=4, seed=1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        lora.save_adapter(model, self.path("adapter"), 4, 4, 0.0, None, "base")
        ids = torch.randint(0, 96, (1, 10), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            adapted = model.logits(model(ids))
        code, events, err = run_engine("merge", "--base", self.path("base"), "--adapter", self.path("adapter"),
                                       "--out", self.path("merged"))
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.exists(self.path("merged", "tokenizer.json")))
        merged = generate.load(self.path("merged"))
        with torch.no_grad():
            self.assertLess((merged.logits(merged(ids)) - adapted).abs().max().item(), 1e-4)
        reloaded = generate.load(self.path("base"), self.path("adapter"))
        with torch.no_grad():
            self.assertLess((reloaded.logits(reloaded(ids)) - adapted).abs().max().item(), 1e-4)

    def test_adapters_naming_whole_modules_or_a_pattern_load(self):
        # PEFT >= 0.15 saves "all-linear" resolved to whole module names; a string is a regex.
        model = random_model("llama")
        lora.apply(model, rank=4, alpha=8, targets=["q_proj", "down_proj"], seed=3)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        lora.save_adapter(model, self.tmp, 4, 8, 0.0, ["q_proj", "down_proj"], "base")
        ids = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = model.logits(model(ids))
        whole = [f"model.layers.{i}.{part}" for i in range(2) for part in ("self_attn.q_proj", "mlp.down_proj")]
        for targets in (whole, r"model\.layers\.\d+\.(self_attn\.q_proj|mlp\.down_proj)"):
            with open(self.path("adapter_config.json")) as f:
                cfg = json.load(f)
            cfg["target_modules"] = targets
            with open(self.path("adapter_config.json"), "w") as f:
                json.dump(cfg, f)
            loaded = random_model("llama")
            lora.load_adapter(loaded, self.tmp)
            with torch.no_grad():
                self.assertLess((loaded.logits(loaded(ids)) - want).abs().max().item(), 1e-5, targets)
        cfg["target_modules"] = ["model.layers.0.self_attn.rotary_emb"]
        with open(self.path("adapter_config.json"), "w") as f:
            json.dump(cfg, f)
        with self.assertRaises(lora.EngineError) as e:
            lora.read_adapter(self.tmp, random_model("llama"))
        self.assertEqual(e.exception.code, "invalid_adapter")
        self.assertIn("rotary_emb", e.exception.message)
