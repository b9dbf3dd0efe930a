"""A forward pass over preference pairs in which each pair's two halves share its prompt's work.

The chosen and the rejected example of a pair begin with the same tokens (the conversation up to
the answer). A pair goes in as the chosen example followed by the rejected one's tokens after that
shared prefix only, their positions continuing from the prefix; attention lets the rejected tail
see the prefix and itself, never the chosen answer. Every hidden state is what the example alone
would give, and the prefix is computed once. The rejected answer's first token is predicted from
the prefix's last hidden state, which both halves read.

Rows hold whole pairs (dpo.py packs them); tokens go in unpadded as one [1, N] sequence and
attention sees them laid out in rows, as attention.Rows does for packed examples.
"""

import numpy as np
import torch

from .attention import Rows, allowed

# Where a token sits in its pair: the shared prefix, the chosen example after it, the rejected tail.
PREFIX, CHOSEN, REJECTED = 0, 1, 2


def shared_prefix(a, b):
    """Length of the common leading run of two id arrays."""
    n = min(len(a), len(b))
    differ = np.nonzero(a[:n] != b[:n])[0]
    return int(differ[0]) if len(differ) else n


class SharedPrefixRows(Rows):
    """Rows of pairs: a query sees the keys of its own pair at positions up to its own, in the
    prefix or in its own branch. Padding is a group of its own, each position seeing itself and
    the padding before it (so no query row is all masked)."""

    def __init__(self, group, branch, pos, index):
        super().__init__(group, index)
        self.branch, self.pos = branch, pos

    def mask(self, window):
        if window not in self._mask:
            same = self.seq_ids[:, :, None] == self.seq_ids[:, None, :]
            reach = (self.branch[:, None, :] == PREFIX) | (self.branch[:, None, :] == self.branch[:, :, None])
            order = allowed(self.pos[:, :, None], self.pos[:, None, :], window)
            self._mask[window] = (same & reach & order)[:, None]
        return self._mask[window]


class PairBatch:
    """The same fields as data.Batch (`input_ids`, `position_ids`, `attend`, `positions`,
    `labels`, `tokens`, `padded_tokens`) for rows of pair indices, and `pairs`, the batch's pair
    indices in increasing order; `owners` tells each label's answer: 2k for the chosen answer of
    `pairs[k]`, 2k + 1 for its rejected one."""

    def __init__(self, arrays, rows, seq_len, device):
        self.pairs = np.array(sorted(pair for row in rows for pair in row), dtype=np.int64)
        slot = {int(pair): k for k, pair in enumerate(self.pairs)}
        ids, pos, index, positions, labels, owners = [], [], [], [], [], []
        layouts, n = [], 0
        for row in rows:
            layout, col = [], 0
            for pair in row:
                chosen, chosen_mask = arrays.example(2 * pair, seq_len)
                rejected, rejected_mask = arrays.example(2 * pair + 1, seq_len)
                shared = shared_prefix(chosen, rejected)
                tail = rejected[shared:]
                start, tail_start = n, n + len(chosen)
                ids += [chosen, tail]
                pos += [np.arange(len(chosen)), np.arange(shared, len(rejected))]
                trained = np.nonzero(chosen_mask[1:])[0]
                positions.append(start + trained)
                labels.append(chosen[1:][trained])
                owners.append(np.full(len(trained), 2 * slot[pair], dtype=np.int64))
                trained = np.nonzero(rejected_mask[1:])[0]
                # The hidden state before token t + 1: in the prefix (the chosen copy) or in the tail.
                positions.append(np.where(trained < shared, start + trained, tail_start + trained - shared))
                labels.append(rejected[1:][trained])
                owners.append(np.full(len(trained), 2 * slot[pair] + 1, dtype=np.int64))
                layout.append((len(chosen), shared, len(tail), col))
                col += len(chosen) + len(tail)
                n += len(chosen) + len(tail)
            layouts.append((layout, col))
        width = max(used for _, used in layouts)
        group = np.full((len(rows), width), -1, dtype=np.int64)
        branch = np.full((len(rows), width), PREFIX, dtype=np.int64)
        grid_pos = np.tile(np.arange(width), (len(rows), 1))
        for r, (layout, _) in enumerate(layouts):
            for k, (chosen_len, shared, tail_len, col) in enumerate(layout):
                end = col + chosen_len + tail_len
                group[r, col:end] = k
                branch[r, col + shared:col + chosen_len] = CHOSEN
                branch[r, col + chosen_len:end] = REJECTED
                grid_pos[r, col:col + chosen_len] = np.arange(chosen_len)
                grid_pos[r, col + chosen_len:end] = np.arange(shared, shared + tail_len)
                index.append(r * width + np.arange(col, end))
        self.tokens = n
        self.padded_tokens = len(rows) * width
        self.input_ids = torch.from_numpy(np.concatenate(ids).astype(np.int64)[None]).to(device)
        self.position_ids = torch.from_numpy(np.concatenate(pos).astype(np.int64)[None]).to(device)
        as_tensor = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        self.attend = SharedPrefixRows(as_tensor(group), as_tensor(branch), as_tensor(grid_pos), as_tensor(np.concatenate(index)))
        self.positions = torch.from_numpy(np.concatenate(positions).astype(np.int64)).to(device)
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64)).to(device)
        self.owners = torch.from_numpy(np.concatenate(owners)).to(device)
