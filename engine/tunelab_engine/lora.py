"""LoRA: a frozen linear layer plus a trainable low-rank path x @ A^T @ B^T * (alpha / r).

The low-rank path runs beside the frozen matmul rather than being merged into the weight, so the
frozen weight is never rebuilt or recast during training. Module names follow PEFT
(`q_proj.lora_A.weight`, `q_proj.lora_B.weight`), so saved adapters load in PEFT and vLLM.
"""

import json
import math
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from . import safetensors
from .errors import EngineError, read_json_object

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTENTION + MLP
PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class LoRALinear(nn.Module):
    def __init__(self, base, rank, alpha, dropout):
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.scaling = alpha / rank
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device, dtype=torch.float32)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device, dtype=torch.float32)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # PEFT's initialization: A like nn.Linear, B zero, so training starts from the base model.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        # PEFT's formula. The fp32 LoRA weights are cast to the activations' dtype (a few KB per
        # layer); the frozen weight is used as stored.
        low = F.linear(self.dropout(x), self.lora_A.weight.to(x.dtype))
        return F.linear(x, self.weight, self.bias) + F.linear(low, self.lora_B.weight.to(x.dtype)) * self.scaling

    def merged_weight(self):
        delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling
        return (self.weight.float() + delta).to(self.weight.dtype)


class FusedLoRA(nn.Module):
    """Projections of the same input (q, k, v; gate, up), all LoRA-wrapped, run as one frozen matmul,
    one matmul into the stacked A's and one block-diagonal B added in place.

    Training only: a third of the matmul calls and one input gradient instead of one per projection
    (each extra one is a [tokens, hidden] addition in backward). The parts stay where they were, so
    parameter names, the optimizer and the PEFT files do not change; their frozen weights become
    views of the fused one, so memory does not grow.
    """

    def __init__(self, parts):
        super().__init__()
        self.parts = list(parts)  # a plain list: the parts are registered under their own names
        self.sizes = [p.weight.shape[0] for p in parts]
        fused = torch.cat([p.weight.detach() for p in parts])
        start = 0
        for p, size in zip(parts, self.sizes):
            p.weight.data = fused[start:start + size]
            start += size
        self.register_buffer("weight", fused, persistent=False)
        bias = torch.cat([p.bias.detach() for p in parts]) if parts[0].bias is not None else None
        self.register_buffer("bias", bias, persistent=False)
        self.dropout = parts[0].dropout

    def stacked(self, dtype):
        """The parts' A's stacked [R, in], and their B's block-diagonal with the scalings folded in [out, R]."""
        a = torch.cat([p.lora_A.weight for p in self.parts]).to(dtype)
        b = torch.block_diag(*[p.lora_B.weight * p.scaling for p in self.parts]).to(dtype)
        return a, b

    def forward(self, x):
        a, b = self.stacked(x.dtype)
        # Callers split the [..., sum(sizes)] output themselves.
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(self.dropout(x), a), b)


def fuse(model):
    """Groups each layer's LoRA-wrapped q/k/v and gate/up projections (see FusedLoRA)."""
    for layer in model.model.layers:
        for parent, names, group in ((layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv"),
                                     (layer.mlp, ("gate_proj", "up_proj"), "gate_up")):
            parts = [getattr(parent, n) for n in names]
            if all(isinstance(p, LoRALinear) for p in parts) and len({p.lora_A.out_features for p in parts}) == 1:
                setattr(parent, group, FusedLoRA(parts))


def target_names(targets):
    if targets in (None, "all-linear", ["all-linear"]):
        return list(ALL_LINEAR)
    unknown = [t for t in targets if t not in ALL_LINEAR]
    if unknown or not targets:
        raise EngineError("invalid_spec", f"lora.target_modules: {unknown or targets} not among {', '.join(ALL_LINEAR)}")
    return list(targets)


def apply(model, rank, alpha, dropout=0.0, targets=None, seed=0):
    """Freezes every base weight and wraps the targeted linear layers; returns the LoRA parameters."""
    targets = target_names(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in targets:
                if hasattr(parent, name):
                    setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, dropout))
    return [p for n, p in model.named_parameters() if ".lora_" in n]


