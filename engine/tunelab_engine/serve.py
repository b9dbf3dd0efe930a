"""The `serve` command: generation requests on stdin, token ids streamed back on stdout.

One model stays loaded. Requests (JSON lines, see engine/README.md) are decoded together
(decode.py): each step runs every active sequence through one batched forward of one new token per
row, so a step costs about the same weight reads for 8 rows as for 1. A new request is prefilled
alone between steps (its first token comes from the prefill's logits) and then joins the batch;
finished or cancelled ones leave between steps. LoRA adapters are loaded on demand by folder and
kept in an LRU (`adapters.py`). Each row's next token is its own Sampler's choice (sampling.py).

stdin is read on a thread that feeds a queue; the step loop blocks on that queue when idle.
"""

import collections
import json
import math
import os
import queue
import signal
import sys
import threading
import time
import traceback

import torch

from . import config as config_mod, events, runtime, safetensors
from .adapters import AdapterCache
from .decode import Decoder
from .errors import EngineError
from .grammar import GrammarCompiler
from .model import build
from .sampling import Sampler

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EOF = object()


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


class Request:
    __slots__ = ("id", "prompt", "adapter_dir", "adapter", "max_tokens", "temperature", "top_p", "seed",
                 "stop_ids", "presence", "frequency", "grammar", "constraint", "logprobs", "sampler", "generated",
                 "length", "pending")

    def __init__(self, rid, fields):
        self.id = rid
        self.prompt = fields["input_ids"]
        self.adapter_dir = fields["adapter"]
        self.adapter = None
        self.max_tokens = fields["max_tokens"]
        self.temperature = fields["temperature"]
        self.top_p = fields["top_p"]
        self.seed = fields["seed"]
        self.stop_ids = frozenset(fields["stop_ids"])
        self.presence = fields["presence_penalty"]
        self.frequency = fields["frequency_penalty"]
        self.grammar = fields["grammar"]
        self.constraint = None  # the grammar compiled (grammar.Constraint), on admission
        self.logprobs = fields["logprobs"]
        self.sampler = None
        self.generated = 0  # completion tokens sent
        self.length = 0  # tokens in the cache
        self.pending = None  # the last sampled token, fed at the next step


def validate(message, vocab, context_length):
    """The fields of a generate request, checked and defaulted; raises EngineError invalid_request."""

    def bad(text):
        raise EngineError("invalid_request", text)

    ids = message.get("input_ids")
    if not isinstance(ids, list) or not ids:
        bad("input_ids must be a non-empty list of token ids")
    if not all(_is_int(i) and 0 <= i < vocab for i in ids):
        bad(f"input_ids: every id must be an integer in 0..{vocab - 1}")
    if len(ids) >= context_length:
        bad(f"input_ids: the prompt has {len(ids)} tokens; the context holds {context_length}, so it must be shorter")
    adapter = message.get("adapter")
    if adapter is not None and (not isinstance(adapter, str) or not adapter):
        bad("adapter must be a folder path or null")
    max_tokens = message.get("max_tokens")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        bad("max_tokens must be an integer >= 1 (or null: up to the context length)")
    temperature = message.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not _is_number(temperature) or temperature < 0:
        bad("temperature must be a number >= 0")
    top_p = message.get("top_p", 1.0)
    if top_p is None:
        top_p = 1.0
    if not _is_number(top_p) or not 0 <= top_p <= 1:
        bad("top_p must be a number in [0, 1]")
    seed = message.get("seed")
    if seed is not None and not _is_int(seed):
        bad("seed must be an integer or null")
    stop_ids = message.get("stop_ids") or []
    if not isinstance(stop_ids, list) or not all(_is_int(i) for i in stop_ids):
        bad("stop_ids must be a list of integers")
    penalties = {}
    for name in ("presence_penalty", "frequency_penalty"):
        value = message.get(name, 0.0)
        value = 0.0 if value is None else value
        if not _is_number(value):
            bad(f"{name} must be a number")
        penalties[name] = float(value)
    grammar = message.get("grammar")
    if grammar is not None and (not isinstance(grammar, str) or not grammar):
        bad("grammar must be a Lark grammar (a string) or null")
    logprobs = message.get("logprobs")
    if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= 20):
        bad("logprobs must be an integer in 0..20 (alternatives per token) or null")
    return dict(input_ids=ids, adapter=adapter, max_tokens=max_tokens, temperature=float(temperature),
                top_p=float(top_p), seed=seed, stop_ids=stop_ids, grammar=grammar, logprobs=logprobs, **penalties)


