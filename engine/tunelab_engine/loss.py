"""Cross-entropy over the vocabulary, only at trained positions, in chunks.

The [tokens, vocab] logits are the largest tensor of a small model's step (49152 or 151936 columns).
They are computed a chunk of rows at a time and the gradient for the hidden states (and for the
output weight, when it trains) is formed in the same pass, so no chunk's logits outlive it.

Two sizes: the matmul takes many rows at once (each chunk reads the whole [vocab, hidden] weight),
while the softmax runs over slices small enough to stay in the CPU's L2 cache. On a 2-core VM a
pass over a 341 x 49152 fp32 chunk costs 40-70 ms from memory, and the softmax makes eight of them.
"""

import torch

CHUNK_ELEMENTS = 1 << 24
SLICE_ELEMENTS = 1 << 18  # 1 MiB of fp32 logits
# The hidden-state gradient g @ W sums over the vocabulary; oneDNN takes ~1.6x longer for one
# 341 x 49152 x 576 bf16 product than for the same work as 16384-wide pieces accumulated in place.
VOCAB_SLICE = 16384


def _softmax_slices(logits, y, step, loss, correct, need_grad):
    """Adds a chunk's token losses and correct predictions to `loss` and `correct`, `step` rows
    at a time; with `need_grad`, overwrites `logits` with the gradient, softmax - onehot(y)."""
    for s in range(0, len(y), step):
        ys = y[s:s + step]
        part = logits[s:s + step].float()
        # One max serves both the stable log-sum-exp and the accuracy; the exponentials
        # are computed once, in place, and become the softmax of the gradient.
        top, predicted = part.max(dim=-1)
        target = part.gather(1, ys[:, None]).squeeze(1)
        probs = torch.exp_(part.sub_(top[:, None]))
        total = probs.sum(-1)
        loss += (top + torch.log(total) - target).sum()
        correct += (predicted == ys).sum()
        if need_grad:
            # d(sum of -log softmax[y]) / d logits = softmax - onehot(y)
            probs.div_(total[:, None])
            probs[torch.arange(len(ys), device=y.device), ys] -= 1
            logits[s:s + step] = probs


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
        step = max(1, SLICE_ELEMENTS // w.shape[0])
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk], labels[start:start + chunk]
            logits = h @ w.t()
            # The gradient overwrites the logits slice by slice (same dtype, same shape).
            g = logits
            # The slices' ~15 ops each run on one thread: at two, every one of them wakes the
            # sleeping OpenMP thread (OMP_WAIT_POLICY=PASSIVE), which cost more than the second
            # core gave (SmolLM2 shape, 587 trained tokens: 245-254 ms against 189-195 for the loss).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                _softmax_slices(logits, y, step, loss, correct, need_h or need_w)
            finally:
                torch.set_num_threads(threads)
            if need_h or need_w:
                if need_h:
                    out = grad_h[start:start + chunk]
                    torch.mm(g[:, :VOCAB_SLICE], w[:VOCAB_SLICE], out=out)
                    for v in range(VOCAB_SLICE, w.shape[0], VOCAB_SLICE):
                        out.addmm_(g[:, v:v + VOCAB_SLICE], w[v:v + VOCAB_SLICE])
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
