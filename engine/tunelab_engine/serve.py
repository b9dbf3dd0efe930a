"""The `serve` command: generation requests on stdin, token ids streamed back on stdout.

One model stays loaded. Requests (JSON lines, see engine/README.md) are decoded together: each step
runs every active sequence through one batched forward of one new token per row, reading the
earlier tokens' keys and values from a KV cache (`kv_cache.py`), so a step costs about the same
weight reads for 8 rows as for 1. A new request is prefilled alone between steps (its first token
comes from the prefill's logits) and then joins the batch; finished or cancelled ones leave between
steps. LoRA adapters are loaded on demand by folder, kept in an LRU, and applied per row beside the
frozen weights (`adapters.py`), so one batch mixes adapters and the base model.

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
import torch.nn.functional as F

from . import config as config_mod, events, safetensors, train
from .adapters import AdapterCache, apply_lora
from .errors import EngineError
from .grammar import GrammarCompiler
from .kv_cache import KVCache
from .model import HAS_SDPA, attention, attention_bias, build
from .sampling import Sampler

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PREFILL_CHUNK = 512  # prompt tokens a prefill forward takes at once
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


class LayerWeights:
    """One decoder layer's tensors, with q/k/v and gate/up as single matrices (the originals
    become views of them, so memory does not grow)."""

    def __init__(self, layer):
        attn, mlp = layer.self_attn, layer.mlp
        self.input_norm = layer.input_layernorm
        self.post_norm = layer.post_attention_layernorm
        self.q_norm = getattr(attn, "q_norm", None)
        self.k_norm = getattr(attn, "k_norm", None)
        self.qkv_w, self.qkv_b = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        self.qkv_sizes = [attn.q_proj.weight.shape[0], attn.k_proj.weight.shape[0], attn.v_proj.weight.shape[0]]
        self.o_w, self.o_b = attn.o_proj.weight, attn.o_proj.bias
        self.gu_w, self.gu_b = _fuse([mlp.gate_proj, mlp.up_proj])
        self.down_w, self.down_b = mlp.down_proj.weight, mlp.down_proj.bias


def _fuse(linears):
    weight = torch.cat([m.weight.detach() for m in linears])
    bias = torch.cat([m.bias.detach() for m in linears]) if linears[0].bias is not None else None
    start = 0
    for m in linears:
        size = m.weight.shape[0]
        m.weight.data = weight[start:start + size]
        if bias is not None:
            m.bias.data = bias[start:start + size]
        start += size
    return weight, bias


def _rope(x, cos, sin):
    """model.rope's arithmetic (transformers' x * cos + rotate_half(x) * sin) without the autograd
    Function around it."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def _rms_norm(x, norm):
    """model.RMSNorm's arithmetic (fp32: transformers' exactly; bf16: mean of squares in fp32)."""
    if x.dtype == torch.float32:
        return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps))
    scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True, dtype=torch.float32) + norm.eps).to(x.dtype)
    return norm.weight * (x * scale)


