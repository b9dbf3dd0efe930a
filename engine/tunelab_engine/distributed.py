"""Data-parallel training across the processes `torchrun --nproc-per-node N` starts, one per GPU
(gloo on CPU, which is how the tests run it; nccl on GPU, the same code), behind one small seam so
train.py reads the same in one process and in N.

Each step's rows are split into `gradient_accumulation_steps * N` parts; rank r trains parts
r*k .. r*k+k-1. Every rank divides its loss by the step's trained tokens over all ranks, and the
gradients are summed across ranks before the update, so a step equals one process training all
the parts in turn: N processes with accumulation k give the curve of one with accumulation N*k.

- LoRA: torch's DistributedDataParallel. Every rank holds the whole model; the trained tensors'
  gradients are all-reduced in buckets while the backward of the last micro-batch still runs
  (`no_sync` for the ones before it).
- Full fine-tuning: FSDP2 (`fully_shard`, one unit per decoder layer and the root), so weights,
  gradients and AdamW's moments are split across the ranks and a model too big for one device
  trains on N. The model is loaded on the CPU and each layer's shard moved to the device as it is
  sharded.

Both wrappers average gradients over the ranks where the loss here is a sum over the step's
tokens: the loss is scaled by N before the backward to undo the division. Both also need every
rank to run as many forward and backward passes as the others (DDP one synchronized backward,
FSDP a gather per layer per pass), so a rank with fewer parts than rank 0 in a small step runs
stand-ins, copies of the first part whose loss counts zero. Evaluation shares out the micro-batches
one process makes of the validation set the same way and adds up their sums, so its figures are
one process's.

Rank 0 alone speaks the event protocol and writes checkpoints and the output. A checkpoint holds
the whole model and the whole optimizer state, keyed as one process keys them (FSDP's shards are
gathered to rank 0 first), so it resumes at any N and loads in transformers and PEFT.
"""

import contextlib
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.nn.parallel import DistributedDataParallel

from . import events, runtime


class Single:
    """One process: every collective is the identity."""

    size = 1
    rank = 0
    main = True

    def device(self, device):
        return device

    def home(self, device):
        """Where the model is loaded before `wrap`."""
        return device

    def wrap(self, model, params):
        """(what a training forward runs through, the trained parameters to optimize)."""
        return model, params

    def share(self, parts, per_rank):
        """(this rank's micro-batches, how many of them count; the rest are stand-ins)."""
        return parts, len(parts)

    def accumulating(self, forward, last):
        """Around a micro-batch's forward and backward: gradients are synchronized after the last."""
        return contextlib.nullcontext()

    def total(self, *values):
        return values

    def total_array(self, array):
        return array

    def any(self, flag):
        return flag

    def weights(self, model):
        """The whole model's weights for rank 0 to save, or None when the model holds them all."""
        return None

    def optimizer_state(self, model, optimizer):
        """The whole optimizer state for rank 0 to save, keyed as one process's optimizer keys it."""
        return optimizer.state_dict()

    def load_optimizer(self, model, optimizer, state):
        optimizer.load_state_dict(state)

    def barrier(self):
        pass

    def close(self):
        pass


class Group(Single):
    """The processes of one job under torchrun (RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in the environment)."""

    def __init__(self, device):
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device_type = device.type
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.main = self.rank == 0
        # In the job's log (every rank's stderr): which processes trained it, and how.
        events.log(f"rank {self.rank} of {self.size} ({dist.get_backend()}, {type(self).__name__.lower()})")
        if not self.main:
            events.silence()

    def device(self, device):
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, parts, per_rank):
        mine = parts[self.rank * per_rank:(self.rank + 1) * per_rank]
        passes = min(per_rank, len(parts))  # rank 0's
        return mine + [parts[0]] * (passes - len(mine)), len(mine)

    def total(self, *values):
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed)
        return tuple(summed.tolist())

    def total_array(self, array):
        summed = torch.from_numpy(array.copy())
        dist.all_reduce(summed)
        return summed.numpy()

    def any(self, flag):
        return self.total(1.0 if flag else 0.0)[0] > 0

    def barrier(self):
        dist.barrier()

    def close(self):
        dist.destroy_process_group()


class Replicated(Group):
    """LoRA: the whole model on every rank, DistributedDataParallel over its trained tensors."""

    def wrap(self, model, params):
        # The frozen weights never change and LoRA's fused projections keep theirs as buffers:
        # broadcasting buffers every forward would send the whole model each time.
        forward = DistributedDataParallel(model, broadcast_buffers=False)
        return forward, params

    def accumulating(self, forward, last):
        return contextlib.nullcontext() if last else forward.no_sync()


class Sharded(Group):
    """Full fine-tuning: FSDP2 shards weights, gradients and optimizer state across the ranks."""

    def home(self, device):
        return torch.device("cpu")

    def wrap(self, model, params):
        # Imported here: torch.distributed.fsdp and .checkpoint take seconds to import, which
        # every other engine command (serving among them) would pay at start.
        from torch.distributed.fsdp import fully_shard
        self.names = [name for name, _ in model.named_parameters()]
        mesh = init_device_mesh(self.device_type, (self.size,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        # The root (embeddings, final norm, lm_head) stays gathered after its forward, so the loss
        # may use lm_head's weight outside the model's forward.
        fully_shard(model, mesh=mesh)
        return model, list(model.parameters())

    def accumulating(self, forward, last):
        forward.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    @staticmethod
    def _whole():
        """Whole tensors, gathered to rank 0's memory (the other ranks get none)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions
        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def weights(self, model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        return get_model_state_dict(model, options=self._whole())

    def optimizer_state(self, model, optimizer):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        state = get_optimizer_state_dict(model, optimizer, options=self._whole())
        if not self.main:
            return None  # gathered to rank 0 only
        # Keyed by parameter name there; by position in one process's optimizer here.
        index = {name: i for i, name in enumerate(self.names)}
        return {"state": {index[name]: s for name, s in state["state"].items()},
                "param_groups": [dict(g, params=[index[name] for name in g["params"]]) for g in state["param_groups"]]}

    def load_optimizer(self, model, optimizer, state):
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        state = {"state": {self.names[i]: s for i, s in state["state"].items()},
                 "param_groups": [dict(g, params=[self.names[i] for i in g["params"]]) for g in state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, state, options=self._whole())


def start(device, threads, training):
    """The group this process trains in: a torchrun group when WORLD_SIZE > 1, else one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Single()
    group = Sharded(device) if training == "full" else Replicated(device)
    if device.type == "cpu" and not threads:
        # The host's cores are shared by its ranks rather than each taking all of them.
        runtime.use_threads(share=int(os.environ.get("LOCAL_WORLD_SIZE", group.size)))
    return group
