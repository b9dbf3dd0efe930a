"""The `serve` command: cached batched decoding against the uncached reference, adapters per row,
sampling, finish reasons, cancel, per-request errors, and the real process over pipes."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

import torch

from tunelab_engine import config, decode, generate, kv_cache, lora, runtime, sampling, serve
from tunelab_engine.model import Transformer, init_weights
from tunelab_engine.decode import Decoder
from tunelab_engine.serve import Server

from .helpers import FAMILIES, TempDirTest, engine_env, random_model, save_random_model

VOCAB = FAMILIES["llama"]["vocab_size"]


def prompt(n, seed):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def request(rid, ids, max_tokens=12, **fields):
    message = {"type": "generate", "id": rid, "input_ids": ids, "adapter": None, "max_tokens": max_tokens,
               "temperature": 0.0, "top_p": 1.0, "seed": None, "stop_ids": [], "presence_penalty": 0.0,
               "frequency_penalty": 0.0}
    message.update(fields)
    return json.dumps(message)


class Harness:
    """A Server driven step by step in this process, its events collected."""

    def __init__(self, model, max_batch=16, max_adapters=8):
        self.events = []
        self.server = Server(Decoder(model, max_batch), max_adapters, max_batch,
                             emit=lambda kind, **fields: self.events.append(dict(fields, type=kind)))
        self.max_active = 0

    def send(self, *lines):
        for line in lines:
            self.server.handle(line)

    def step(self):
        """What Server.run does between two reads of its input."""
        with torch.inference_mode():
            self.server.admit()
            self.max_active = max(self.max_active, len(self.server.active))
            if self.server.active:
                self.server.step()

    def run(self, limit=1000):
        for _ in range(limit):
            if not self.server.active and not self.server.waiting:
                return
            self.step()
        raise AssertionError("requests did not finish")

    def ids(self, rid):
        out = []
        for e in self.events:
            if e.get("id") == rid and e["type"] == "tokens":
                out.extend(e["ids"])
        return out

    def end(self, rid):
        ends = [e for e in self.events if e.get("id") == rid and e["type"] in ("done", "error")]
        assert len(ends) == 1, (rid, ends)
        return ends[0]


def small_context_model(context, family="llama"):
    cfg = config.from_dict(dict(FAMILIES[family], max_position_embeddings=context))
    model = Transformer(cfg)
    init_weights(model, 0, 0.2)
    return model.eval()


def write_adapter(folder, family, rank, alpha, targets, seed):
    model = random_model(family)
    lora.apply(model, rank, alpha, targets=targets, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; make the adapter change the output
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    lora.save_adapter(model, folder, rank, alpha, 0.0, targets, "test-base")
    return folder


def merged_model(family, adapter):
    model = random_model(family).eval()
    if adapter:
        lora.load_adapter(model, adapter)
        lora.merge(model)
    return model


class CachedDecodingTest(TempDirTest):
    def test_greedy_equals_the_uncached_reference_for_each_family(self):
        # Prompts of 3, 11 and 21 tokens joining at steps 0, 1 and 3; mistral's window is 8, so
        # both prompts and cached decoding run past it. Prefill in one piece, and in pieces of 4.
        lengths, joins = (3, 11, 21), (0, 1, 3)
        saved = decode.PREFILL_CHUNK
        self.addCleanup(setattr, decode, "PREFILL_CHUNK", saved)
        for family in FAMILIES:
            model = random_model(family).eval()
            prompts = [prompt(n, seed=n) for n in lengths]
            expected = [generate.generate(model, p, 14)[0] for p in prompts]
            for chunk in (saved, 4):
                with self.subTest(family=family, prefill_chunk=chunk):
                    decode.PREFILL_CHUNK = chunk
                    h = Harness(model)
                    for step in range(4):
                        for i, join in enumerate(joins):
                            if join == step:
                                h.send(request(str(i), prompts[i], max_tokens=14))
                        h.step()
                    h.run()
                    for i in range(len(prompts)):
                        self.assertEqual(h.ids(str(i)), expected[i], f"request {i}")
                        self.assertEqual(h.end(str(i)), {"type": "done", "id": str(i), "finish_reason": "length",
                                                         "prompt_tokens": lengths[i], "completion_tokens": 14})

    def test_mixed_adapters_and_lengths_in_one_batch_match_each_run_alone_merged(self):
        family = "qwen2"
        a1 = write_adapter(self.path("a1"), family, 4, 8, None, seed=1)
        a2 = write_adapter(self.path("a2"), family, 2, 6, ["q_proj", "v_proj", "down_proj"], seed=2)
        cases = [("r0", 5, a1, 0), ("r1", 17, None, 0), ("r2", 9, a2, 1), ("r3", 2, a1, 2),
                 ("r4", 13, a2, 2), ("r5", 7, None, 4)]
        expected = {}
        for rid, n, adapter, _ in cases:
            expected[rid] = generate.generate(merged_model(family, adapter), prompt(n, seed=n), 20)[0]
        # The adapters do change the output (else this test would prove little).
        self.assertNotEqual(generate.generate(merged_model(family, a1), prompt(5, 5), 20)[0],
                            generate.generate(merged_model(family, None), prompt(5, 5), 20)[0])
        # An LRU of one adapter: each request holds its own copy. Of eight: rows share them.
        for max_adapters in (1, 8):
            with self.subTest(max_adapters=max_adapters):
                saved = kv_cache.GROW
                kv_cache.GROW = 8  # the cache grows (and is copied) several times while decoding
                try:
                    h = Harness(random_model(family).eval(), max_adapters=max_adapters)
                    for step in range(5):
                        for rid, n, adapter, join in cases:
                            if join == step:
                                h.send(request(rid, prompt(n, seed=n), max_tokens=20, adapter=adapter))
                        h.step()
                    h.run()
                finally:
                    kv_cache.GROW = saved
                self.assertEqual(h.max_active, len(cases))
                for rid, *_ in cases:
                    self.assertEqual(h.ids(rid), expected[rid], rid)
                    self.assertEqual(h.end(rid)["finish_reason"], "length")
                self.assertEqual(len(h.server.adapters.entries), min(2, max_adapters))

    def test_requests_beyond_max_batch_wait_in_arrival_order(self):
        model = random_model("llama").eval()
        prompts = [prompt(4 + i, seed=i) for i in range(5)]
        h = Harness(model, max_batch=2)
        h.send(*[request(f"q{i}", p, max_tokens=3 + i) for i, p in enumerate(prompts)])
        h.run()
        self.assertEqual(h.max_active, 2)
        for i, p in enumerate(prompts):
            self.assertEqual(h.ids(f"q{i}"), generate.generate(model, p, 3 + i)[0])
        firsts = [next(n for n, e in enumerate(h.events) if e.get("id") == f"q{i}") for i in range(5)]
        self.assertEqual(firsts, sorted(firsts))


class FinishTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.model = random_model("llama").eval()

    def test_stop_id_ends_the_request_and_is_not_sent(self):
        p = prompt(6, seed=0)
        full = generate.generate(self.model, p, 12)[0]
        cut = next(i for i in range(2, 12) if full[i] not in full[:i])
        h = Harness(self.model)
        h.send(request("s", p, max_tokens=12, stop_ids=[full[cut], 95 if full[cut] != 95 else 94]))
        h.run()
        self.assertEqual(h.ids("s"), full[:cut])
        self.assertEqual(h.end("s"), {"type": "done", "id": "s", "finish_reason": "stop", "prompt_tokens": 6,
                                      "completion_tokens": cut})

    def test_stop_id_as_the_first_token(self):
        p = prompt(6, seed=0)
        first = generate.generate(self.model, p, 1)[0][0]
        h = Harness(self.model)
        h.send(request("s", p, stop_ids=[first]))
        h.run()
        self.assertEqual(h.ids("s"), [])
        self.assertEqual(h.end("s")["finish_reason"], "stop")
        self.assertEqual(h.end("s")["completion_tokens"], 0)

    def test_max_tokens_and_a_full_context_end_with_length(self):
        model = small_context_model(16)
        p = prompt(10, seed=1)
        h = Harness(model)
        h.send(request("m", p, max_tokens=3), request("c", p, max_tokens=100), request("n", p, max_tokens=None),
               request("one", prompt(15, seed=2), max_tokens=5))
        h.run()
        self.assertEqual(len(h.ids("m")), 3)
        self.assertEqual(h.end("m")["finish_reason"], "length")
        # prompt + generated = context length (16)
        self.assertEqual(h.ids("c"), generate.generate(model, p, 6)[0])
        self.assertEqual(h.end("c"), {"type": "done", "id": "c", "finish_reason": "length", "prompt_tokens": 10,
                                      "completion_tokens": 6})
        self.assertEqual(h.end("n")["completion_tokens"], 6)
        self.assertEqual(h.end("one")["completion_tokens"], 1)

    def test_cancel_active_waiting_and_unknown(self):
        h = Harness(self.model, max_batch=1)
        h.send(request("a", prompt(5, 0), max_tokens=50), request("b", prompt(5, 1), max_tokens=50))
        for _ in range(3):
            h.step()
        h.send('{"type": "cancel", "id": "a"}', '{"type": "cancel", "id": "nobody"}')
        self.assertEqual(h.end("a"), {"type": "done", "id": "a", "finish_reason": "cancelled", "prompt_tokens": 5,
                                      "completion_tokens": len(h.ids("a"))})
        self.assertGreater(len(h.ids("a")), 0)
        h.step()
        self.assertEqual([r.id for r in h.server.active], ["b"])
        h.send('{"type": "cancel", "id": "b"}')
        h.send(request("c", prompt(5, 2), max_tokens=2), '{"type": "cancel", "id": "c"}')  # still waiting
        h.run()
        self.assertEqual(h.end("b")["finish_reason"], "cancelled")
        self.assertEqual(h.end("c")["completion_tokens"], 0)
        self.assertFalse(any(e.get("id") == "nobody" for e in h.events))
        h.send('{"type": "cancel", "id": "a"}')  # already finished: ignored
        self.assertEqual(len([e for e in h.events if e.get("id") == "a" and e["type"] == "done"]), 1)


class SamplingTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.model = random_model("smollm").eval()

    def sample(self, **fields):
        h = Harness(self.model)
        h.send(request("x", prompt(6, 3), max_tokens=24, **fields))
        h.run()
        return h.ids("x")

    def test_same_seed_same_ids_other_seed_other_ids(self):
        a = self.sample(temperature=1.0, top_p=0.9, seed=7)
        self.assertEqual(a, self.sample(temperature=1.0, top_p=0.9, seed=7))
        self.assertNotEqual(a, self.sample(temperature=1.0, top_p=0.9, seed=8))
        self.assertNotEqual(a, self.sample(temperature=0.0))
        # also when sharing the batch with another request
        h = Harness(self.model)
        h.send(request("x", prompt(6, 3), max_tokens=24, temperature=1.0, top_p=0.9, seed=7),
               request("y", prompt(9, 4), max_tokens=30, temperature=0.7, seed=1))
        h.run()
        self.assertEqual(h.ids("x"), a)

    def test_top_p_zero_is_greedy(self):
        self.assertEqual(self.sample(temperature=1.5, top_p=0.0, seed=3), self.sample(temperature=0.0))

    def test_top_p_keeps_to_the_nucleus_even_when_it_is_wide(self):
        # Slowly falling probabilities over 5,000 tokens: top_p 0.9 keeps most of them, far more
        # than the first candidates looked at, and never one past the head a full sort finds.
        logits = -torch.arange(5000, dtype=torch.float32) * 1e-4
        probs = torch.softmax(logits, -1)
        cutoff = int(((probs.cumsum(0) - probs) < 0.9).sum())
        fields = {"temperature": 1.0, "top_p": 0.9, "seed": 5, "presence": 0.0, "frequency": 0.0,
                  "constraint": None, "logprobs": None}
        sampler = sampling.Sampler(type("Req", (), fields)(), 5000, "cpu")
        draws = [sampler.draw(logits.clone()) for _ in range(300)]
        self.assertTrue(all(d < cutoff for d in draws))
        self.assertGreater(max(draws), 4 * sampling.NUCLEUS_START)

    def test_penalties_as_openai_defines_them(self):
        presence, frequency = 0.8, 0.6
        ids = prompt(6, 3)
        expected, counts = [], torch.zeros(VOCAB)
        with torch.no_grad():
            for _ in range(24):
                logits = self.model.logits(self.model(torch.tensor([ids + expected])))[0, -1]
                logits = logits - presence * (counts > 0).float() - frequency * counts
                token = int(logits.argmax())
                expected.append(token)
                counts[token] += 1
        plain = self.sample(temperature=0.0)
        self.assertNotEqual(expected, plain)
        self.assertEqual(self.sample(presence_penalty=presence, frequency_penalty=frequency), expected)
        self.assertEqual(len(set(self.sample(presence_penalty=100.0))), 24)


class ErrorTest(TempDirTest):
    def test_invalid_requests_get_an_error_with_their_id_and_others_complete(self):
        family = "llama"
        model = random_model(family).eval()
        other = self.path("other-base")
        save_random_model(other, family, overrides={"hidden_size": 32, "intermediate_size": 64})
        mismatched = self.path("mismatched")
        m = generate.load(other)
        lora.apply(m, 2, 4)
        lora.save_adapter(m, mismatched, 2, 4, 0.0, None, "other")
        not_lora = self.path("not-lora")
        os.makedirs(not_lora)
        with open(os.path.join(not_lora, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "PREFIX_TUNING"}, f)
        good = write_adapter(self.path("good"), family, 2, 4, None, seed=3)
        pattern = write_adapter(self.path("pattern"), family, 2, 4, None, seed=3)
        with open(os.path.join(pattern, "adapter_config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(pattern, "adapter_config.json"), "w") as f:
            json.dump(dict(cfg, rank_pattern={"q_proj": 4}), f)
        h = Harness(model)
        h.send(request("ok", prompt(5, 0), max_tokens=6, adapter=good),
               request("range", [1, 2, VOCAB]), request("negative", [-1]), request("empty", []),
               request("long", [1] * 256), request("float", [1.5]),
               request("missing", [1], adapter=self.path("nowhere")),
               request("mismatch", [1], adapter=mismatched), request("peft", [1], adapter=not_lora),
               request("pattern", [1], adapter=pattern), request("file", [1], adapter=os.path.join(good, "adapter_config.json")),
               request("temp", [1], temperature=-1), request("top_p", [1], top_p=1.5),
               request("max", [1], max_tokens=0), request("seed", [1], seed="x"),
               request("stops", [1], stop_ids=[1, "a"]), request("pen", [1], presence_penalty=float("nan")),
               json.dumps({"type": "what", "id": "kind"}))
        h.send(request("ok", [1]))  # id in use
        h.run()
        self.assertEqual(len(h.ids("ok")), 6)
        codes = {e["id"]: e["code"] for e in h.events if e["type"] == "error"}
        self.assertEqual(codes.pop("ok"), "invalid_request")
        for rid in ("missing", "mismatch", "peft", "pattern", "file"):
            self.assertEqual(codes.pop(rid), "invalid_adapter", rid)
        self.assertEqual(set(codes.values()), {"invalid_request"})
        self.assertEqual(set(codes), {"range", "negative", "empty", "long", "float", "temp", "top_p", "max",
                                      "seed", "stops", "pen", "kind"})
        self.assertEqual([e["type"] for e in h.events if e["id"] == "ok"][-1], "done")
        self.assertFalse(any(e["type"] == "done" and e["id"] != "ok" for e in h.events))


class DtypeTest(TempDirTest):
    def test_auto_dtype_and_a_bf16_engine(self):
        cfg = config.from_dict(dict(FAMILIES["llama"], torch_dtype="bfloat16"))
        saved = runtime.cpu_has_bf16
        try:
            for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
                runtime.cpu_has_bf16 = lambda: native
                self.assertEqual(serve.resolve("cpu", "auto", cfg), (torch.device("cpu"), expected))
                cfg.torch_dtype = "float32"
                self.assertEqual(serve.resolve("cpu", "auto", cfg)[1], torch.float32)
                cfg.torch_dtype = "bfloat16"
        finally:
            runtime.cpu_has_bf16 = saved
        self.assertEqual(serve.resolve("cpu", "float32", cfg)[1], torch.float32)
        h = Harness(random_model("qwen3").to(torch.bfloat16).eval())
        h.send(request("b", prompt(9, 0), max_tokens=10), request("c", prompt(3, 1), max_tokens=10,
                                                                    temperature=0.8, seed=1, frequency_penalty=0.5))
        h.run()
        for rid in "bc":
            self.assertEqual(h.end(rid)["completion_tokens"], 10)
            self.assertTrue(all(0 <= i < VOCAB for i in h.ids(rid)))


class ProcessTest(TempDirTest):
    def start(self, *extra):
        model = save_random_model(self.path("model"), "mistral")
        proc = subprocess.Popen([sys.executable, "-m", "tunelab_engine", "serve", "--model", model, *extra],
                                env=engine_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        return proc

    def read_event(self, proc):
        line = proc.stdout.readline()
        self.assertTrue(line, "engine closed stdout")
        return json.loads(line)

    def test_protocol_over_pipes_then_eof(self):
        proc = self.start("--max-batch", "4")
        ready = self.read_event(proc)
        self.assertEqual({k: ready[k] for k in ("type", "vocab_size", "context_length", "device", "dtype", "max_batch")},
                         {"type": "ready", "vocab_size": 96, "context_length": 256, "device": "cpu",
                          "dtype": "float32", "max_batch": 4})
        self.assertIsInstance(ready["time"], float)
        reference = random_model("mistral").eval()
        p1, p2 = prompt(12, 1), prompt(4, 2)
        proc.stdin.write(request("one", p1, max_tokens=10) + "\n" + request("two", p2, max_tokens=200) + "\n"
                         + request("bad", [999]) + "\n")
        proc.stdin.flush()
        got, ends = {"one": [], "two": []}, {}

        def read_until_end_of(rid):
            while rid not in ends:
                e = self.read_event(proc)
                if e["type"] == "tokens":
                    got[e["id"]].extend(e["ids"])
                else:
                    ends[e["id"]] = e

        read_until_end_of("one")
        proc.stdin.write('{"type": "cancel", "id": "two"}\n')
        proc.stdin.flush()
        read_until_end_of("two")
        self.assertEqual(got["one"], generate.generate(reference, p1, 10)[0])
        self.assertEqual((ends["one"]["finish_reason"], ends["one"]["completion_tokens"]), ("length", 10))
        self.assertEqual(ends["bad"]["type"], "error")
        self.assertEqual(ends["bad"]["code"], "invalid_request")
        self.assertEqual(ends["two"]["finish_reason"], "cancelled")
        self.assertEqual(ends["two"]["completion_tokens"], len(got["two"]))
        self.assertEqual(got["two"], generate.generate(reference, p2, len(got["two"]))[0])
        start = time.time()
        proc.stdin.close()
        self.assertEqual(proc.wait(timeout=60), 0)
        self.assertLess(time.time() - start, 5)
        self.assertEqual(proc.stdout.read(), "")

    def test_sigterm_exits_promptly_while_decoding_or_idle(self):
        for busy in (True, False):
            with self.subTest(busy=busy):
                proc = self.start()
                self.assertEqual(self.read_event(proc)["type"], "ready")
                if busy:
                    proc.stdin.write(request("long", [1, 2, 3], max_tokens=240) + "\n")
                    proc.stdin.flush()
                    self.assertEqual(self.read_event(proc)["type"], "tokens")
                start = time.time()
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=60), 0)
                self.assertLess(time.time() - start, 5)
                proc.stdin.close()

    def test_a_line_that_is_not_json_is_fatal(self):
        proc = self.start()
        self.assertEqual(self.read_event(proc)["type"], "ready")
        proc.stdin.flush()
        proc.stdin.buffer.write(b'{"type": "generate", "id": "\xff"}\n')  # not UTF-8
        proc.stdin.buffer.flush()
        last = self.read_event(proc)
        self.assertEqual((last["type"], last["code"]), ("error", "invalid_request"))
        self.assertNotIn("id", last)
        self.assertEqual(proc.wait(timeout=60), 1)
        proc.stdin.close()

    def test_unreadable_model_is_fatal(self):
        proc = subprocess.run([sys.executable, "-m", "tunelab_engine", "serve", "--model", self.path("none")],
                              env=engine_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 1)
        last = json.loads(proc.stdout.splitlines()[-1])
        self.assertEqual((last["type"], last["code"]), ("error", "invalid_model"))
        self.assertNotIn("id", last)


if __name__ == "__main__":
    unittest.main()
