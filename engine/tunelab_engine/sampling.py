"""Choosing each request's next token from its logits: penalties, grammar, temperature, nucleus, seed."""

import random

import torch

NUCLEUS_START = 256  # candidates for the top_p head before widening


class Sampler:
    """One request's sampling state: its settings, its generator and its generated-token counts.

    temperature 0: argmax. Otherwise softmax(logits / temperature) cut to the smallest head whose
    mass reaches top_p, drawn with the request's own generator (seeded by `seed`; a random seed
    when null), so a seed and a prompt give the same output when run alone. OpenAI's penalties
    over the tokens this request generated: logit[t] -= presence * (count[t] > 0) + frequency * count[t].
    A grammar (`grammar.Constraint`) then rules out the tokens it forbids. With `logprobs` (the
    number of alternatives, 0-20) each choice also reports log-probabilities of the distribution it
    was drawn from before temperature: the logits after penalties and grammar, log-softmaxed.
    Sampling runs on the CPU (the generator is a CPU one on every device).
    """

    def __init__(self, req, vocab, device):
        self.temperature, self.top_p = req.temperature, req.top_p
        self.presence, self.frequency = req.presence, req.frequency
        self.counts = torch.zeros(vocab, dtype=torch.float32) if (self.presence or self.frequency) else None
        self.constraint = req.constraint
        self.top_logprobs = req.logprobs
        self.generator = None
        if self.temperature > 0:
            seed = req.seed if req.seed is not None else random.SystemRandom().getrandbits(63)
            self.generator = torch.Generator().manual_seed(seed % 2 ** 64)
        self.plain_greedy = self.temperature <= 0 and self.counts is None and self.constraint is None \
            and self.top_logprobs is None
        self.logprobs = None  # the last choice's, for `report`

    def seen(self, token):
        if self.counts is not None:
            self.counts[token] += 1
        if self.constraint is not None:
            self.constraint.advance(token)

    def report(self):
        """The last choice's log-probabilities as event fields: {} unless the request asked."""
        return {} if self.logprobs is None else {"logprobs": [self.logprobs]}

    def adjust(self, logits):
        """logits [vocab] (fp32, CPU, may be changed in place) with the penalties and the grammar applied."""
        if self.counts is not None:
            penalty = self.counts * self.frequency
            if self.presence:
                penalty += (self.counts > 0).float() * self.presence
            logits -= penalty
        if self.constraint is not None:
            self.constraint.mask(logits)
        return logits

    def draw(self, logits):
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p >= 1.0:
            return int(torch.multinomial(probs, 1, generator=self.generator))
        # The smallest head of the distribution whose mass reaches top_p. It is found among the
        # largest NUCLEUS_START probabilities, widened only when they hold too little mass: sorting
        # a 150k vocabulary for every row at every step cost more than the step's attention.
        k = min(NUCLEUS_START, probs.numel())
        while True:
            head, order = probs.topk(k)
            if k == probs.numel() or float(head.sum()) >= self.top_p:
                break
            k = min(k * 8, probs.numel())
        keep = head.cumsum(0) - head < self.top_p
        keep[0] = True  # the most likely token is always in the head: top_p 0 is greedy, as OpenAI's is
        return int(order[keep][torch.multinomial(head[keep], 1, generator=self.generator)])

    def note_logprobs(self, logits, token):
        """{token, logprob, top: [[token, logprob], ...]} of the choice just made from logits [vocab]."""
        logprobs = torch.log_softmax(logits, dim=-1)
        top = []
        if self.top_logprobs:
            values, ids = logprobs.topk(self.top_logprobs)
            # Tokens a grammar rules out (-inf) are no alternatives, and JSON has no -Infinity.
            top = [[int(i), float(v)] for i, v in zip(ids, values) if v > float("-inf")]
        self.logprobs = {"token": token, "logprob": float(logprobs[token]), "top": top}

    def sample(self, logits):
        return Sampler.sample_rows([self], logits)

    @staticmethod
    def sample_rows(samplers, logits):
        """Next token of each row of logits [B, vocab] (fp32), row i chosen by samplers[i]."""
        if all(s.plain_greedy for s in samplers):
            return logits.argmax(-1).tolist()
        logits = logits.cpu()
        for i, s in enumerate(samplers):
            s.adjust(logits[i])
        tokens = logits.argmax(-1).tolist()
        for i, s in enumerate(samplers):
            if s.temperature > 0:
                tokens[i] = s.draw(logits[i])
            if s.top_logprobs is not None:
                s.note_logprobs(logits[i], tokens[i])
        return tokens