class Server:
    """The protocol: messages in, events out, requests waiting and active."""

    def __init__(self, engine, max_adapters, max_batch, grammars=None, emit=events.emit):
        self.engine = engine
        self.grammars = grammars  # a GrammarCompiler for the model's tokenizer
        self.emit = emit
        self.vocab = engine.config.vocab_size
        self.context_length = engine.context_length
        self.max_batch = max_batch
        self.adapters = AdapterCache(engine, max_adapters)
        self.inbox = queue.Queue()
        self.waiting = collections.deque()
        self.active = []  # active[i] holds cache row i
        self.ids = set()  # waiting or active

    # -- input ---------------------------------------------------------------------------------
    def start_reader(self, fd):
        """Lines of file descriptor `fd` (as bytes) into the inbox, then EOF. Read with os.read, not
        through sys.stdin: a daemon thread blocked inside a buffered file's read holds its lock,
        and the interpreter's shutdown (after a fatal error) then aborts on it."""
        def read():
            pending = b""
            try:
                while True:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            self.inbox.put(line)
                if pending.strip():
                    self.inbox.put(pending)
            finally:
                self.inbox.put(EOF)

        threading.Thread(target=read, name="stdin", daemon=True).start()

    def handle(self, line):
        """One input line (str, or bytes as read from stdin, which must be UTF-8)."""
        shown = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()[:200]
        try:
            message = json.loads(line)
        except ValueError:  # UnicodeDecodeError included
            raise EngineError("invalid_request", f"stdin: not a JSON line: {shown}") from None
        if not isinstance(message, dict):
            raise EngineError("invalid_request", f"stdin: not a JSON object: {shown}")
        kind, rid = message.get("type"), message.get("id")
        if not isinstance(rid, str) or not rid:
            raise EngineError("invalid_request", f"stdin: a {kind!r} message without a string id: {shown}")
        if kind == "cancel":
            self.cancel(rid)
        elif kind == "generate":
            if rid in self.ids:
                self.emit("error", id=rid, code="invalid_request", message=f"id {rid!r} is already in use")
                return
            try:
                fields = validate(message, self.vocab, self.context_length)
            except EngineError as e:
                self.emit("error", id=rid, code=e.code, message=e.message)
                return
            self.waiting.append(Request(rid, fields))
            self.ids.add(rid)
        else:
            self.emit("error", id=rid, code="invalid_request", message=f"unknown message type {kind!r}")

    def cancel(self, rid):
        if rid not in self.ids:
            return
        for req in self.waiting:
            if req.id == rid:
                self.waiting.remove(req)
                self.finish(req, "cancelled")
                return
        for row, req in enumerate(self.active):
            if req.id == rid:
                self.leave(row)
                self.finish(req, "cancelled")
                return

    def drain(self, block):
        """Handles every queued message (waiting for one if `block`); False at end of input."""
        try:
            item = self.inbox.get() if block else self.inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if item is EOF:
                return False
            self.handle(item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return True

    # -- requests ------------------------------------------------------------------------------
    def finish(self, req, reason):
        self.ids.discard(req.id)
        self.emit("done", id=req.id, finish_reason=reason, prompt_tokens=len(req.prompt),
                  completion_tokens=req.generated)

    def fail(self, req, code, message):
        self.ids.discard(req.id)
        self.emit("error", id=req.id, code=code, message=message)

    def leave(self, row):
        """Frees cache row `row`: the last active row moves into it."""
        last = len(self.active) - 1
        if row != last:
            self.engine.cache.move_row(last, row, self.active[last].length)
            self.active[row] = self.active[last]
        self.active.pop()

    def accept(self, req, token):
        """Handles a sampled token; True while the request goes on."""
        if token in req.stop_ids:
            self.finish(req, "stop")
            return False
        req.generated += 1
        req.sampler.seen(token)
        self.emit("tokens", id=req.id, ids=[token], **req.sampler.report())
        if (req.max_tokens is not None and req.generated >= req.max_tokens) \
                or len(req.prompt) + req.generated >= self.context_length:
            self.finish(req, "length")
            return False
        req.pending = token
        return True

    def admit(self):
        while self.waiting and len(self.active) < self.max_batch:
            req = self.waiting.popleft()
            try:
                if req.adapter_dir is not None:
                    req.adapter = self.adapters.get(req.adapter_dir)
                if req.grammar is not None:
                    if self.grammars is None:
                        raise EngineError("invalid_grammar", "this server has no tokenizer for grammars")
                    req.constraint = self.grammars.matcher(req.grammar, req.stop_ids)
                req.sampler = Sampler(req, self.vocab, self.engine.device)
                row = len(self.active)
                self.engine.cache.reserve(row + 1, len(req.prompt) + 1)
                logits = self.engine.prefill(row, req.prompt, req.adapter)
            except EngineError as e:
                self.fail(req, e.code, e.message)
                continue
            except (RuntimeError, MemoryError) as e:
                traceback.print_exc()
                oom = isinstance(e, MemoryError) or "out of memory" in str(e) or "can't allocate memory" in str(e)
                self.fail(req, "out_of_memory" if oom else "internal", str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            req.length = len(req.prompt)
            token = req.sampler.sample(logits[None])[0]
            if self.accept(req, token):
                self.active.append(req)

    def step(self):
        engine = self.engine
        active = self.active
        lengths = [r.length for r in active]
        engine.cache.reserve(len(active), max(lengths) + 1)
        groups = collections.defaultdict(list)
        for row, r in enumerate(active):
            if r.adapter is not None:
                groups[id(r.adapter)].append(row)
        lora_rows = None
        if groups:
            lora_rows = []
            for rows in groups.values():
                adapter = active[rows[0]].adapter
                index = None if len(rows) == len(active) else torch.tensor(rows, device=engine.device)
                lora_rows.append((adapter, index))
        logits = engine.step([r.pending for r in active], lengths, lora_rows)
        tokens = Sampler.sample_rows([r.sampler for r in active], logits)
        keep = []
        for row, (req, token) in enumerate(zip(active, tokens)):
            req.length += 1
            if self.accept(req, token):
                keep.append(row)
        if len(keep) < len(active):
            # Finished rows leave; from the highest so the moved rows are ones that stay or are checked.
            for row in reversed(range(len(active))):
                if row not in keep:
                    self.leave(row)

    def run(self):
        while True:
            if not self.drain(block=not self.active and not self.waiting):
                return 0
            self.admit()
            if self.active:
                self.step()
            elif not self.waiting:
                self.engine.cache.release()


def _exit_now(signum, frame):
    sys.stdout.flush()
    os._exit(0)


def resolve(device_name, dtype_name, model_config):
    """(device, dtype) for --device and --dtype (see runtime.serving_dtype for auto)."""
    device = runtime.device(device_name, "invalid_request", "--device")
    if dtype_name == "auto":
        return device, runtime.serving_dtype(DTYPES.get(model_config.torch_dtype, torch.float32), device)
    if device.type == "cpu" and dtype_name == "float16":
        raise EngineError("invalid_request", "--dtype float16 is for CUDA; on CPU use float32 or bfloat16")
    return device, DTYPES[dtype_name]


def serve(model_dir, max_batch=16, max_adapters=8, device_name="auto", dtype_name="auto", stdin_fd=0):
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    if max_batch < 1 or max_adapters < 1:
        raise EngineError("invalid_request", "--max-batch and --max-adapters must be >= 1")
    runtime.use_threads()
    start = time.time()
    cfg = config_mod.load(model_dir)
    device, dtype = resolve(device_name, dtype_name, cfg)
    model = build(cfg, safetensors.load_model(model_dir), dtype, device).eval()
    engine = Decoder(model, max_batch)
    events.log(f"loaded {model_dir} ({sum(p.numel() for p in model.parameters()):,} parameters, {str(dtype).replace('torch.', '')}, {device}) "
               f"in {time.time() - start:.2f} s")
    server = Server(engine, max_adapters, max_batch, GrammarCompiler(model_dir, cfg.vocab_size))
    events.emit("ready", vocab_size=cfg.vocab_size, context_length=engine.context_length, device=device.type,
                dtype=str(dtype).replace("torch.", ""), max_batch=max_batch)
    server.start_reader(stdin_fd)  # bytes: bad UTF-8 makes a bad line, not the end of input
    try:
        with torch.inference_mode():
            return server.run()
    except BrokenPipeError:  # whoever read stdout is gone: nothing left to tell anyone
        os._exit(0)