def lora_modules(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_state(model):
    """LoRA weights under PEFT's key names."""
    return {PEFT_PREFIX + name: p.detach() for name, p in model.named_parameters() if ".lora_" in name}


def save_adapter(model, folder, rank, alpha, dropout, targets, base_model_name):
    os.makedirs(folder, exist_ok=True)
    safetensors.save_file({k: v.float() for k, v in adapter_state(model).items()},
                          os.path.join(folder, ADAPTER_WEIGHTS), {"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(target_names(targets)),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }
    with open(os.path.join(folder, ADAPTER_CONFIG), "w") as f:
        json.dump(config, f, indent=2)


def read_adapter_config(folder):
    path = os.path.join(folder, ADAPTER_CONFIG)
    config = read_json_object(path, "invalid_adapter")
    if config.get("peft_type") != "LORA":
        raise EngineError("invalid_adapter", f"{path}: peft_type {config.get('peft_type')!r} is not LORA")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in config:
            raise EngineError("invalid_adapter", f"{path}: missing field {key!r}")
    if config.get("use_rslora") or config.get("use_dora"):
        raise EngineError("invalid_adapter", f"{path}: rsLoRA and DoRA adapters are not supported")
    return config


def adapter_targets(config, model, source):
    """The projection names (q_proj, ...) an adapter config targets. PEFT writes a list of names,
    bare (`q_proj`) or whole module names (PEFT >= 0.15 saves what "all-linear" resolved to:
    `model.layers.0.self_attn.q_proj`, ...), or one string: "all-linear" or a regular expression
    matched against whole module names."""
    targets = config["target_modules"]
    if targets == "all-linear":
        return list(ALL_LINEAR)
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as e:
            raise EngineError("invalid_adapter", f"{source}: target_modules {targets!r} is not a regular expression ({e})") from None
        names = {name.rpartition(".")[2] for name, _ in model.named_modules() if pattern.fullmatch(name)}
    elif isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        names = {t.rpartition(".")[2] for t in targets}
    else:
        raise EngineError("invalid_adapter", f"{source}: target_modules must be a list of module names or a string")
    unknown = sorted(names - set(ALL_LINEAR))
    if unknown or not names:
        raise EngineError("invalid_adapter", f"{source}: target_modules {unknown or targets} not among {', '.join(ALL_LINEAR)}")
    return [n for n in ALL_LINEAR if n in names]


def read_adapter(folder, model):
    """(config, {module name: (A, B)}) of a PEFT adapter folder, checked against `model`'s linear
    layers, which are left as they are. Module names are the base model's
    (`model.layers.0.self_attn.q_proj`); A is [r, in], B [out, r], as stored (fp32).
    Any problem with the folder is an EngineError `invalid_adapter`."""
    config = read_adapter_config(folder)
    targets = adapter_targets(config, model, f"{folder}/{ADAPTER_CONFIG}")
    rank = config["r"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise EngineError("invalid_adapter", f"{folder}/{ADAPTER_CONFIG}: r must be a positive integer")
    for key in ("rank_pattern", "alpha_pattern", "fan_in_fan_out"):
        if config.get(key):
            raise EngineError("invalid_adapter", f"{folder}/{ADAPTER_CONFIG}: {key} is not supported")
    path = os.path.join(folder, ADAPTER_WEIGHTS)
    try:
        weights = safetensors.load_file(path)
    except EngineError as e:
        raise EngineError("invalid_adapter", e.message) from None
    except OSError as e:
        raise EngineError("invalid_adapter", f"{path}: {e.strerror or e}") from None
    pairs = {}
    for key, value in weights.items():
        # PEFT writes `lora_A.weight`; some tools keep the adapter name (`lora_A.default.weight`).
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        module_name, sep, part = name.replace(".default.", ".").rpartition(".lora_")
        try:
            module = model.get_submodule(module_name) if sep else None
        except AttributeError:
            module = None
        if (part not in ("A.weight", "B.weight") or module_name.rpartition(".")[2] not in targets
                or not isinstance(getattr(module, "weight", None), torch.Tensor)):
            raise EngineError("invalid_adapter", f"{folder}/{ADAPTER_WEIGHTS}: key {key} matches no LoRA layer of the base model")
        out_features, in_features = module.weight.shape
        expected = [rank, in_features] if part[0] == "A" else [out_features, rank]
        if list(value.shape) != expected:
            raise EngineError("invalid_adapter", f"{folder}/{ADAPTER_WEIGHTS}: {key} has shape {list(value.shape)}, expected {expected}")
        pairs.setdefault(module_name, {})[part[0]] = value
    for module_name, pair in pairs.items():
        if len(pair) != 2:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise EngineError("invalid_adapter", f"{folder}/{ADAPTER_WEIGHTS}: {module_name} has no {missing} weight")
    return config, {name: (pair["A"], pair["B"]) for name, pair in pairs.items()}


def load_adapter(model, folder, dropout=0.0):
    """Wraps `model` as the adapter's config says and loads its weights; returns the adapter config."""
    config, pairs = read_adapter(folder, model)
    apply(model, config["r"], config["lora_alpha"], dropout, adapter_targets(config, model, folder))
    with torch.no_grad():
        for name, (a, b) in pairs.items():
            module = model.get_submodule(name)
            module.lora_A.weight.copy_(a)
            module.lora_B.weight.copy_(b)
    return config


def merge(model):
    """Folds every LoRA path into its base weight and unwraps the layers."""
    for name, module in lora_modules(model).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = nn.Linear(module.lora_A.in_features, module.lora_B.out_features, bias=module.bias is not None,
                         device="meta")
        base.weight = nn.Parameter(module.merged_weight(), requires_grad=False)
        if module.bias is not None:
            base.bias = module.bias
        setattr(parent, child, base)
