"""LoRA adapters for serving: read from PEFT folders on demand, kept in an LRU, applied per row.

The base weights are never merged or changed. Each adapter is held per layer as four pairs
matching the serving model's fused projections (q/k/v, o, gate/up, down): A stacked over the
targeted parts, and B block-diagonal with the scaling alpha / r folded in, so one pair of small
matmuls adds the update to a fused projection's output. Rows of a batch using the same adapter are
gathered together; rows with no adapter get nothing.
"""

import collections
import os
import time

import torch

from . import events, lora
from .errors import EngineError

# fused projection -> (parent module, parts in the fused output's order)
GROUPS = {
    "qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")),
    "o": ("self_attn", ("o_proj",)),
    "gate_up": ("mlp", ("gate_proj", "up_proj")),
    "down": ("mlp", ("down_proj",)),
}


class Adapter:
    def __init__(self, folder, config, pairs, model, stamp):
        self.folder, self.stamp = folder, stamp
        alpha = config["lora_alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise EngineError("invalid_adapter", f"{folder}/{lora.ADAPTER_CONFIG}: lora_alpha must be a positive number")
        rank = config["r"]
        scaling = alpha / rank
        weight = model.lm_head.weight
        dtype, device = weight.dtype, weight.device
        self.layers = []
        for i, layer in enumerate(model.model.layers):
            entry = {}
            for key, (parent_name, names) in GROUPS.items():
                parent = getattr(layer, parent_name)
                mods = [f"model.layers.{i}.{parent_name}.{n}" for n in names]
                present = [m for m in mods if m in pairs]
                if not present:
                    entry[key] = None
                    continue
                sizes = [getattr(parent, n).weight.shape[0] for n in names]
                a = torch.cat([pairs[m][0].float() for m in present])  # [R, in]
                b = torch.zeros(sum(sizes), rank * len(present))
                out = col = 0
                for m, size in zip(mods, sizes):
                    if m in pairs:
                        b[out:out + size, col:col + rank] = pairs[m][1].float() * scaling
                        col += rank
                    out += size
                # Stored transposed for x @ a_t @ b_t.
                entry[key] = (a.t().contiguous().to(device, dtype), b.t().contiguous().to(device, dtype))
            self.layers.append(entry)


def apply_lora(out, x, lora_rows, layer, key):
    """Adds each adapter's update of fused projection `key` to `out` [B, T, out] for its rows of
    x [B, T, in]; lora_rows: [(adapter, row index tensor, or None for all rows)]."""
    for adapter, index in lora_rows:
        pair = adapter.layers[layer][key]
        if pair is None:
            continue
        a_t, b_t = pair
        if index is None:
            flat = out.view(-1, out.shape[-1])
            flat.addmm_(x.reshape(-1, x.shape[-1]) @ a_t, b_t)
        else:
            out.index_add_(0, index, (x.index_select(0, index) @ a_t) @ b_t)


class AdapterCache:
    """Adapters by folder (real path), the least recently used dropped beyond `size`. A folder
    whose files changed since it was loaded is read again. Requests already using a dropped adapter
    keep it until they end."""

    def __init__(self, engine, size):
        self.model = engine.model
        self.size = size
        self.entries = collections.OrderedDict()

    def get(self, folder):
        path = os.path.realpath(folder)
        try:
            stamp = tuple(os.stat(os.path.join(path, name)).st_mtime_ns
                          for name in (lora.ADAPTER_CONFIG, lora.ADAPTER_WEIGHTS))
        except OSError:
            stamp = None
        hit = self.entries.get(path)
        if hit is not None and stamp is not None and hit.stamp == stamp:
            self.entries.move_to_end(path)
            return hit
        start = time.time()
        try:
            config, pairs = lora.read_adapter(path, self.model)
        except OSError as e:
            raise EngineError("invalid_adapter", f"{folder}: {e.strerror or e}") from None
        adapter = Adapter(folder, config, pairs, self.model, stamp)
        self.entries[path] = adapter
        self.entries.move_to_end(path)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        events.log(f"loaded adapter {folder} in {time.time() - start:.2f} s")
        return adapter
