"""The safetensors format, read through a memory map and written in shards.

A file is: 8 bytes (little-endian u64) giving the header length, a JSON header mapping each tensor
name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the end of the header), then
the raw little-endian bytes. Sharded models add `model.safetensors.index.json` with a `weight_map`
from tensor name to file name.
"""

import json
import mmap
import os
import struct

import torch

from .errors import EngineError

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"


def read_header(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise EngineError("invalid_model", f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > os.path.getsize(path) - 8:
            raise EngineError("invalid_model", f"{path}: header length {size} runs past the end of the file")
        try:
            header = json.loads(f.read(size))
        except ValueError as e:
            raise EngineError("invalid_model", f"{path}: header is not JSON ({e})") from None
    return header, 8 + size


def load_file(path):
    """Every tensor in one file, backed by a copy-on-write map: pages are read when touched, and a
    caller that writes into a tensor never changes the file."""
    header, start = read_header(path)
    header.pop("__metadata__", None)
    if not header:
        return {}
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tensors = {}
    for name, info in header.items():
        if info.get("dtype") not in DTYPES:
            raise EngineError("invalid_model", f"{path}: tensor {name} has unsupported dtype {info.get('dtype')!r}")
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = 1
        for dim in shape:
            count *= dim
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * itemsize or start + end > len(mapped):
            raise EngineError("invalid_model", f"{path}: tensor {name} offsets {begin}..{end} do not fit shape {shape} {info['dtype']}")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin).view(shape)
    return tensors


def save_file(tensors, path, metadata=None):
    header = {}
    offset = 0
    ordered = sorted(tensors.items())
    for name, tensor in ordered:
        if tensor.dtype not in NAMES:
            raise ValueError(f"cannot write tensor {name} of dtype {tensor.dtype} to safetensors")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    # Readers expect the data to start 8-byte aligned; the format pads the header with spaces.
    encoded += b" " * (-len(encoded) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for _, tensor in ordered:
            data = tensor.detach().to("cpu").contiguous()
            if data.numel():
                # Reinterpreted as bytes so bf16 (which numpy lacks) is written like any other dtype.
                f.write(data.view(-1).view(torch.uint8).numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_model(tensors, folder, max_shard_bytes=5 * 1024 ** 3):
    """Writes `model.safetensors`, or `model-0000i-of-0000n.safetensors` shards plus the index
    once the tensors exceed `max_shard_bytes`."""
    shards = [[]]
    size = 0
    total = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
        total += nbytes
    index_path = os.path.join(folder, INDEX_NAME)
    if len(shards) == 1:
        save_file(tensors, os.path.join(folder, "model.safetensors"), {"format": "pt"})
        if os.path.exists(index_path):
            os.remove(index_path)
        return
    weight_map = {}
    for i, names in enumerate(shards):
        file_name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, os.path.join(folder, file_name), {"format": "pt"})
        weight_map.update({n: file_name for n in names})
    with open(index_path, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def load_model(folder):
    """All tensors of a model folder, sharded (through the index) or in one file."""
    index_path = os.path.join(folder, INDEX_NAME)
    if os.path.exists(index_path):
        try:
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError) as e:
            raise EngineError("invalid_model", f"{index_path}: not a safetensors index ({e})") from None
        tensors = {}
        for file_name in sorted(set(weight_map.values())):
            path = os.path.join(folder, file_name)
            if not os.path.exists(path):
                raise EngineError("invalid_model", f"{index_path}: names shard {file_name}, which is missing")
            tensors.update(load_file(path))
        return tensors
    path = os.path.join(folder, "model.safetensors")
    if not os.path.exists(path):
        raise EngineError("invalid_model", f"{folder}: neither model.safetensors nor {INDEX_NAME} found")
    return load_file(path)
