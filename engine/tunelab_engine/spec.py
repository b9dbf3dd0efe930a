"""The training spec (spec.json): read, checked field by field, defaults filled in.

engine/README.md documents every field; a field this module does not know is an error, so a typo
in the server's spec writer fails the job instead of being silently ignored.
"""

import dataclasses
import os
from typing import List, Optional

from .errors import EngineError, read_json_object


@dataclasses.dataclass
class LoRASpec:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Optional[List[str]] = None  # None: all linear layers of attention and MLP


@dataclasses.dataclass
class DPOSpec:
    beta: float = 0.1


@dataclasses.dataclass
class Spec:
    model: str
    train_data: str
    output_dir: str
    work_dir: str
    n_epochs: int
    batch_size: int
    learning_rate: float
    base_model_name: Optional[str] = None
    valid_data: Optional[str] = None
    resume_from: Optional[str] = None
    training: str = "lora"  # which weights train: "lora" (an adapter) or "full"
    lora: LoRASpec = dataclasses.field(default_factory=LoRASpec)
    init_adapter: Optional[str] = None  # a LoRA adapter to continue training from (a fine-tune's)
    method: str = "supervised"  # the objective: "supervised" or "dpo"
    dpo: DPOSpec = dataclasses.field(default_factory=DPOSpec)
    seq_len: int = 2048
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: Optional[float] = 1.0
    seed: int = 0
    eval_every: int = 0
    eval_batches: int = 1
    gradient_checkpointing: bool = False
    dtype: str = "auto"
    device: str = "auto"
    threads: Optional[int] = None


def _check(cond, field, message):
    if not cond:
        raise EngineError("invalid_spec", f"spec field {field!r}: {message}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def from_dict(raw):
    _check(isinstance(raw, dict), "(root)", "the spec must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(Spec)}
    for key in raw:
        _check(key in fields, key, "unknown field")
    for key in ("model", "train_data", "output_dir", "work_dir", "n_epochs", "batch_size", "learning_rate"):
        _check(key in raw and raw[key] is not None, key, "required")
    values = dict(raw)
    # Specs written before `training` was named so called it `method` (a resumed job keeps its spec).
    if values.get("method") in ("lora", "full"):
        _check("training" not in values, "method", "the old name of 'training': give only 'training'")
        values["training"] = values.pop("method")
    lora_raw = values.pop("lora", None) or {}
    _check(isinstance(lora_raw, dict), "lora", "must be an object")
    lora_fields = {f.name for f in dataclasses.fields(LoRASpec)}
    for key in lora_raw:
        _check(key in lora_fields, f"lora.{key}", "unknown field")
    dpo_raw = values.pop("dpo", None) or {}
    _check(isinstance(dpo_raw, dict), "dpo", "must be an object")
    for key in dpo_raw:
        _check(key in {f.name for f in dataclasses.fields(DPOSpec)}, f"dpo.{key}", "unknown field")
    spec = Spec(**values, lora=LoRASpec(**lora_raw), dpo=DPOSpec(**dpo_raw))

    for key in ("model", "train_data", "output_dir", "work_dir"):
        _check(isinstance(getattr(spec, key), str) and getattr(spec, key), key, "must be a non-empty path")
    for key in ("valid_data", "resume_from", "base_model_name", "init_adapter"):
        _check(getattr(spec, key) is None or isinstance(getattr(spec, key), str), key, "must be a string or null")
    for key in ("n_epochs", "batch_size", "seq_len", "gradient_accumulation_steps", "eval_batches"):
        _check(_is_int(getattr(spec, key)) and getattr(spec, key) >= 1, key, "must be an integer >= 1")
    for key in ("warmup_steps", "eval_every", "seed"):
        _check(_is_int(getattr(spec, key)) and getattr(spec, key) >= 0, key, "must be an integer >= 0")
    _check(spec.threads is None or (_is_int(spec.threads) and spec.threads >= 1), "threads", "must be an integer >= 1 or null")
    _check(_is_number(spec.learning_rate) and spec.learning_rate > 0, "learning_rate", "must be a number > 0")
    _check(_is_number(spec.min_lr_ratio) and 0 <= spec.min_lr_ratio <= 1, "min_lr_ratio", "must lie in [0, 1]")
    _check(_is_number(spec.weight_decay) and spec.weight_decay >= 0, "weight_decay", "must be a number >= 0")
    for key in ("adam_beta1", "adam_beta2"):
        _check(_is_number(getattr(spec, key)) and 0 <= getattr(spec, key) < 1, key, "must lie in [0, 1)")
    _check(_is_number(spec.adam_eps) and spec.adam_eps > 0, "adam_eps", "must be a number > 0")
    _check(spec.max_grad_norm is None or (_is_number(spec.max_grad_norm) and spec.max_grad_norm >= 0), "max_grad_norm", "must be a number >= 0 or null (0 or null: no clipping)")
    _check(spec.training in ("lora", "full"), "training", f"{spec.training!r} is not 'lora' or 'full'")
    _check(spec.method in ("supervised", "dpo"), "method", f"{spec.method!r} is not 'supervised' or 'dpo' (or, in old specs, 'lora' or 'full': what 'training' says now)")
    _check(_is_number(spec.dpo.beta) and spec.dpo.beta > 0, "dpo.beta", "must be a number > 0")
    _check(spec.init_adapter is None or spec.training == "lora", "init_adapter", "an adapter continues a 'lora' run only")
    _check(spec.lr_schedule in ("cosine", "linear", "constant"), "lr_schedule", f"{spec.lr_schedule!r} is not 'cosine', 'linear' or 'constant'")
    _check(spec.dtype in ("auto", "bfloat16", "float32"), "dtype", f"{spec.dtype!r} is not 'auto', 'bfloat16' or 'float32'")
    _check(isinstance(spec.device, str) and (spec.device in ("auto", "cpu", "cuda") or spec.device.startswith("cuda:")), "device", f"{spec.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    _check(isinstance(spec.gradient_checkpointing, bool), "gradient_checkpointing", "must be true or false")
    lora = spec.lora
    _check(_is_int(lora.rank) and lora.rank >= 1, "lora.rank", "must be an integer >= 1")
    _check(_is_number(lora.alpha) and lora.alpha > 0, "lora.alpha", "must be a number > 0")
    _check(_is_number(lora.dropout) and 0 <= lora.dropout < 1, "lora.dropout", "must lie in [0, 1)")
    _check(lora.target_modules is None or (isinstance(lora.target_modules, list) and all(isinstance(t, str) for t in lora.target_modules)),
           "lora.target_modules", "must be a list of module names or null")
    if spec.base_model_name is None:
        spec.base_model_name = spec.model
    return spec


def load(path):
    spec = from_dict(read_json_object(path, "invalid_spec"))
    for key in ("model", "train_data"):
        _check(os.path.isdir(getattr(spec, key)), key, f"{getattr(spec, key)} is not a folder")
    for key in ("valid_data", "resume_from", "init_adapter"):
        value = getattr(spec, key)
        _check(value is None or os.path.isdir(value), key, f"{value} is not a folder")
    return spec
