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

import dataclasses
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import events
from .errors import EngineError
from .loss import token_log_probs
from .pair_batch import PairBatch, shared_prefix
from .train import TokenTotals, Trainer, trained_hidden

REFERENCE = "reference_logps.npy"


def sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, beta):
    """(per-pair losses, chosen rewards, rejected rewards) from per-pair summed log-probabilities."""
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def pair_logps(model, batch, dtype, autocast, forward=None):
    """Summed log-probabilities of the chosen and of the rejected answer of each of the batch's
    pairs (in the order of `batch.pairs`), and (correct, count) of greedy predictions over the
    chosen answers' tokens; the other arguments as in train.trained_hidden."""
    logps, correct = token_log_probs(trained_hidden(model, batch, dtype, autocast, forward), model.lm_head.weight, batch.labels)
    # Chosen answers' sums at even slots, rejected ones' at odd (PairBatch.owners).
    sums = torch.zeros(2 * len(batch.pairs), dtype=torch.float32, device=logps.device).index_add(0, batch.owners, logps)
    chosen_token = batch.owners % 2 == 0
    return sums[0::2], sums[1::2], int((correct & chosen_token).sum()), int(chosen_token.sum())


@dataclasses.dataclass
class PairTotals(TokenTotals):
    """A step's (or an evaluation's) pair metrics: the loss summed per pair, the token accuracy
    over the chosen answers."""
    pairs: int = 0
    won: int = 0
    chosen_reward: float = 0.0
    rejected_reward: float = 0.0

    @classmethod
    def of(cls, losses, chosen_rewards, rejected_rewards, correct, tokens):
        return cls(loss=losses.sum().item(), correct=correct, tokens=tokens, pairs=len(losses),
                   won=int((chosen_rewards > rejected_rewards).sum()),
                   chosen_reward=chosen_rewards.sum().item(), rejected_reward=rejected_rewards.sum().item())

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
    """The training loop of train.py with DPO's unit (a pair), batches, loss and metrics."""

    Totals = PairTotals

    def __init__(self, spec):
        super().__init__(spec)
        self.beta = spec.dpo.beta
        self.reference = {id(arrays): self._reference(arrays) for arrays in (self.train_data, self.valid_data) if arrays is not None}

    def units(self, arrays):
        return pair_count(arrays)

    def unit_lengths(self, arrays):
        """Tokens each pair puts through the model: both halves, their shared prefix once."""
        def length(pair):
            chosen, rejected = (arrays.example(e, self.spec.seq_len)[0] for e in (2 * pair, 2 * pair + 1))
            return len(chosen) + len(rejected) - shared_prefix(chosen, rejected)
        return np.array([length(p) for p in range(self.units(arrays))], dtype=np.int64)

    def batches(self, arrays, parts):
        return [PairBatch(arrays, part, self.spec.seq_len, self.device) for part in parts]

    def score(self, arrays, batch, training=False):
        chosen, rejected, correct, tokens = pair_logps(self.model, batch, self.dtype, self.autocast, self.forward if training else None)
        reference = torch.from_numpy(self.reference[id(arrays)][batch.pairs]).to(chosen.device)
        losses, chosen_rewards, rejected_rewards = sigmoid_loss(chosen, rejected, reference[:, 0], reference[:, 1], self.beta)
        return losses.sum(), PairTotals.of(losses.detach(), chosen_rewards, rejected_rewards, correct, tokens)

    def loss_units(self, rows, batches):
        # The step's pairs: every process knows them, so no all-reduce is needed.
        return sum(len(row) for row in rows)

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
            rows = self.rows(arrays, list(range(start, min(n, start + self.spec.batch_size))))
            # Split across the group's processes as a training step is; each pair is scored by one.
            parts, counted = self.my_parts(rows)
            for i, batch in enumerate(self.batches(arrays, parts)):
                chosen, rejected, _, _ = pair_logps(self.model, batch, self.dtype, self.autocast)
                if i < counted:
                    out[batch.pairs, 0] = chosen.cpu().numpy()
                    out[batch.pairs, 1] = rejected.cpu().numpy()
        out = self.group.total_array(out)
        if self.group.main:
            tmp = path + ".tmp.npy"
            np.save(tmp, out)
            os.replace(tmp, path)
        self.group.barrier()
        events.log(f"reference log-probabilities of {n} pairs in {arrays.folder}: {time.perf_counter() - started:.3f} s")
        return out
