"""Training arrays (memory-mapped) and packing.

An example is `input_ids[offsets[i]:offsets[i+1]]`; token t is trained when `loss_mask[t]` is 1,
that is, the model is scored on predicting it from the tokens before it in the same example.
Packing puts several examples in one row; attention stays inside each example (attention.py) and
`position_ids` restart per example, so rows carry no padding except at the end of a micro-batch.
"""

import os

import numpy as np
import torch

from .errors import EngineError
from .attention import Examples, Rows

FILES = {"input_ids": np.int32, "loss_mask": np.uint8, "offsets": np.int64}


class Arrays:
    def __init__(self, folder, vocab_size):
        self.folder = folder
        loaded = {}
        for name, dtype in FILES.items():
            path = os.path.join(folder, name + ".npy")
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise EngineError("invalid_arrays", f"{path}: not found") from None
            except (ValueError, OSError) as e:
                raise EngineError("invalid_arrays", f"{path}: not a .npy array ({e})") from None
            if array.dtype != np.dtype(dtype) or array.ndim != 1:
                raise EngineError("invalid_arrays", f"{path}: expected a 1-D {np.dtype(dtype).name} array, found {array.ndim}-D {array.dtype.name}")
            loaded[name] = array
        self.input_ids, self.loss_mask, self.offsets = loaded["input_ids"], loaded["loss_mask"], loaded["offsets"]
        n = len(self.input_ids)
        if len(self.loss_mask) != n:
            raise EngineError("invalid_arrays", f"{folder}: loss_mask.npy has {len(self.loss_mask)} entries, input_ids.npy {n}")
        offsets = np.asarray(self.offsets)
        if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != n:
            raise EngineError("invalid_arrays", f"{folder}/offsets.npy: must start at 0, end at len(input_ids) = {n} and hold at least one example")
        lengths = np.diff(offsets)
        if (lengths < 1).any():
            raise EngineError("invalid_arrays", f"{folder}/offsets.npy: example {int(np.argmax(lengths < 1))} is empty or offsets decrease")
        if n and (int(self.input_ids.min()) < 0 or int(self.input_ids.max()) >= vocab_size):
            raise EngineError("invalid_arrays", f"{folder}/input_ids.npy: ids must lie in 0..{vocab_size - 1} (the model's vocab_size)")
        self.lengths = lengths
        self.n_examples = len(lengths)
        self.n_tokens = n

    def example(self, i, max_len):
        begin = int(self.offsets[i])
        end = min(int(self.offsets[i + 1]), begin + max_len)
        return np.asarray(self.input_ids[begin:end]), np.asarray(self.loss_mask[begin:end])


def epoch_order(n_examples, seed, epoch):
    """Shuffled example order of one epoch, a pure function of (seed, epoch) so a resumed run
    reproduces it without saved state."""
    return np.random.default_rng([seed, epoch]).permutation(n_examples)


def pack(indices, lengths, seq_len):
    """First-fit decreasing: rows of at most seq_len tokens, each a list of example indices."""
    rows, room = [], []
    for i in sorted(indices, key=lambda i: (-min(lengths[i], seq_len), i)):
        n = min(int(lengths[i]), seq_len)
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(seq_len - n)
    return rows


# Pass sizes are rounded up to multiples of this: oneDNN builds a kernel for each new matmul shape
# (2-10 ms each, 0.3-0.5 s of a SmolLM2-size CPU step), so shapes that repeat across steps pay once.
SHAPE_MULTIPLE = 64


# Attention runs one example at a time when a pass holds at most this many (attention.Examples);
# more examples run as padded rows (attention.Rows), fewer and larger attention calls.
PER_EXAMPLE_ATTENTION = 16


def rounded(n):
    """n rounded up to a multiple of SHAPE_MULTIPLE, unless that would add more than an eighth
    (small batches)."""
    up = -(-n // SHAPE_MULTIPLE) * SHAPE_MULTIPLE
    return up if (up - n) * 8 <= n else n


class Batch:
    """One forward pass over packed rows.

    Tokens go in unpadded as one [1, N] sequence (`attend` tells attention where each example
    is); when every row has the same length they go in as [rows, width].
    `positions` index the N hidden states whose next token is trained; `labels` are those tokens.

    N and the row width are rounded up (see SHAPE_MULTIPLE): the extra tokens form one untrained
    filler example of their own, which attention keeps apart like any other example.
    """

    def __init__(self, arrays, rows, seq_len, device):
        pieces = [[arrays.example(i, seq_len) for i in row] for row in rows]
        real = sum(len(tokens) for row in pieces for tokens, _ in row)
        filler = rounded(real) - real
        if filler:
            used = [sum(len(tokens) for tokens, _ in row) for row in pieces]
            width = max(used)
            r = int(np.argmin(used))
            piece = (np.zeros(filler, dtype=np.int32), np.zeros(filler, dtype=np.uint8))
            if width - used[r] >= filler:
                pieces[r] = pieces[r] + [piece]
            else:
                pieces.append([piece])
        width = max(sum(len(tokens) for tokens, _ in row) for row in pieces)
        dense = all(sum(len(tokens) for tokens, _ in row) == width for row in pieces)
        width = width if dense else rounded(width)
        ids, pos, index, positions, labels = [], [], [], [], []
        seq = np.full((len(pieces), width), -1, dtype=np.int64)
        n = 0
        for r, row in enumerate(pieces):
            col = 0
            for k, (tokens, mask) in enumerate(row):
                count = len(tokens)
                ids.append(tokens)
                pos.append(np.arange(count))
                index.append(r * width + col + np.arange(count))
                seq[r, col:col + count] = k
                trained = np.nonzero(mask[1:])[0]
                positions.append(n + trained)
                labels.append(tokens[1:][trained])
                col += count
                n += count
        self.tokens = real
        self.padded_tokens = len(pieces) * width
        dense = n == len(pieces) * width
        shape = (len(pieces), width) if dense else (1, n)
        self.input_ids = torch.from_numpy(np.concatenate(ids).astype(np.int64).reshape(shape)).to(device)
        self.position_ids = torch.from_numpy(np.concatenate(pos).astype(np.int64).reshape(shape)).to(device)
        lengths = [len(tokens) for row in pieces for tokens, _ in row]
        several = any(len(row) > 1 for row in pieces)
        if dense:
            # With one example a row, causal attention alone is exact, and SDPA's causal kernels
            # are its fastest.
            self.attend = Rows(torch.from_numpy(seq).to(device)) if several else None
        elif len(lengths) <= PER_EXAMPLE_ATTENTION:
            self.attend = Examples(lengths)
        else:
            self.attend = Rows(torch.from_numpy(seq).to(device), torch.from_numpy(np.concatenate(index)).to(device))
        self.positions = torch.from_numpy(np.concatenate(positions).astype(np.int64)).to(device)
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64)).to(device)


def split(rows, parts):
    """Rows of one step into at most `parts` micro-batches of near-equal row counts."""
    parts = max(1, min(parts, len(rows)))
    size, extra = divmod(len(rows), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (1 if p < extra else 0)
        out.append(rows[start:end])
        start = end
    return out
