"""Direct preference optimization (DPO) with the sigmoid loss, over chosen/rejected pairs.

The training arrays hold each pair as two consecutive examples: 2i is the prompt with the chosen
answer, 2i + 1 the same prompt with the rejected one, the answers' tokens marked as trained. A pair
is scored by the log-probability of each answer (summed over its trained tokens) under the model
being trained and under the reference, the model as it stood before the first step:

    loss = -log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))

averaged over the step's pairs (Rafailov et al. 2023; TRL's `loss_type="sigmoid"`). The reference
log-probabilities are computed once, before training, and stored beside the arrays
(`reference_logps.npy`), so no second model is kept in memory and a resumed run reads them back.
For a LoRA run from the base model that reference is the base model (a new adapter starts at
zero, that is, switched off); for a run that continues an adapter or a fine-tuned model, it is
that starting point, as DPO after supervised fine-tuning wants.

A step packs whole pairs into rows, so both halves of a pair land in the same forward pass, their
shared prompt computed once (pair_batch.py), and gradient accumulation splits between pairs,
never inside one.
"""

import contextlib
import dataclasses
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data, events
from .errors import EngineError
from .pair_batch import PairBatch, shared_prefix
from .train import Trainer

REFERENCE = "reference_logps.npy"


def sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, beta):
    """(per-pair losses, chosen rewards, rejected rewards) from per-pair summed log-probabilities."""
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def pair_logps(model, batch, pairs, autocast, forward=None):
    """Summed log-probabilities of the chosen and of the rejected answer of each of `pairs` (pair
    indices, all of them in `batch`), and (correct, count) of greedy predictions over the chosen
    answers' tokens. `forward`: as in train.scored."""
    device = batch.input_ids.device
    context = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        hidden = (forward or model)(batch.input_ids, batch.position_ids, batch.attend)
        hidden = hidden.reshape(-1, hidden.shape[-1])[batch.positions]
        logits = model.logits(hidden)
    logps = logits.float().log_softmax(-1)
    token = logps.gather(1, batch.labels[:, None]).squeeze(1)
    # Where each example's sum goes: chosen halves at even slots, rejected at odd.
    pairs = torch.as_tensor(pairs, dtype=torch.int64, device=device)
    slot = torch.full((2 * int(pairs.max()) + 2,), -1, dtype=torch.int64, device=device)
    slot[2 * pairs] = 2 * torch.arange(len(pairs), device=device)
    slot[2 * pairs + 1] = 2 * torch.arange(len(pairs), device=device) + 1
    where = slot[batch.owners]
    sums = torch.zeros(2 * len(pairs), dtype=torch.float32, device=device).index_add(0, where, token)
    chosen_token = batch.owners % 2 == 0
    correct = ((logits.argmax(-1) == batch.labels) & chosen_token).sum().item()
    return sums[0::2], sums[1::2], correct, int(chosen_token.sum())


@dataclasses.dataclass
class Totals:
    """A step's (or an evaluation's) pair metrics, summed as its parts go by."""
    pairs: int = 0
    loss: float = 0.0
    won: int = 0
    chosen_reward: float = 0.0
    rejected_reward: float = 0.0
    correct: int = 0
    tokens: int = 0

    def add(self, losses, chosen_rewards, rejected_rewards, correct, tokens):
        self.pairs += len(losses)
        self.loss += losses.sum().item()
        self.won += int((chosen_rewards > rejected_rewards).sum())
        self.chosen_reward += chosen_rewards.sum().item()
        self.rejected_reward += rejected_rewards.sum().item()
        self.correct += correct
        self.tokens += tokens

    def across(self, group):
        """The totals of all the group's processes (distributed.py)."""
        return Totals(*group.total(*dataclasses.astuple(self)))

    def metrics(self):
        nan = float("nan")
        n = self.pairs
        chosen = self.chosen_reward / n if n else nan
        rejected = self.rejected_reward / n if n else nan
        return dict(loss=self.loss / n if n else nan,
                    mean_token_accuracy=self.correct / self.tokens if self.tokens else nan,
                    reward_accuracy=self.won / n if n else nan,
                    chosen_reward=chosen, rejected_reward=rejected, reward_margin=chosen - rejected)


def pair_count(arrays):
    if arrays.n_examples % 2:
        raise EngineError("invalid_arrays", f"{arrays.folder}: DPO arrays hold pairs (chosen, rejected), but there are {arrays.n_examples} examples, an odd number")
    return arrays.n_examples // 2


