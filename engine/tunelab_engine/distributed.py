"""Data-parallel training across the processes `torchrun --nproc-per-node N` starts, one per GPU
(gloo on CPU, which is how the tests run it), behind one small seam so train.py reads the same.

Each step's rows are split into `gradient_accumulation_steps * N` parts; rank r trains parts
r*k .. r*k+k-1. Every rank divides its loss by the step's trained tokens over all ranks, and the
gradients are summed across ranks before the update, so a step equals one process training all
the parts in turn: N processes with accumulation k give the curve of one with accumulation N*k.
The gradients are summed with one all-reduce per parameter after the backward passes, not by
DistributedDataParallel's hooks: LoRA's trained tensors are small, and the model's forward keeps
its own signature (the loss takes `lm_head.weight` outside it). Rank 0 alone speaks the event
protocol and writes checkpoints and the output; the optimizer state it saves is the whole of it
(every rank holds the same), so a checkpoint resumes at any N.
"""

import os

import torch
import torch.distributed as dist

from . import events, runtime


class Single:
    """One process: every collective is the identity."""

    size = 1
    rank = 0
    main = True

    def device(self, device):
        return device

    def share(self, parts, per_rank):
        return parts

    def total(self, *values):
        return values

    def any(self, flag):
        return flag

    def sync(self, params):
        pass

    def same_start(self, params):
        pass

    def barrier(self):
        pass

    def close(self):
        pass


class Group(Single):
    """The processes of one job under torchrun (RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in the environment)."""

    def __init__(self, device):
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.main = self.rank == 0
        if not self.main:
            events.silence()

    def device(self, device):
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, parts, per_rank):
        return parts[self.rank * per_rank:(self.rank + 1) * per_rank]

    def total(self, *values):
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed)
        return tuple(summed.tolist())

    def any(self, flag):
        return self.total(1.0 if flag else 0.0)[0] > 0

    def sync(self, params):
        for p in params:
            # A rank whose share of a small step was empty still takes part in the sum.
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)

    def same_start(self, params):
        # The seed makes them equal already; rank 0's copy settles any difference a device could make.
        for p in params:
            dist.broadcast(p.data, 0)

    def barrier(self):
        dist.barrier()

    def close(self):
        dist.destroy_process_group()


def start(device, threads):
    """The group this process trains in: a torchrun group when WORLD_SIZE > 1, else one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Single()
    group = Group(device)
    if device.type == "cpu" and not threads:
        # The host's cores are shared by its ranks rather than each taking all of them.
        runtime.use_threads(max(1, runtime.cpu_count() // int(os.environ.get("LOCAL_WORLD_SIZE", group.size))))
    return group
