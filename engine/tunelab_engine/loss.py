"""Log-probabilities of labels under softmax(hidden @ weight.T), only at trained positions, in chunks.

The [tokens, vocab] logits are the largest tensor of a small model's step (49152 or 151936 columns).
They are computed a chunk of rows at a time and the gradient for the hidden states (and for the
output weight, when it trains) is formed in the same pass, so no chunk's logits outlive it.
Supervised training wants the sum of the tokens' losses (`linear_cross_entropy`); DPO wants each
token's log-probability (`token_log_probs`), summed per answer afterwards. Both run `_chunks`.

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


def _softmax_slices(logits, y, step, losses, correct, need_grad, scale):
    """Writes a chunk's token losses (-log softmax[y]) and whether each token's argmax is its label
    into `losses` and `correct`, `step` rows at a time; with `need_grad`, overwrites `logits` with
    the gradient of the losses, softmax - onehot(y), each row times its `scale` when one is given."""
    for s in range(0, len(y), step):
        ys = y[s:s + step]
        part = logits[s:s + step].float()
        # One max serves both the stable log-sum-exp and the accuracy; the exponentials
        # are computed once, in place, and become the softmax of the gradient.
        top, predicted = part.max(dim=-1)
        target = part.gather(1, ys[:, None]).squeeze(1)
        probs = torch.exp_(part.sub_(top[:, None]))
        total = probs.sum(-1)
        losses[s:s + step] = top + torch.log(total) - target
        correct[s:s + step] = predicted == ys
        if need_grad:
            # d(-log softmax[y]) / d logits = softmax - onehot(y)
            probs.div_(total[:, None])
            probs[torch.arange(len(ys), device=y.device), ys] -= 1
            if scale is not None:
                probs.mul_(scale[s:s + step, None])
            logits[s:s + step] = probs


def _chunks(hidden, weight, labels, need_h, need_w, scale=None):
    """(token losses [N] fp32, whether each token's argmax is its label [N], the gradient of the
    losses' sum for `hidden` [N, H] or None, for `weight` [V, H] fp32 or None). With `scale` [N],
    the gradients are those of sum(scale * losses)."""
    w = weight.to(hidden.dtype)
    chunk = max(1, CHUNK_ELEMENTS // w.shape[0])
    losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    correct = torch.empty(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
    step = max(1, SLICE_ELEMENTS // w.shape[0])
    for start in range(0, hidden.shape[0], chunk):
        rows = slice(start, start + chunk)
        h = hidden[rows]
        logits = h @ w.t()
        # The gradient overwrites the logits slice by slice (same dtype, same shape).
        g = logits
        # The slices' ~15 ops each run on one thread: at two, every one of them wakes the
        # sleeping OpenMP thread (OMP_WAIT_POLICY=PASSIVE), which cost more than the second
        # core gave (SmolLM2 shape, 587 trained tokens: 245-254 ms against 189-195 for the loss).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _softmax_slices(logits, labels[rows], step, losses[rows], correct[rows], need_h or need_w,
                            scale[rows] if scale is not None else None)
        finally:
            torch.set_num_threads(threads)
        if need_h:
            out = grad_h[rows]
            torch.mm(g[:, :VOCAB_SLICE], w[:VOCAB_SLICE], out=out)
            for v in range(VOCAB_SLICE, w.shape[0], VOCAB_SLICE):
                out.addmm_(g[:, v:v + VOCAB_SLICE], w[v:v + VOCAB_SLICE])
        if need_w:
            grad_w += (g.t() @ h).float()
    return losses, correct, grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    """The sum of the token losses: its gradients are known in the forward, up to the one factor
    the backward brings."""

    @staticmethod
    def forward(ctx, hidden, weight, labels):
        losses, correct, grad_h, grad_w = _chunks(hidden, weight, labels, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        correct = correct.sum()
        ctx.mark_non_differentiable(correct)
        return losses.sum(), correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None,
                (grad_w * grad_loss).to(ctx.weight_dtype) if grad_w is not None else None,
                None)


class _TokenLogProbs(torch.autograd.Function):
    """Each token's log-probability. The hidden states' gradient is formed in the forward, a row
    per token, and scaled in the backward by the token's own factor; the output weight's sums over
    tokens with those factors, so it is computed in the backward, in a second pass over the chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, labels):
        need_w = ctx.needs_input_grad[1]
        losses, correct, grad_h, _ = _chunks(hidden, weight, labels, ctx.needs_input_grad[0], False)
        ctx.save_for_backward(grad_h, hidden if need_w else None, weight if need_w else None, labels if need_w else None)
        ctx.mark_non_differentiable(correct)
        return -losses, correct

    @staticmethod
    def backward(ctx, grad_logps, _grad_correct):
        grad_h, hidden, weight, labels = ctx.saved_tensors
        # The log-probability is minus the loss: each token's loss gradient counts -grad_logps times.
        scale = -grad_logps
        if hidden is not None:
            _, _, _, grad_w = _chunks(hidden, weight, labels, False, True, scale)
            grad_w = grad_w.to(weight.dtype)
        else:
            grad_w = None
        return ((grad_h * scale[:, None]).to(grad_h.dtype) if grad_h is not None else None, grad_w, None)


def linear_cross_entropy(hidden, weight, labels):
    """(sum of token losses, number of tokens whose argmax is the label) for hidden [N, H],
    output weight [V, H] and labels [N]."""
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0.0
        return zero.float(), torch.zeros((), dtype=torch.int64, device=hidden.device)
    if not torch.is_grad_enabled():
        # A Function's forward is told its inputs need gradients even under no_grad (evaluation).
        losses, correct, _, _ = _chunks(hidden, weight, labels, False, False)
        return losses.sum(), correct.sum()
    return _LinearCrossEntropy.apply(hidden, weight, labels)


def token_log_probs(hidden, weight, labels):
    """(log-probability of each label [N] fp32, whether each label is the argmax [N]) for hidden
    [N, H], output weight [V, H] and labels [N]."""
    if hidden.shape[0] == 0:
        return hidden.sum(-1).float() * 0.0, torch.zeros(0, dtype=torch.bool, device=hidden.device)
    if not torch.is_grad_enabled():
        losses, correct, _, _ = _chunks(hidden, weight, labels, False, False)
        return -losses, correct
    return _TokenLogProbs.apply(hidden, weight, labels)
