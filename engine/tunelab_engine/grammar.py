"""Grammar-constrained decoding: a request's `grammar` (a Lark grammar in llguidance's dialect, with
`%json {schema}` for JSON schemas) limits each step's choice to tokens that keep the output inside it.

llguidance (the Rust library behind Guidance, also used by vLLM and SGLang) compiles the grammar and
computes the allowed-token mask at each step; nothing here parses JSON or walks a schema. Its
tokenizer is built from the model folder's own tokenizer.json: the mask needs every token's bytes,
and the library also tokenizes the text a grammar forces (a property name, `<tool_call>`) with
the model's real BPE. A token list alone would leave it a greedy tokenizer that cuts forced text
differently from how the model was trained to write it.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import llguidance
import numpy as np

from .errors import EngineError

COMPILE_ERROR = "failed to compile JSON schema: "

# Each next-token mask is computed on this thread as soon as the previous token is known, so it
# runs while the step's forward pass does (llguidance lets go of the GIL); sampling then only
# waits for what is left of it. One thread: the masks of a batch's rows are computed one by one.
MASKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")


class GrammarCompiler:
    """Compiles requests' grammars for one served model; the tokenizer is read on first use, once
    per set of end-of-turn ids (the grammar's end is where the model may stop)."""

    def __init__(self, model_dir, vocab):
        self.tokenizer_path = os.path.join(model_dir, "tokenizer.json")
        self.vocab = vocab
        self.tokenizers = {}

    def matcher(self, lark, stop_ids):
        if not stop_ids:
            raise EngineError("invalid_grammar", "a grammar needs stop_ids: the model must be able to end when it is complete")
        tokenizer = self._tokenizer(tuple(sorted(stop_ids)))
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if failed:
            raise EngineError("invalid_grammar", _reason(messages[0] if messages else "the grammar does not compile"))
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        if matcher.is_error():
            raise EngineError("invalid_grammar", _reason(matcher.get_error()))
        return Constraint(matcher, self.vocab)

    def _tokenizer(self, stop_ids):
        tokenizer = self.tokenizers.get(stop_ids)
        if tokenizer is None:
            try:
                with open(self.tokenizer_path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise EngineError("invalid_grammar", f"{self.tokenizer_path}: {e.strerror}") from None
            tokenizer = llguidance.LLTokenizer(text, n_vocab=self.vocab, eos_token=list(stop_ids))
            self.tokenizers[stop_ids] = tokenizer
        return tokenizer


def _reason(message):
    """llguidance's first line, without the Lark position: the schema keyword it could not compile."""
    line = message.strip().splitlines()[0] if message.strip() else message
    at = line.find(COMPILE_ERROR)
    return line[at + len(COMPILE_ERROR):] if at >= 0 else line


class Constraint:
    """One request's place in its grammar: the tokens allowed next (being computed on MASKS), and
    the tokens taken."""

    def __init__(self, matcher, vocab):
        self.matcher = matcher
        self.vocab = vocab
        self.allowed = MASKS.submit(matcher.compute_logit_bias)

    def mask(self, logits):
        """logits [vocab] (fp32, CPU) with every token the grammar forbids at -inf, in place.

        Done in numpy, on this thread: torch's `masked_fill_` over a 150k vocabulary is split over
        the OpenMP threads, and waking them costs more than the fill (bench/engine/README.md)."""
        allowed = np.frombuffer(self.allowed.result(), dtype=np.uint8)
        scores = logits.numpy()
        scores[: allowed.size][allowed == 0] = -np.inf
        scores[allowed.size:] = -np.inf

    def advance(self, token):
        # The matcher is touched only here and on MASKS, never at once: the mask was waited for
        # before the token was chosen.
        if not self.matcher.consume_token(token):
            raise EngineError("internal", f"the grammar refused token {token}: {self.matcher.get_error()}")
        self.allowed = MASKS.submit(self.matcher.compute_logit_bias)
