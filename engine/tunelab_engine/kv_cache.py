"""Keys and values of the sequences being decoded, one cache row per sequence.

k and v are each one tensor [layers, rows, kv_heads, capacity, head_dim]. Active sequences hold
rows 0..B-1 (a leaving sequence's row is filled by moving the last row into it), so a step reads
`k[layer, :B, :, :span]`, a strided view that `bmm` takes without a copy. Rows and capacity grow
on demand (rows doubling up to max_batch, capacity doubling in multiples of GROW up to the
context length), so a big model's cache is only as large as the traffic it has seen; `release`
frees it when nothing is active.

`prefill` and `step` are the model's `attend` (attention.py) for a forward that writes its keys and
values here and attends to what the cache holds.
"""

import torch

from .attention import allowed, causal_mask, sdpa
from .kernels import cached_attention, decode_attention

GROW = 256


class KVCache:
    def __init__(self, layers, kv_heads, head_dim, dtype, device, max_rows, max_length, native=None):
        """native: the C kernels' library (kernels.native_modules), for a step's attention in one call."""
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.native = native
        self.dtype, self.device = dtype, device
        self.max_rows, self.max_length = max_rows, max_length
        self.k = self.v = self.layer_k = self.layer_v = None
        self.rows = self.capacity = 0

    def bytes(self):
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()

    def reserve(self, rows, length):
        """Room for `rows` rows of `length` positions (existing contents kept)."""
        if rows <= self.rows and length <= self.capacity:
            return
        new_rows = self.rows if rows <= self.rows else min(self.max_rows, max(rows, 2 * self.rows))
        new_cap = self.capacity
        if length > self.capacity:
            new_cap = min(self.max_length, -(-max(length, 2 * self.capacity) // GROW) * GROW)
        new_rows, new_cap = max(new_rows, rows), max(new_cap, length)
        shape = (self.layers, new_rows, self.kv_heads, new_cap, self.head_dim)
        # Zeros, not empty: masked positions still enter the products (as 0 * value), and
        # uninitialized memory may hold NaN.
        k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.k is not None:
            k[:, :self.rows, :, :self.capacity] = self.k
            v[:, :self.rows, :, :self.capacity] = self.v
        self.k, self.v, self.rows, self.capacity = k, v, new_rows, new_cap
        self.layer_k, self.layer_v = k.unbind(0), v.unbind(0)  # views made once, not per layer and step

    def release(self):
        self.k = self.v = self.layer_k = self.layer_v = None
        self.rows = self.capacity = 0

    def write_prefix(self, layer, row, start, k, v):
        """k, v: [T, kv_heads, head_dim], positions start..start+T-1 of `row`."""
        end = start + k.shape[0]
        self.k[layer, row, :, start:end] = k.transpose(0, 1)
        self.v[layer, row, :, start:end] = v.transpose(0, 1)

    def prefix(self, layer, row, end):
        """Keys and values [kv_heads, end, head_dim] of positions 0..end-1 of `row` (views)."""
        return self.k[layer, row, :, :end], self.v[layer, row, :, :end]

    def write_step(self, layer, rows, positions, k, v, span):
        """k, v: [B, kv_heads, head_dim] for rows 0..B-1 at `positions` [B]; returns the rows'
        keys and values [B, kv_heads, span, head_dim] (views)."""
        keys, values = self.layer_k[layer], self.layer_v[layer]
        keys[rows, :, positions] = k
        values[rows, :, positions] = v
        b = k.shape[0]
        return keys[:b, :, :span], values[:b, :, :span]

    def move_row(self, src, dst, length):
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def prefill(self, row, start):
        """The attend for positions start..start+T-1 of one sequence in cache row `row` (a [1, T]
        forward): its keys and values are stored, and it attends to the row's positions so far."""

        def attend(layer, q, k, v, window):
            t = q.shape[1]
            end = start + t
            self.write_prefix(layer, row, start, k[0], v[0])
            if start == 0:  # its own keys as computed, in the model's dtype
                keys, values = k.transpose(1, 2), v.transpose(1, 2)
                mask = causal_mask(t, window, q.device)
            else:
                keys, values = (z[None] for z in self.prefix(layer, row, end))
                mask = allowed(torch.arange(start, end, device=q.device)[:, None],
                               torch.arange(end, device=q.device)[None, :], window)
            out = sdpa(q.transpose(1, 2).to(keys.dtype), keys, values, mask)
            return out.transpose(1, 2).to(q.dtype)

        return attend

    def step(self, positions):
        """The attend for one new token in each of rows 0..B-1 (a [B, 1] forward), row i's at
        `positions[i]` (a [B] tensor); each row attends to its own
        positions so far."""
        rows = torch.arange(len(positions), device=positions.device)
        span = int(positions.max()) + 1
        keys_pos = torch.arange(span, device=positions.device)
        masks = {}
        cpu = positions.device.type == "cpu"

        def attend(layer, q, k, v, window):
            if self.native is not None:
                out = cached_attention(self.native, q, k, v, self.layer_k[layer], self.layer_v[layer], positions, window)
                if out is not None:
                    return out
            if window not in masks:  # [B, 1, 1, span], the same for every layer
                mask = allowed(positions[:, None], keys_pos[None, :], window)[:, None, None]
                if cpu:  # kernels.decode_attention takes it additive
                    mask = torch.zeros(mask.shape, dtype=self.dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
                masks[window] = mask
            keys, values = self.write_step(layer, rows, positions, k[:, 0].to(self.dtype), v[:, 0].to(self.dtype), span)
            if cpu:
                return decode_attention(q.to(self.dtype), keys, values, masks[window]).to(q.dtype)
            out = sdpa(q.transpose(1, 2).to(self.dtype), keys, values, masks[window])
            return out.transpose(1, 2).to(q.dtype)

        return attend
