"""Checkpoints: the trained weights in the layout they are used in (a PEFT adapter, or a full
Hugging Face model folder) plus `training_state.pt` (optimizer, step, RNG) to resume from."""

import json
import os
import shutil

import torch

from . import lora, safetensors
from .errors import EngineError
from .model import state_dict_for_save

STATE = "training_state.pt"
# Everything in a model folder that is not weights or config: tokenizer, chat template, generation defaults.
WEIGHT_FILES = ("config.json", safetensors.INDEX_NAME)


def copy_extras(src, dst):
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if os.path.isfile(path) and name not in WEIGHT_FILES and not name.endswith(".safetensors"):
            shutil.copy2(path, os.path.join(dst, name))


def save_full_model(model, folder, dtype=None, tensors=None):
    """config.json (transformers' own, with torch_dtype updated) and the weights (`tensors`, or the
    model's own), in `dtype` or as they are held."""
    os.makedirs(folder, exist_ok=True)
    tensors = state_dict_for_save(model, tensors)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    raw = dict(model.config.raw)
    raw["torch_dtype"] = str(next(iter(tensors.values())).dtype).replace("torch.", "")
    safetensors.save_model(tensors, folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(raw, f, indent=2)


def save_weights(model, spec, folder, tensors=None):
    """`tensors`: the full model's weights when the model itself holds only a shard of them."""
    if spec.training == "lora":
        lora.save_adapter(model, folder, spec.lora.rank, spec.lora.alpha, spec.lora.dropout,
                          spec.lora.target_modules, spec.base_model_name)
    else:
        save_full_model(model, folder, tensors=tensors)
        copy_extras(spec.model, folder)


def save(folder, model, spec, optimizer_state, step, trained_tokens, tensors=None):
    """Written beside the target and renamed into place, so a checkpoint folder is complete or absent."""
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_weights(model, spec, tmp, tensors)
    state = {
        "step": step,
        "trained_tokens": trained_tokens,
        "training": spec.training,
        "optimizer": optimizer_state,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(state, os.path.join(tmp, STATE))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_state(folder, spec):
    path = os.path.join(folder, STATE)
    try:
        state = torch.load(path, map_location="cpu")
    except FileNotFoundError:
        raise EngineError("invalid_checkpoint", f"{path}: not found") from None
    except Exception as e:  # torch.load raises many kinds for a damaged file
        raise EngineError("invalid_checkpoint", f"{path}: unreadable ({e})") from None
    kind = state.get("training", state.get("method"))  # "method" in checkpoints written before the rename
    if kind != spec.training:
        raise EngineError("invalid_checkpoint", f"{folder}: a {kind} checkpoint cannot resume a {spec.training} run")
    if spec.training == "lora":
        config = lora.read_adapter_config(folder)
        if config["r"] != spec.lora.rank or config["lora_alpha"] != spec.lora.alpha:
            raise EngineError("invalid_checkpoint", f"{folder}: adapter has r={config['r']}, lora_alpha={config['lora_alpha']}; the spec asks for rank={spec.lora.rank}, alpha={spec.lora.alpha}")
    return state