class PreferenceTrainer(Trainer):
    """The training loop of train.py with DPO's unit (a pair), step, evaluation and metrics."""

    def __init__(self, spec):
        super().__init__(spec)
        self.beta = spec.dpo.beta
        self.pair_lengths = {id(self.train_data): self._pair_lengths(self.train_data)}
        self.reference = {id(self.train_data): self._reference(self.train_data)}
        if self.valid_data is not None:
            self.pair_lengths[id(self.valid_data)] = self._pair_lengths(self.valid_data)
            self.reference[id(self.valid_data)] = self._reference(self.valid_data)

    def units(self, arrays):
        return pair_count(arrays)

    def _pair_lengths(self, arrays):
        """Tokens each pair puts through the model: both halves, their shared prefix once."""
        def length(pair):
            chosen, rejected = (arrays.example(e, self.spec.seq_len)[0] for e in (2 * pair, 2 * pair + 1))
            return len(chosen) + len(rejected) - shared_prefix(chosen, rejected)
        return np.array([length(p) for p in range(self.units(arrays))], dtype=np.int64)

    def pair_rows(self, arrays, pairs):
        """Rows of pair indices, packed first-fit-decreasing as examples are."""
        return data.pack(pairs, self.pair_lengths[id(arrays)], self.spec.seq_len)

    def step_rows(self, epoch, index):
        order = data.epoch_order(self.units(self.train_data), self.spec.seed, epoch)
        return self.pair_rows(self.train_data, order[index * self.spec.batch_size:(index + 1) * self.spec.batch_size])

    def batches(self, arrays, parts):
        return [PairBatch(arrays, part, self.spec.seq_len, self.device) for part in parts]

    def packing_efficiency(self, epoch):
        lengths = self.pair_lengths[id(self.train_data)]
        real = padded = 0
        for index in range(self.steps_per_epoch):
            for part in data.split(self.step_rows(epoch, index), self.spec.gradient_accumulation_steps):
                used = [int(lengths[row].sum()) for row in part]
                real += sum(used)
                padded += max(used) * len(part)
        return real / padded

    def _parts(self, arrays, parts, batches=None):
        """Micro-batches, each with the pairs it holds."""
        pairs = [sorted(p for row in part for p in row) for part in parts]
        return zip(pairs, batches if batches is not None else self.batches(arrays, parts))

    def _split(self, rows):
        return data.split(rows, self.spec.gradient_accumulation_steps)

    def _score(self, arrays, pairs, batch, totals, training=False):
        chosen, rejected, correct, tokens = pair_logps(self.model, batch, pairs, self.autocast, self.forward if training else None)
        reference = torch.from_numpy(self.reference[id(arrays)][pairs]).to(chosen.device)
        losses, chosen_rewards, rejected_rewards = sigmoid_loss(chosen, rejected, reference[:, 0], reference[:, 1], self.beta)
        totals.add(losses.detach(), chosen_rewards, rejected_rewards, correct, tokens)
        return losses

    def backward(self, parts, batches, counted):
        totals = Totals()
        (n,) = self.group.total(sum(len(row) for part in parts[:counted] for row in part))
        for i, (pairs, batch) in enumerate(self._parts(self.train_data, parts, batches)):
            with self.group.accumulating(self.forward, last=i == len(batches) - 1):
                losses = self._score(self.train_data, pairs, batch, totals if i < counted else Totals(), training=True)
                if n:
                    # As in Trainer.backward: the sum over the group's processes is wanted.
                    (losses.sum() * (self.group.size / n if i < counted else 0.0)).backward()
        return totals.across(self.group).metrics(), n > 0

    @torch.no_grad()
    def evaluate(self, indices):
        self.model.eval()
        totals = Totals()
        for start in range(0, len(indices), self.spec.batch_size):
            if self.cancel.requested:
                return None
            rows = self.pair_rows(self.valid_data, indices[start:start + self.spec.batch_size])
            for pairs, batch in self._parts(self.valid_data, self._split(rows)):
                self._score(self.valid_data, pairs, batch, totals)
        return totals.metrics()

    @torch.no_grad()
    def _reference(self, arrays):
        """[pairs, 2] summed log-probabilities of the starting model, read from beside the arrays
        or computed and written there (atomically) on a fresh start."""
        n = self.units(arrays)
        path = os.path.join(arrays.folder, REFERENCE)
        if os.path.exists(path):
            stored = np.load(path, allow_pickle=False)
            if stored.shape != (n, 2) or stored.dtype != np.float32:
                raise EngineError("invalid_arrays", f"{path}: expected a [{n}, 2] float32 array, found {list(stored.shape)} {stored.dtype}")
            return stored
        if self.state is not None:
            raise EngineError("invalid_arrays", f"{path}: not found; a resumed DPO run needs the reference log-probabilities of its first start")
        started = time.perf_counter()
        self.model.eval()
        out = np.zeros((n, 2), dtype=np.float32)
        for start in range(0, n, self.spec.batch_size):
            rows = self.pair_rows(arrays, list(range(start, min(n, start + self.spec.batch_size))))
            # Split across the group's processes as a training step is; each pair is scored by one.
            parts, counted = self.my_parts(rows)
            for i, (pairs, batch) in enumerate(self._parts(arrays, parts)):
                chosen, rejected, _, _ = pair_logps(self.model, batch, pairs, self.autocast)
                if i < counted:
                    out[pairs, 0] = chosen.cpu().numpy()
                    out[pairs, 1] = rejected.cpu().numpy()
        out = self.group.total_array(out)
        if self.group.main:
            tmp = path + ".tmp.npy"
            np.save(tmp, out)
            os.replace(tmp, path)
        self.group.barrier()
        events.log(f"reference log-probabilities of {n} pairs in {arrays.folder}: {time.perf_counter() - started:.3f} s")
        return out
