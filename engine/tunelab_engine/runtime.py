"""Where the engine computes: device, dtype, CPU threads and how idle threads wait, in one place.

Thread waiting is the operator's choice, `TUNELAB_THREAD_WAIT` in the engine's environment (the
server passes its own environment on):

- `passive` (the default): idle OpenMP threads sleep. Right on a machine the engine shares (with
  the server, a test runner, another job): spinning threads stall for whole scheduler slices when
  another process holds a core, and small models then ran many times slower.
- `spin`: idle threads spin before sleeping (OpenMP's ACTIVE policy). Faster when the cores are
  the engine's own: every parallel region otherwise wakes a sleeping thread.

An `OMP_WAIT_POLICY` already in the environment wins over both. It must be set before torch
loads OpenMP, so `prepare_threads` runs first thing in `__main__` and imports no torch itself.
"""

import os

WAIT_POLICIES = {"passive": "PASSIVE", "spin": "ACTIVE"}


def prepare_threads():
    wait = os.environ.get("TUNELAB_THREAD_WAIT", "passive")
    if wait not in WAIT_POLICIES:
        raise SystemExit(f"TUNELAB_THREAD_WAIT={wait!r}: expected one of {', '.join(WAIT_POLICIES)}")
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICIES[wait])


def cpu_count():
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def use_threads(threads=None, share=1):
    """Torch's CPU threads: `threads`, else `TUNELAB_THREADS` from the environment (the operator's
    cap on a shared machine), else every core this process may use. Those two are divided among
    `share` processes training together on this host (torchrun's), so together they keep to them."""
    import torch
    if threads:
        torch.set_num_threads(threads)
        return
    if os.environ.get("TUNELAB_THREADS"):
        try:
            threads = int(os.environ["TUNELAB_THREADS"])
        except ValueError:
            threads = 0
        if threads < 1:
            raise SystemExit(f"TUNELAB_THREADS={os.environ['TUNELAB_THREADS']!r}: expected a whole number >= 1")
    torch.set_num_threads(max(1, (threads or cpu_count()) // share))


def threads_spin():
    """Whether idle threads should spin (the wait policy `prepare_threads` chose, or the operator's)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE"


def cpu_flags():
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16():
    """bf16 matmuls only pay on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere they are emulated."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def device(name, error_code, what):
    """`auto` (cuda when available), `cpu`, `cuda` or `cuda:N`, as a torch.device; EngineError
    `error_code` naming `what` (the field or flag) otherwise."""
    import torch

    from .errors import EngineError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(error_code, f"{what}: {name} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EngineError(error_code, f"{what}: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None


def training_dtype(name, device):
    """`float32`, `bfloat16`, or `auto`: bf16 where it computes natively (CUDA with bf16, CPUs
    with AVX512-BF16 or AMX), else fp32."""
    import torch
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def serving_dtype(stored, device):
    """For `--dtype auto`: on CUDA the weights' stored dtype (bf16 becomes fp16 without bf16
    support); on CPU bf16 when the weights are stored in bf16 and the CPU computes in bf16
    natively (decoding reads every weight once per token, and bf16 halves those reads), else fp32."""
    import torch
    if device.type == "cuda":
        return torch.float16 if stored == torch.bfloat16 and not torch.cuda.is_bf16_supported() else stored
    return torch.bfloat16 if stored == torch.bfloat16 and cpu_has_bf16() else torch.float32
