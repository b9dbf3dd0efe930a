"""Cross-entropy over the vocabulary, only at trained positions, in chunks.

The [tokens, vocab] logits are the largest tensor of a small model's step (49152 or 151936 columns).
They are computed a chunk of rows at a time and the gradient for the hidden states (and for the
output weight, when it trains) is formed in the same pass, so no chunk's logits outlive it.
"""

import torch

CHUNK_ELEMENTS = 1 << 24


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight.to(hidden.dtype)
        chunk = max(1, CHUNK_ELEMENTS // w.shape[0])
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk], labels[start:start + chunk]
            logits = (h @ w.t()).float()
            # One max serves both the stable log-sum-exp and the accuracy; the exponentials are
            # computed once, in place, and become the softmax of the gradient.
            top, predicted = logits.max(dim=-1)
            target = logits.gather(1, y[:, None]).squeeze(1)
            probs = torch.exp_(logits.sub_(top[:, None]))
            total = probs.sum(-1)
            loss += (top + torch.log(total) - target).sum()
            correct += (predicted == y).sum()
            if need_h or need_w:
                # d(sum of -log softmax[y]) / d logits = softmax - onehot(y)
                g = probs.div_(total[:, None])
                g[torch.arange(len(y), device=y.device), y] -= 1
                g = g.to(h.dtype)
                if need_h:
                    grad_h[start:start + chunk] = g @ w
                if need_w:
                    grad_w += (g.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None,
                (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None,
                None)


def linear_cross_entropy(hidden, weight, labels):
    """(sum of token losses, number of tokens whose argmax is the label) for hidden [N, H],
    output weight [V, H] and labels [N]."""
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0.0
        return zero.float(), torch.zeros((), dtype=torch.int64, device=hidden.device)
    return _LinearCrossEntropy.apply(hidden, weight, labels)
