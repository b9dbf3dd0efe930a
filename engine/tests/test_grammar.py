"""Grammar-constrained decoding in `serve`: output inside a JSON schema whatever the weights, rows
with and without grammars in one batch, a schema llguidance cannot compile, log-probabilities."""

import json
import math
import os

import torch

from tunelab_engine.grammar import GrammarCompiler
from tunelab_engine.decode import Decoder
from tunelab_engine.serve import Server

from .helpers import FAMILIES, TempDirTest, random_model
from .test_serve import request

VOCAB = FAMILIES["llama"]["vocab_size"]
END = VOCAB - 1
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]}},
          "required": ["ok", "color"], "additionalProperties": False,
          "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}
GRAMMAR = f"start: %json {json.dumps(SCHEMA)}"


def write_tokenizer(folder):
    """A byte-level tokenizer.json: one token per printable ASCII byte (ids 0-94), `<|end|>` 95."""
    vocab = {("\u0120" if b == 0x20 else chr(b)): b - 0x20 for b in range(0x20, 0x7F)}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": END, "content": "<|end|>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)


def text(ids):
    return bytes(i + 0x20 for i in ids).decode()


class GrammarTest(TempDirTest):
    def setUp(self):
        super().setUp()
        write_tokenizer(self.tmp)
        self.events = []
        self.server = Server(Decoder(random_model("llama"), 8), 4, 8, GrammarCompiler(self.tmp, VOCAB),
                             emit=lambda kind, **fields: self.events.append(dict(fields, type=kind)))

    def run_all(self):
        with torch.inference_mode():
            for _ in range(500):
                self.server.admit()
                if not self.server.active and not self.server.waiting:
                    return
                self.server.step()
        raise AssertionError("requests did not finish")

    def output(self, rid):
        return [i for e in self.events if e.get("id") == rid and e["type"] == "tokens" for i in e["ids"]]

    def end(self, rid):
        return next(e for e in self.events if e.get("id") == rid and e["type"] in ("done", "error"))

    def test_random_weights_write_what_the_schema_allows_beside_a_free_row(self):
        free_alone = "free-alone"
        self.server.handle(request(free_alone, [1, 2, 3], max_tokens=20, stop_ids=[END]))
        self.run_all()
        for seed in range(6):
            self.server.handle(request(f"json{seed}", [5, 6, 7], max_tokens=60, temperature=1.0, seed=seed,
                                       stop_ids=[END], grammar=GRAMMAR))
        self.server.handle(request("free", [1, 2, 3], max_tokens=20, stop_ids=[END]))
        self.run_all()
        for seed in range(6):
            self.assertEqual(self.end(f"json{seed}")["finish_reason"], "stop")
            value = json.loads(text(self.output(f"json{seed}")))
            self.assertEqual(list(value), ["ok", "color"])
            self.assertIsInstance(value["ok"], bool)
            self.assertIn(value["color"], SCHEMA["properties"]["color"]["enum"])
        # The grammar rows left the free row alone: the same tokens as when it ran by itself.
        self.assertEqual(self.output("free"), self.output(free_alone))

    def test_a_schema_llguidance_cannot_compile_is_refused_naming_the_keyword(self):
        bad = 'start: %json {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}'
        self.server.handle(request("bad", [1, 2], stop_ids=[END], grammar=bad))
        self.run_all()
        end = self.end("bad")
        self.assertEqual((end["type"], end["code"]), ("error", "invalid_grammar"))
        self.assertIn("no-such-format", end["message"])

    def test_logprobs_are_the_distribution_sampled_from(self):
        self.server.handle(request("free", [1, 2, 3], max_tokens=6, logprobs=5))
        self.server.handle(request("json", [1, 2, 3], max_tokens=6, stop_ids=[END], grammar=GRAMMAR, logprobs=20))
        self.run_all()
        for rid in ("free", "json"):
            events = [e for e in self.events if e.get("id") == rid and e["type"] == "tokens"]
            for event in events:
                [entry] = event["logprobs"]
                self.assertEqual(entry["token"], event["ids"][0])
                # Greedy: the chosen token is the likeliest, first among the alternatives.
                self.assertEqual(entry["top"][0][0], entry["token"])
                self.assertAlmostEqual(entry["top"][0][1], entry["logprob"], places=5)
                self.assertLessEqual(sum(math.exp(lp) for _, lp in entry["top"]), 1 + 1e-5)
        # The grammar's first token can only be "{": certain, and no alternatives.
        first = next(e for e in self.events if e.get("id") == "json" and e["type"] == "tokens")["logprobs"][0]
        self.assertEqual(text([first["token"]]), "{")
        self.assertAlmostEqual(first["logprob"], 0.0, places=5)
        self.assertEqual(len(first["top"]), 1)
