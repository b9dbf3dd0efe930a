import json
import os
import struct

import torch

from tunelab_engine import safetensors
from tunelab_engine.errors import EngineError

from .helpers import TempDirTest


class SafetensorsTest(TempDirTest):
    def tensors(self):
        g = torch.Generator().manual_seed(0)
        return {
            "a.bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
            "b.f16": torch.randn(7, generator=g).to(torch.float16),
            "c.f32": torch.randn(2, 3, 4, generator=g),
            "d.i64": torch.arange(6).view(2, 3),
            "e.empty": torch.zeros(0, 4),
        }

    def test_round_trip_keeps_dtypes_shapes_and_values(self):
        path = self.path("x.safetensors")
        safetensors.save_file(self.tensors(), path, {"format": "pt"})
        loaded = safetensors.load_file(path)
        self.assertEqual(set(loaded), set(self.tensors()))
        for name, tensor in self.tensors().items():
            self.assertEqual(loaded[name].dtype, tensor.dtype, name)
            self.assertTrue(torch.equal(loaded[name], tensor), name)

    def test_header_is_the_published_format(self):
        path = self.path("x.safetensors")
        safetensors.save_file({"w": torch.ones(2, dtype=torch.bfloat16)}, path, {"format": "pt"})
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        self.assertEqual(size % 8, 0)
        self.assertEqual(header["w"], {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]})
        self.assertEqual(header["__metadata__"], {"format": "pt"})

    def test_loaded_tensors_are_mapped_copy_on_write(self):
        path = self.path("x.safetensors")
        safetensors.save_file({"w": torch.zeros(4)}, path)
        loaded = safetensors.load_file(path)["w"]
        loaded += 1  # a caller writing into a tensor must never change the file
        self.assertTrue(torch.equal(safetensors.load_file(path)["w"], torch.zeros(4)))

    def test_sharded_model_with_index(self):
        tensors = {f"layer{i}.weight": torch.full((64,), float(i)) for i in range(5)}
        safetensors.save_model(tensors, self.tmp, max_shard_bytes=600)
        with open(self.path(safetensors.INDEX_NAME)) as f:
            index = json.load(f)
        shards = sorted(set(index["weight_map"].values()))
        self.assertGreater(len(shards), 1)
        self.assertEqual(shards[0], f"model-00001-of-{len(shards):05d}.safetensors")
        self.assertEqual(index["metadata"]["total_size"], 5 * 64 * 4)
        loaded = safetensors.load_model(self.tmp)
        for name, tensor in tensors.items():
            self.assertTrue(torch.equal(loaded[name], tensor))

    def test_damaged_files_are_named_errors(self):
        path = self.path("bad.safetensors")
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", 10 ** 9) + b"{}")
        with self.assertRaises(EngineError) as e:
            safetensors.load_file(path)
        self.assertIn("bad.safetensors", e.exception.message)
        with self.assertRaises(EngineError) as e:
            safetensors.load_model(self.path("nowhere"))
        self.assertEqual(e.exception.code, "invalid_model")
        os.makedirs(self.path("m"))
        with open(self.path("m", safetensors.INDEX_NAME), "w") as f:
            json.dump({"weight_map": {"w": "missing.safetensors"}}, f)
        with self.assertRaises(EngineError) as e:
            safetensors.load_model(self.path("m"))
        self.assertIn("missing.safetensors", e.exception.message)