class Engine:
    """The model, the cache and the batched forward; no protocol here (see Server)."""

    def __init__(self, model, max_batch):
        self.model = model
        c = self.config = model.config
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.groups = self.heads // self.kv_heads
        self.window = c.sliding_window
        self.context_length = c.max_position_embeddings
        self.qk_norm = c.qk_norm
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers = [LayerWeights(layer) for layer in model.model.layers]
        self.embed_w = model.model.embed_tokens.weight
        self.final_norm = model.model.norm
        self.lm_head_w = model.lm_head.weight
        self.inv_freq = model.inv_freq.to(self.device)
        cpu = self.device.type == "cpu"
        # On CPU one row's products as matrix-vector products: about 1.3x the speed of F.linear's
        # [1, in] x [in, out] (decoding reads every weight once per step); see _linear.
        self.use_mv = cpu
        # On CPU the cached attention runs in fp32 (tiny bf16 bmm's are slow there; the cache of a
        # model small enough for CPU decoding is small); on CUDA in the model's dtype.
        self.attn_dtype = torch.float32 if cpu else self.dtype
        self.cache = KVCache(len(self.layers), self.kv_heads, self.head_dim, self.attn_dtype, self.device,
                             max_batch, self.context_length)

    def _linear(self, x, w, b):
        if self.use_mv:
            rows = x.numel() // x.shape[-1]
            if rows == 1:
                out = torch.mv(w, x.reshape(-1))
            elif rows <= 16 and w.dtype == torch.bfloat16:
                # W [out, in] @ x^T [in, rows], transposed back: ~15% faster than F.linear's
                # x @ W^T for a few rows of bf16 (oneDNN); slower for many rows, and for fp32.
                out = torch.mm(w, x.reshape(rows, -1).t()).t().contiguous()
            else:
                return F.linear(x, w, b)
            if b is not None:
                out += b
            return out.view(*x.shape[:-1], w.shape[0])
        return F.linear(x, w, b)

    def _angles(self, positions):
        # As Transformer.forward: fp32 angles, then cast.
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def _forward(self, ids, positions, lora_rows, attend, logits=True):
        """Last positions' logits [B, vocab] (fp32) for ids [B, T]; `attend(layer index, q, k, v)`
        stores k, v and returns the attention output [B, T, heads * head_dim]."""
        b, t = ids.shape
        heads, kv_heads, d = self.heads, self.kv_heads, self.head_dim
        q_size = heads * d
        qk_size = (heads + kv_heads) * d
        linear = self._linear
        x = F.embedding(ids, self.embed_w)
        cos, sin = self._angles(positions)
        for i, w in enumerate(self.layers):
            h = _rms_norm(x, w.input_norm)
            qkv = linear(h, w.qkv_w, w.qkv_b)
            if lora_rows:
                apply_lora(qkv, h, lora_rows, i, "qkv")
            v = qkv[..., qk_size:].view(b, t, kv_heads, d)
            if self.qk_norm:  # qwen3: each head normalized before rope
                q = _rope(_rms_norm(qkv[..., :q_size].view(b, t, heads, d), w.q_norm), cos, sin)
                k = _rope(_rms_norm(qkv[..., q_size:qk_size].view(b, t, kv_heads, d), w.k_norm), cos, sin)
            else:  # q and k side by side: one rope for both
                qk = _rope(qkv[..., :qk_size].view(b, t, heads + kv_heads, d), cos, sin)
                q, k = qk[:, :, :heads], qk[:, :, heads:]
            out = attend(i, q, k, v)
            o = linear(out, w.o_w, w.o_b)
            if lora_rows:
                apply_lora(o, out, lora_rows, i, "o")
            x = x + o
            h = _rms_norm(x, w.post_norm)
            gu = linear(h, w.gu_w, w.gu_b)
            if lora_rows:
                apply_lora(gu, h, lora_rows, i, "gate_up")
            gate, up = gu.chunk(2, dim=-1)
            # silu(gate) * up; for bf16 as sigmoid products (CPU's bf16 silu kernel is ~3x slower)
            m = F.silu(gate).mul_(up) if gate.dtype == torch.float32 else torch.sigmoid(gate).mul_(gate).mul_(up)
            down = linear(m, w.down_w, w.down_b)
            if lora_rows:
                apply_lora(down, m, lora_rows, i, "down")
            x = x + down
        if not logits:
            return None
        x = _rms_norm(x[:, -1], self.final_norm)
        return linear(x, self.lm_head_w, None).float()

    def prefill(self, row, prompt, adapter):
        """Runs `prompt` alone, storing its keys and values in cache row `row`; its last logits [vocab].

        In pieces of PREFILL_CHUNK tokens, each attending to the cache so far and causally within
        itself, so a long prompt never builds a [heads, T, T] score tensor."""
        lora_rows = [(adapter, None)] if adapter is not None else None
        cache, device = self.cache, self.device
        for start in range(0, len(prompt), PREFILL_CHUNK):
            piece = prompt[start:start + PREFILL_CHUNK]
            n, end = len(piece), start + len(piece)
            ids = torch.tensor([piece], dtype=torch.int64, device=device)
            positions = torch.arange(start, end, device=device)[None]
            if start == 0:
                mask = self.model.attention_mask(None, n, device)  # None: plain causal
            else:
                query_pos = positions[0, :, None]
                key_pos = torch.arange(end, device=device)[None, :]
                mask = key_pos <= query_pos
                if self.window is not None:
                    mask &= query_pos - key_pos < self.window
                mask = mask[None, None]
            # The first piece attends to its own k and v as computed (the model's dtype); later
            # ones to the cache (attn_dtype).
            dtype = self.dtype if start == 0 else self.attn_dtype
            if not HAS_SDPA:
                mask = attention_bias(mask, n, end, dtype, device)

            def attend(i, q, k, v, start=start, n=n, end=end, mask=mask, dtype=dtype):
                cache.write_prefix(i, row, start, k[0], v[0])
                if start == 0:
                    keys, values = k.transpose(1, 2), v.transpose(1, 2)
                else:
                    keys, values = (z[None] for z in cache.prefix(i, row, end))
                out = attention(q.transpose(1, 2).to(dtype), keys, values, mask)
                return out.transpose(1, 2).reshape(1, n, self.heads * self.head_dim).to(self.dtype)

            logits = self._forward(ids, positions, lora_rows, attend, logits=end == len(prompt))
        return logits[0]

    def decode(self, tokens, lengths, lora_rows):
        """One step for cache rows 0..B-1: tokens[i] sits at position lengths[i]; logits [B, vocab]."""
        b = len(tokens)
        ids = torch.tensor(tokens, dtype=torch.int64, device=self.device)[:, None]
        pos = torch.tensor(lengths, dtype=torch.int64, device=self.device)
        span = max(lengths) + 1
        keys = torch.arange(span, device=self.device)
        allowed = keys[None, :] <= pos[:, None]
        if self.window is not None:
            allowed &= pos[:, None] - keys[None, :] < self.window
        # [B, 1, 1, span]: broadcast over kv heads and the query heads sharing each
        bias = torch.zeros(allowed.shape, dtype=self.attn_dtype, device=self.device)
        bias = bias.masked_fill_(~allowed, float("-inf"))[:, None, None, :]
        rows = torch.arange(b, device=self.device)
        cache = self.cache
        scale = self.head_dim ** -0.5
        kvh, groups, d = self.kv_heads, self.groups, self.head_dim
        dtype, attn_dtype = self.dtype, self.attn_dtype

        def attend(i, q, k, v):
            keys_i, values_i = cache.write_step(i, rows, pos, k[:, 0].to(attn_dtype), v[:, 0].to(attn_dtype), span)
            qg = (q.to(attn_dtype) * scale).reshape(b * kvh, groups, d)
            scores = torch.bmm(qg, keys_i.reshape(b * kvh, span, d).transpose(1, 2))
            scores = scores.view(b, kvh, groups, span) + bias
            probs = torch.softmax(scores, dim=-1).view(b * kvh, groups, span)
            out = torch.bmm(probs, values_i.reshape(b * kvh, span, d)).view(b, 1, self.heads * d)
            return out.to(dtype)

        return self._forward(ids, pos[:, None], lora_rows, attend)


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
        logits = engine.decode([r.pending for r in active], lengths, lora_rows)
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
    """(device, dtype). device auto: cuda when available. dtype auto: on CUDA the config's
    torch_dtype; on CPU bf16 when the weights are stored in bf16 and the CPU computes in bf16
    natively (AVX512-BF16 or AMX: decoding reads every weight once per step, and bf16 halves
    those reads), else fp32."""
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("invalid_request", f"--device {device_name}: CUDA is not available")
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise EngineError("invalid_request", f"--device {device_name!r}: not a device (auto, cpu, cuda, cuda:N)") from None
    if dtype_name != "auto":
        dtype = DTYPES[dtype_name]
        if device.type == "cpu" and dtype == torch.float16:
            raise EngineError("invalid_request", "--dtype float16 is for CUDA; on CPU use float32 or bfloat16")
        return device, dtype
    stored = DTYPES.get(model_config.torch_dtype, torch.float32)
    if device.type == "cuda":
        if stored == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            stored = torch.float16
        return device, stored
    return device, torch.bfloat16 if stored == torch.bfloat16 and train.cpu_has_bf16() else torch.float32


def serve(model_dir, max_batch=16, max_adapters=8, device_name="auto", dtype_name="auto", stdin_fd=0):
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    if max_batch < 1 or max_adapters < 1:
        raise EngineError("invalid_request", "--max-batch and --max-adapters must be >= 1")
    torch.set_num_threads(train.cpu_count())
    start = time.time()
    cfg = config_mod.load(model_dir)
    device, dtype = resolve(device_name, dtype_name, cfg)
    model = build(cfg, safetensors.load_model(model_dir), dtype, device).eval()
    engine = Engine(model, max_batch)
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
