"""Greedy or sampled generation for one prompt, recomputing the prefix each token.

Plain on purpose: it is the reference the batched, cached `serve` is tested against, and the
`generate` command for checking a fine-tune by hand.
"""

import torch

from . import config, lora, safetensors
from .model import build


def load(model_dir, adapter_dir=None, dtype=torch.float32, device="cpu"):
    model = build(config.load(model_dir), safetensors.load_model(model_dir), dtype, device)
    if adapter_dir:
        lora.load_adapter(model, adapter_dir)
        lora.merge(model)
    return model.eval()


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens, temperature=0.0, top_p=1.0, stop_ids=(), seed=0):
    """(new ids without the stop id, finish_reason 'stop' or 'length')."""
    device = model.lm_head.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=device)
    out = []
    for _ in range(max_new_tokens):
        logits = model.logits(model(ids)[:, -1]).float()[0]
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                # Keep the smallest head of the distribution whose mass reaches top_p.
                drop = sorted_probs.cumsum(0) - sorted_probs >= top_p
                sorted_probs[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            token = int(torch.multinomial(probs, 1, generator=generator))
        if token in stop_ids:
            return out, "stop"
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
    return out, "length"
