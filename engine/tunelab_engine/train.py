"""The training loop: one spec in, events out, weights and checkpoints on disk.

A step takes `batch_size` examples (in an order fixed by seed and epoch), packs them into rows of at
most `seq_len` tokens, runs them through forward/backward in `gradient_accumulation_steps` parts,
and applies one AdamW update. The loss of a step is the mean over all its trained tokens, however
the rows are split, so accumulation changes memory use, not results.
"""

import contextlib
import dataclasses
import math
import os
import signal
import time

import numpy as np
import torch

from . import checkpoint, config, data, distributed, events, kernels, lora, runtime, safetensors
from .errors import EngineError
from .loss import linear_cross_entropy
from .model import build


def lr_at(spec, step, total):
    """Learning rate of the 0-based `step`: linear warmup to the peak, then the decay to min_lr_ratio."""
    peak = spec.learning_rate
    if step < spec.warmup_steps:
        return peak * (step + 1) / spec.warmup_steps
    if spec.lr_schedule == "constant":
        return peak
    progress = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
    floor = spec.min_lr_ratio
    if spec.lr_schedule == "cosine":
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return peak * (1 - (1 - floor) * progress)


class Cancellation:
    """SIGTERM (and SIGINT) only raise a flag; the loop looks at it between steps."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        events.log(f"signal {signum}: stopping after the current step")


def make_optimizer(params, spec):
    kwargs = dict(lr=spec.learning_rate, betas=(spec.adam_beta1, spec.adam_beta2), eps=spec.adam_eps,
                  weight_decay=spec.weight_decay)
    # torch's fused AdamW (CUDA and CPU): one kernel over all tensors, where LoRA has ~400 small ones.
    return torch.optim.AdamW(params, fused=True, **kwargs)


def trained_hidden(model, batch, dtype, autocast, forward=None):
    """The hidden states from which a batch's trained tokens are predicted, [labels, hidden] in
    `dtype`. `autocast`: fp32 weights computed in bf16 (full fine-tuning); otherwise the weights
    are already held in `dtype`. `forward`: what runs the model's forward when it is not the model
    itself (DistributedDataParallel's wrapper)."""
    device = batch.input_ids.device
    context = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        hidden = (forward or model)(batch.input_ids, batch.position_ids, batch.attend)
    return hidden.reshape(-1, hidden.shape[-1])[batch.positions].to(dtype)


def scored(model, batch, dtype, autocast, forward=None):
    """(loss sum, correct count) over a batch's trained tokens; the arguments as in trained_hidden."""
    return linear_cross_entropy(trained_hidden(model, batch, dtype, autocast, forward), model.lm_head.weight, batch.labels)


@dataclasses.dataclass
class TokenTotals:
    """A step's (or an evaluation's) sums over trained tokens, added up micro-batch by micro-batch
    and then over the group's processes."""
    loss: float = 0.0
    correct: int = 0
    tokens: int = 0

    def __add__(self, other):
        return type(self)(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def across(self, group, *extra):
        """(these totals summed over the group's processes, `extra` values summed with them): one all-reduce."""
        n = len(dataclasses.fields(self))
        values = group.total(*dataclasses.astuple(self), *extra)
        return type(self)(*values[:n]), values[n:]

    def metrics(self):
        nan = float("nan")
        return dict(loss=self.loss / self.tokens if self.tokens else nan,
                    mean_token_accuracy=self.correct / self.tokens if self.tokens else nan)


class Trainer:
    Totals = TokenTotals  # what a step and an evaluation add up and report (dpo.py: per pair)

    def __init__(self, spec):
        self.spec = spec
        self.cancel = Cancellation()
        runtime.use_threads(spec.threads)
        self.device = runtime.device(spec.device, "invalid_spec", "spec field 'device'")
        # Under torchrun: this process's rank among the job's processes (distributed.py).
        self.group = distributed.start(self.device, spec.threads, spec.training)
        self.device = self.group.device(self.device)
        self.dtype = runtime.training_dtype(spec.dtype, self.device)
        torch.manual_seed(spec.seed)
        self.config = config.load(spec.model)
        self.train_data = data.Arrays(spec.train_data, self.config.vocab_size)
        self.valid_data = data.Arrays(spec.valid_data, self.config.vocab_size) if spec.valid_data else None
        self.state = checkpoint.load_state(spec.resume_from, spec) if spec.resume_from else None
        self.model, params = self._build_model()
        # On CPU the hand-written kernels beat torch's own ops (bench/engine/README.md, "Kernels").
        self.kernels = self.device.type == "cpu"
        if self.kernels:
            kernels.apply(self.model)
        self.model.gradient_checkpointing = spec.gradient_checkpointing
        # Under torchrun: DistributedDataParallel around the model (LoRA), or the model sharded (full).
        self.forward, self.params = self.group.wrap(self.model, params)
        self.optimizer = make_optimizer(self.params, spec)
        # Full fine-tuning keeps fp32 master weights and computes in bf16 under autocast; LoRA holds
        # the frozen weights in bf16 already, so nothing is recast per step.
        self.autocast = spec.training == "full" and self.dtype == torch.bfloat16
        self.steps_per_epoch = math.ceil(self.units(self.train_data) / spec.batch_size)
        self.lengths = {id(arrays): self.unit_lengths(arrays) for arrays in (self.train_data, self.valid_data) if arrays is not None}
        self.total_steps = spec.n_epochs * self.steps_per_epoch
        self.step = 0
        self.trained_tokens = 0
        if self.state:
            self.group.load_optimizer(self.model, self.optimizer, self.state["optimizer"])
            self.step = self.state["step"]
            self.trained_tokens = self.state["trained_tokens"]
            torch.set_rng_state(self.state["rng"])
            if self.state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self.state["cuda_rng"])
        self.eval_cursor = 0
        self.last_checkpoint = None
        self.real_tokens = 0
        self.padded_tokens = 0

    def _build_model(self):
        spec = self.spec
        device = self.group.home(self.device)
        if spec.training == "lora":
            model = build(self.config, safetensors.load_model(spec.model), self.dtype, device)
            adapter = spec.resume_from or spec.init_adapter
            if adapter:
                lora.load_adapter(model, adapter, spec.lora.dropout)
                params = [p for n, p in model.named_parameters() if ".lora_" in n]
            else:
                params = lora.apply(model, spec.lora.rank, spec.lora.alpha, spec.lora.dropout,
                                    spec.lora.target_modules, spec.seed)
            lora.fuse(model)
        else:
            source = spec.resume_from or spec.model
            model = build(self.config, safetensors.load_model(source), torch.float32, device)
            params = list(model.parameters())
        return model, params

    def units(self, arrays):
        """What a batch counts and an epoch goes through: examples here, pairs for DPO (dpo.py)."""
        return arrays.n_examples

    def unit_lengths(self, arrays):
        """The tokens each unit puts through the model, which packing fills rows with."""
        return np.minimum(arrays.lengths, self.spec.seq_len)

    def rows(self, arrays, units):
        """Rows of unit indices, packed first-fit-decreasing."""
        return data.pack(units, self.lengths[id(arrays)], self.spec.seq_len)

    def step_rows(self, epoch, index):
        order = data.epoch_order(self.units(self.train_data), self.spec.seed, epoch)
        return self.rows(self.train_data, order[index * self.spec.batch_size:(index + 1) * self.spec.batch_size])

    def batches(self, arrays, parts):
        batches = [data.Batch(arrays, part, self.spec.seq_len, self.device) for part in parts]
        if self.kernels:
            for batch in batches:
                batch.attend = kernels.attention(batch.attend)
        return batches

    def score(self, arrays, batch, training=False):
        """(the batch's loss summed over what the step's loss averages, its Totals)."""
        loss, correct = scored(self.model, batch, self.dtype, self.autocast, self.forward if training else None)
        return loss, TokenTotals(loss.item(), int(correct), len(batch.labels))

    def loss_units(self, rows, batches):
        """What the step's loss averages over, all processes together: its trained tokens. `rows`:
        the step's; `batches`: this process's counted micro-batches."""
        return self.group.total(sum(len(b.labels) for b in batches))[0]

    def backward(self, batches, counted, count):
        """This process's gradients for its micro-batches (the first `counted` of them; the others
        stand in so that every process runs as many passes), each loss divided by the step's
        `count`, and the Totals of the counted ones."""
        totals = self.Totals()
        for i, batch in enumerate(batches):
            with self.group.accumulating(self.forward, last=i == len(batches) - 1):
                loss, measured = self.score(self.train_data, batch, training=True)
                if count:
                    # The group's wrappers average gradients over its processes; the sum is wanted.
                    (loss * (self.group.size / count if i < counted else 0.0)).backward()
            if i < counted:
                totals += measured
        return totals

    def my_parts(self, rows):
        """This process's micro-batches of a step's rows, and how many of them count (the rest are stand-ins)."""
        accumulation = self.spec.gradient_accumulation_steps
        return self.group.share(data.split(rows, accumulation * self.group.size), accumulation)

    def train_step(self, rows):
        self.model.train()
        parts, counted = self.my_parts(rows)
        batches = self.batches(self.train_data, parts)
        count = self.loss_units(rows, batches[:counted])
        totals = self.backward(batches, counted, count)
        if self.spec.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.max_grad_norm)
        lr = lr_at(self.spec, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if count:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals, (tokens, padded) = totals.across(self.group, sum(b.tokens for b in batches[:counted]),
                                                 sum(b.padded_tokens for b in batches[:counted]))
        tokens = int(tokens)
        self.real_tokens += tokens
        self.padded_tokens += int(padded)
        return totals.metrics(), lr, tokens

    @torch.no_grad()
    def evaluate(self, indices):
        """Metrics over the validation units `indices`, in the micro-batches one process makes of
        them; under torchrun each process scores its share of those and the sums are added up.
        None when cancelled."""
        self.model.eval()
        size = self.spec.batch_size
        parts = [part for start in range(0, len(indices), size)
                 for part in data.split(self.rows(self.valid_data, indices[start:start + size]), self.spec.gradient_accumulation_steps)]
        mine, counted = self.group.share(parts, -(-len(parts) // self.group.size))
        totals = self.Totals()
        for i, part in enumerate(mine):
            # Together: a process that stopped alone would leave the others waiting in a collective.
            if self.group.any(self.cancel.requested):
                return None
            (batch,) = self.batches(self.valid_data, [part])
            _, measured = self.score(self.valid_data, batch)
            if i < counted:
                totals += measured
        return totals.across(self.group)[0].metrics()

    def periodic_eval(self, epoch, final):
        if self.valid_data is None:
            return
        n = self.units(self.valid_data)
        size = min(n, self.spec.batch_size * self.spec.eval_batches)
        # A window of the validation set that moves on with each evaluation, so evaluations over
        # a run see all of it while each stays as cheap as a few steps.
        window = [(self.eval_cursor + i) % n for i in range(size)]
        self.eval_cursor = (self.eval_cursor + size) % n
        result = self.evaluate(window)
        if result is None:
            return
        fields = dict(step=self.step, total_steps=self.total_steps, epoch=epoch,
                      **{f"valid_{k}": v for k, v in result.items()})
        if final:
            full = self.evaluate(list(range(n))) if size < n else result
            if full is None:
                return
            fields.update({f"full_valid_{k}": v for k, v in full.items()})
        events.emit("eval", **fields)

    def save_checkpoint(self, epoch):
        folder = os.path.join(self.spec.work_dir, "checkpoints", f"step-{self.step}")
        weights, optimizer_state = self.group.weights(self.model), self.group.optimizer_state(self.model, self.optimizer)
        if self.group.main:
            checkpoint.save(folder, self.model, self.spec, optimizer_state, self.step, self.trained_tokens, weights)
        self.group.barrier()
        events.emit("checkpoint", step=self.step, epoch=epoch, path=os.path.abspath(folder))
        self.last_checkpoint = (self.step, folder)
        return folder

    def packing_efficiency(self, epoch):
        lengths = self.lengths[id(self.train_data)]
        real = padded = 0
        for index in range(self.steps_per_epoch):
            for part in data.split(self.step_rows(epoch, index), self.spec.gradient_accumulation_steps):
                used = [int(lengths[row].sum()) for row in part]
                real += sum(used)
                padded += max(used) * len(part)
        return real / padded

    def run(self):
        spec = self.spec
        truncated = int((self.train_data.lengths > spec.seq_len).sum())
        if truncated:
            events.log(f"{truncated} training examples are longer than seq_len {spec.seq_len}: their tail is not trained")
        events.emit("started", total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                    n_epochs=spec.n_epochs, resumed_from_step=self.step,
                    tokens_per_epoch=int(self.train_data.n_tokens), examples=int(self.train_data.n_examples),
                    truncated_examples=truncated, packing_efficiency=round(self.packing_efficiency(0), 4),
                    trainable_parameters=sum(p.numel() for p in self.params),
                    parameters=sum(p.numel() for p in self.model.parameters()),
                    training=spec.training, method=spec.method, device=str(self.device), dtype=str(self.dtype).replace("torch.", ""),
                    threads=torch.get_num_threads())
        started = time.perf_counter()
        while self.step < self.total_steps:
            epoch, index = divmod(self.step, self.steps_per_epoch)
            if self.group.any(self.cancel.requested):
                return self.cancelled(epoch + 1)
            t0 = time.perf_counter()
            metrics, lr, tokens = self.train_step(self.step_rows(epoch, index))
            self.step += 1
            self.trained_tokens += tokens
            seconds = time.perf_counter() - t0
            events.emit("step", step=self.step, total_steps=self.total_steps, epoch=epoch + 1,
                        **{f"train_{k}": v for k, v in metrics.items()}, lr=lr, tokens=tokens,
                        trained_tokens=self.trained_tokens, tokens_per_second=round(tokens / seconds, 1),
                        elapsed_s=round(time.perf_counter() - started, 3))
            epoch_end = self.step % self.steps_per_epoch == 0
            final = self.step == self.total_steps
            if epoch_end or (spec.eval_every and self.step % spec.eval_every == 0):
                self.periodic_eval(epoch + 1, final)
            if epoch_end:
                self.save_checkpoint(epoch + 1)
        if self.group.any(self.cancel.requested) and self.step < self.total_steps:
            return self.cancelled(self.step // self.steps_per_epoch + 1)
        weights = self.group.weights(self.model)
        if self.group.main:
            os.makedirs(spec.output_dir, exist_ok=True)
            checkpoint.save_weights(self.model, spec, spec.output_dir, weights)
        self.group.barrier()
        events.emit("done", step=self.step, trained_tokens=self.trained_tokens, path=os.path.abspath(spec.output_dir),
                    packing_efficiency=round(self.real_tokens / self.padded_tokens, 4) if self.padded_tokens else None,
                    elapsed_s=round(time.perf_counter() - started, 3))
        return 0

    def cancelled(self, epoch):
        if self.last_checkpoint and self.last_checkpoint[0] == self.step:
            folder = self.last_checkpoint[1]
        else:
            folder = self.save_checkpoint(epoch)
        events.emit("cancelled", step=self.step, path=os.path.abspath(folder))
        return 0


def train(spec):
    if spec.method == "dpo":
        from .dpo import PreferenceTrainer  # dpo.py builds on Trainer
        trainer = PreferenceTrainer(spec)
    else:
        trainer = Trainer(spec)
    try:
        return trainer.run()
    finally:
        trainer.group.close()
