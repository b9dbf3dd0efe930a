"""How attention reaches its keys: the `attend` argument of `model.Transformer.forward`.

An attend is called once per layer as `attend(layer, q, k, v, window)`, with q [B, T, heads, D] and
k, v [B, T, kv_heads, D] after rope (`window`: the layer's sliding window or None), and returns the
attention output [B, T, heads, D]. `causal` (the default) is each row one sequence; `Examples` and
`Rows` keep packed training examples apart; `kv_cache.py` writes keys and values to the serving
cache and attends to it. All of them reach torch's `scaled_dot_product_attention` through `sdpa`.
"""

import torch
import torch.nn.functional as F


def sdpa(q, k, v, mask=None):
    """q [B, H, T, D], k and v [B, Hkv, S, D] (each kv head serving H / Hkv query heads, in
    transformers' repeat_kv order); mask: bool, broadcastable to [B, H, T, S], True where a query
    may attend; None: causal with T == S."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                          enable_gqa=q.shape[1] != k.shape[1])


def allowed(query_pos, key_pos, window):
    """Which keys each query may see: earlier or equal positions, within `window` (None: all)."""
    mask = key_pos <= query_pos
    if window is not None:
        mask = mask & (query_pos - key_pos < window)
    return mask


def causal_mask(t, window, device):
    """The [T, T] mask of one sequence, or None when plain causal attention is the same (lets
    SDPA use its causal kernels)."""
    if window is None or t <= window:
        return None
    pos = torch.arange(t, device=device)
    return allowed(pos[:, None], pos[None, :], window)


def _heads_first(*tensors):
    return [z.transpose(1, 2) for z in tensors]


def causal(layer, q, k, v, window):
    """Each row is one sequence starting at position 0."""
    return sdpa(*_heads_first(q, k, v), causal_mask(q.shape[1], window, q.device)).transpose(1, 2)


class Examples:
    """Packed examples as one unpadded [1, N] sequence, attention run one example at a time (no
    padding to compute or mask, no attention across examples)."""

    def __init__(self, lengths):
        self.lengths = list(lengths)

    def __call__(self, layer, q, k, v, window):
        outs = [causal(layer, qe, ke, ve, window)
                for qe, ke, ve in zip(*(z.split(self.lengths, dim=1) for z in (q, k, v)))]
        return torch.cat(outs, dim=1)


class Rows:
    """Packed examples in rows: `seq_ids` [rows, width] says which example each position holds
    (positions restart per example). With `index`, the tokens arrive as one unpadded [1, N]
    sequence and `index` [N] is where each sits in the rows (the rest is padding): only attention
    sees them laid out as rows, so the projections and the MLP never compute on padding."""

    def __init__(self, seq_ids, index=None):
        self.seq_ids, self.index = seq_ids, index
        self.rows, self.width = seq_ids.shape
        self._mask = {}

    def mask(self, window):
        if window not in self._mask:
            pos = torch.arange(self.width, device=self.seq_ids.device)
            same = self.seq_ids[:, :, None] == self.seq_ids[:, None, :]
            self._mask[window] = (allowed(pos[:, None], pos[None, :], window) & same)[:, None]
        return self._mask[window]

    def _to_rows(self, z):
        rows = z.new_zeros((self.rows * self.width,) + tuple(z.shape[2:]))
        return rows.index_copy(0, self.index, z[0]).view(self.rows, self.width, *z.shape[2:])

    def __call__(self, layer, q, k, v, window):
        if self.index is not None:
            q, k, v = self._to_rows(q), self._to_rows(k), self._to_rows(v)
        out = sdpa(*_heads_first(q, k, v), self.mask(window)).transpose(1, 2)
        if self.index is None:
            return out
        return out.reshape(self.rows * self.width, *out.shape[2:]).index_select(0, self.index)[None]
