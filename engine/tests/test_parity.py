import os
import unittest

import torch

from tunelab_engine import generate, safetensors

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "parity")


class ParityTest(unittest.TestCase):
    """Logits of transformers' own tiny random models (bench/engine/parity.py wrote them)."""

    def test_logits_match_transformers(self):
        if not os.path.isdir(FIXTURES):
            self.skipTest(f"no parity fixtures at {FIXTURES}: run bench/engine/parity.py where transformers is installed")
        families = sorted(os.listdir(FIXTURES))
        self.assertTrue(families)
        for family in families:
            with self.subTest(family=family):
                folder = os.path.join(FIXTURES, family)
                expected = safetensors.load_file(os.path.join(folder, "expected.safetensors"))
                model = generate.load(folder)
                with torch.no_grad():
                    logits = model.logits(model(expected["input_ids"]))
                self.assertLessEqual((logits - expected["logits"]).abs().max().item(), 1e-4)
