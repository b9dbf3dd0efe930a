"""python3 -m tunelab_engine {init,train,merge,gguf,gguf-lora,generate,serve,build-native} ...; see engine/README.md."""

import argparse
import os
import subprocess
import sys
import traceback

from . import runtime

runtime.prepare_threads()  # before torch loads OpenMP

import torch  # noqa: E402

from . import checkpoint, config, events, generate, lora, safetensors, spec as spec_mod, train  # noqa: E402
from .errors import EngineError  # noqa: E402
from .model import Transformer, build, init_weights  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cmd_init(args):
    cfg = config.load(args.config)
    model = Transformer(cfg)
    init_weights(model, args.seed, cfg.raw.get("initializer_range", 0.02))
    checkpoint.save_full_model(model, args.out, DTYPES[args.dtype])
    events.emit("done", path=os.path.abspath(args.out), parameters=sum(p.numel() for p in model.parameters()))


def cmd_train(args):
    return train.train(spec_mod.load(args.spec))


def cmd_merge(args):
    base_config = config.load(args.base)
    stored = DTYPES.get(base_config.torch_dtype, torch.float32)
    # Held in the base's dtype: each LoRA product is added to its weight in fp32 and rounded once
    # (lora.merged_weight), as merging in an fp32 copy of the whole model would, at a fraction of its time.
    model = build(base_config, safetensors.load_model(args.base), stored)
    lora.load_adapter(model, args.adapter)
    lora.merge(model)
    checkpoint.save_full_model(model, args.out, stored)
    checkpoint.copy_extras(args.base, args.out)
    events.emit("done", path=os.path.abspath(args.out))


def cmd_gguf(args):
    from . import gguf_export
    gguf_export.convert(args.model, args.out, args.outtype, args.converter)


def cmd_gguf_lora(args):
    from . import gguf_export
    gguf_export.convert_lora(args.adapter, args.base, args.out, args.outtype, args.converter)


def cmd_generate(args):
    runtime.use_threads()
    try:
        prompt = [int(x) for x in args.input_ids.split(",") if x.strip()]
        stop = [int(x) for x in args.stop_ids.split(",") if x.strip()] if args.stop_ids else []
    except ValueError:
        raise EngineError("invalid_request", "--input-ids and --stop-ids take comma-separated integers") from None
    if not prompt:
        raise EngineError("invalid_request", "--input-ids is empty")
    model = generate.load(args.model, args.adapter)
    vocab = model.config.vocab_size
    if any(i < 0 or i >= vocab for i in prompt):
        raise EngineError("invalid_request", f"--input-ids: ids must lie in 0..{vocab - 1}")
    out, reason = generate.generate(model, prompt, args.max_new_tokens, args.temperature, args.top_p, stop, args.seed)
    events.emit("generated", output_ids=out, finish_reason=reason)


def cmd_serve(args):
    from . import serve
    return serve.serve(args.model, args.max_batch, args.max_adapters, args.device, args.dtype)


def cmd_build_native(args):
    from . import native
    try:
        path = native.build()
    except (OSError, subprocess.CalledProcessError) as e:
        # Not an error: the engine runs without it, on torch's own products.
        lines = (getattr(e, "stderr", None) or str(e)).strip().splitlines()
        events.emit("native", built=False, runs_here=False, path=None, reason=lines[-1] if lines else type(e).__name__)
        return
    events.emit("native", built=True, runs_here=native.library(path) is not None, path=path, reason=None)


def parser():
    p = argparse.ArgumentParser(prog="python3 -m tunelab_engine")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a randomly initialized model folder")
    init.add_argument("--config", required=True, help="a Hugging Face config.json (or a folder holding one)")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--out", required=True)
    init.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    init.set_defaults(run=cmd_init)
    tr = sub.add_parser("train", help="train as spec.json says, streaming events")
    tr.add_argument("--spec", required=True)
    tr.set_defaults(run=cmd_train)
    merge = sub.add_parser("merge", help="fold a LoRA adapter into its base model")
    merge.add_argument("--base", required=True)
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--out", required=True)
    merge.set_defaults(run=cmd_merge)
    gguf = sub.add_parser("gguf", help="convert a model folder to GGUF with llama.cpp's converter")
    gguf.add_argument("--model", required=True)
    gguf.add_argument("--out", required=True, help="the .gguf file to write")
    gguf.add_argument("--outtype", default="f16", help="f16, bf16, q8_0 or f32")
    gguf.add_argument("--converter", required=True, help="the folder holding convert_hf_to_gguf.py, conversion/ and gguf-py/")
    gguf.set_defaults(run=cmd_gguf)

    gguf_lora = sub.add_parser("gguf-lora", help="convert a PEFT adapter to a GGUF LoRA adapter with llama.cpp's converter")
    gguf_lora.add_argument("--adapter", required=True, help="the PEFT adapter folder")
    gguf_lora.add_argument("--base", required=True, help="the base model folder (its config is read)")
    gguf_lora.add_argument("--out", required=True, help="the .gguf file to write")
    gguf_lora.add_argument("--outtype", default="f16", help="f16, bf16, q8_0 or f32")
    gguf_lora.add_argument("--converter", required=True, help="the folder holding convert_lora_to_gguf.py and gguf-py/")
    gguf_lora.set_defaults(run=cmd_gguf_lora)
    gen = sub.add_parser("generate", help="continue one prompt of token ids")
    gen.add_argument("--model", required=True)
    gen.add_argument("--adapter")
    gen.add_argument("--input-ids", required=True, help="comma-separated token ids")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--stop-ids", default="", help="comma-separated ids that end generation")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(run=cmd_generate)
    srv = sub.add_parser("serve", help="answer generate requests on stdin (JSON lines), batched, with a KV cache")
    srv.add_argument("--model", required=True)
    srv.add_argument("--max-batch", type=int, default=16, help="sequences decoded together; more wait")
    srv.add_argument("--max-adapters", type=int, default=8, help="LoRA adapters kept loaded")
    srv.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    srv.add_argument("--dtype", choices=["auto"] + sorted(DTYPES), default="auto",
                     help="auto: the config's torch_dtype on CUDA; on CPU bf16 for bf16 weights when the CPU has native bf16, else float32")
    srv.set_defaults(run=cmd_serve)
    nat = sub.add_parser("build-native", help="compile the engine's C kernels for this machine into the cache (tunelab setup runs it)")
    nat.set_defaults(run=cmd_build_native)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except EngineError as e:
        events.emit("error", code=e.code, message=e.message)
    except MemoryError:
        events.emit("error", code="out_of_memory", message="the host ran out of memory")
    except RuntimeError as e:
        traceback.print_exc()
        code = "out_of_memory" if "out of memory" in str(e) else "internal"
        events.emit("error", code=code, message=str(e).splitlines()[0] if str(e) else type(e).__name__)
    except Exception as e:
        traceback.print_exc()
        events.emit("error", code="internal", message=f"{type(e).__name__}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
