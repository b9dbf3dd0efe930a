"""The engine's C kernels (bf16_rows.c and decode_ops.c beside this file, one library): built on the machine that runs them, by
`python -m tunelab_engine build-native` (`tunelab setup` runs it), and loaded with ctypes.

The library goes to a cache folder under a name holding a hash of the sources and the compiler
flags, so an engine only ever loads the library built from its own source. `library()` is None,
and the engine keeps torch's own ops, wherever the library cannot run: not built (no compiler at
setup), or a CPU without AVX512-BF16.
"""

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile

from .. import runtime

SOURCES = [os.path.join(os.path.dirname(os.path.abspath(__file__)), name) for name in ("bf16_rows.c", "decode_ops.c")]
# Target flags rather than -march=native: the build is the same on every machine, and
# `library()` checks the CPU it runs on.
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-fPIC", "-shared", "-pthread"]
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16")
# Idle pool threads spin this many pauses (a few milliseconds) before they sleep, with TUNELAB_THREAD_WAIT=spin.
SPIN = 200_000


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tunelab", "native")


# Cached: a model's load asks `library()` once per weight, and the sources do not change under a running engine.
@functools.cache
def _source_digest():
    digest = hashlib.sha256()
    for source in SOURCES:
        with open(source, "rb") as f:
            digest.update(f.read())
    digest.update(" ".join(FLAGS).encode())
    return digest.hexdigest()[:16]


def library_path(folder=None):
    return os.path.join(folder or cache_dir(), f"tunelab-native-{_source_digest()}.so")


def build(folder=None, compiler=None):
    """Compiles the library into `folder` (default the cache) unless it is there; its path.
    Raises OSError or CalledProcessError where it cannot be built."""
    path = library_path(folder)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        compiler = compiler or os.environ.get("CC") or "cc"
        subprocess.run([compiler, *FLAGS, "-o", partial, *SOURCES], check=True, capture_output=True, text=True)
        os.replace(partial, path)  # whole or not at all, for an engine starting beside the build
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path


_loaded = {}


def library(path=None):
    """The loaded library (ctypes.CDLL with its functions typed), or None where it cannot run."""
    path = path or library_path()
    if not os.path.exists(path):
        return None
    if path not in _loaded:
        _loaded[path] = _load(path) if set(CPU_FLAGS) <= runtime.cpu_flags() else None
    return _loaded[path]


def _load(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.tl_bf16_rows_linear.restype = ctypes.c_int
    lib.tl_bf16_rows_linear.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                                        ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.tl_rms_norm.restype = None
    lib.tl_rms_norm.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                                ctypes.c_float, ctypes.c_void_p]
    lib.tl_rope_qk.restype = None
    lib.tl_rope_qk.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                               ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    lib.tl_decode_attention.restype = ctypes.c_int
    lib.tl_decode_attention.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                                        ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                        ctypes.c_long, ctypes.c_void_p]
    lib.tl_set_spin.argtypes = [ctypes.c_long]
    lib.tl_set_spin(SPIN if runtime.threads_spin() else 0)
    return lib
