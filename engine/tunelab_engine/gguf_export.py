"""A model folder to one GGUF file through llama.cpp's own converter (convert_hf_to_gguf.py).

The converter is not ours and not vendored: `tunelab setup --export` unpacks it from the pinned
llama-cpp-python sdist into a folder the caller names (`--converter`). We call its `main()` as
its command line would, with one addition: llama.cpp names a BPE tokenizer's pre-tokenizer by
hashing the ids of a test string, which only works for tokenizers published on the Hugging Face
hub. A tokenizer of our own (tunelab-tiny's) that splits text with exactly the regex of one of
llama.cpp's known pre-tokenizers is given that name; any other unknown tokenizer still fails as
the converter fails. The export check afterwards proves the ids llama.cpp tokenizes to equal ours.
"""

import json
import os
import runpy
import sys

from . import events
from .errors import EngineError

OUTTYPES = ("f16", "bf16", "q8_0", "f32")

# llama.cpp's pre-tokenizer names for split regexes it implements (src/llama-vocab.cpp), as
# tokenizer.json files spell them.
KNOWN_SPLITS = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}


def split_regexes(tokenizer_json):
    """The Split pre-tokenizer regexes of a tokenizer.json, in order."""
    found = []

    def visit(node):
        if isinstance(node, dict):
            if node.get("type") == "Split" and isinstance(node.get("pattern"), dict) and "Regex" in node["pattern"]:
                found.append(node["pattern"]["Regex"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(tokenizer_json.get("pre_tokenizer"))
    return found


def known_pre_tokenizer(model_dir):
    path = os.path.join(model_dir, "tokenizer.json")
    try:
        with open(path, encoding="utf-8") as f:
            regexes = split_regexes(json.load(f))
    except (OSError, ValueError):
        return None
    return KNOWN_SPLITS.get(regexes[0]) if len(regexes) == 1 else None


def _load_converter(converter_dir, script_name, outtype):
    """Puts llama.cpp's converter (and its gguf-py) on the import path, after checking it is there."""
    if outtype not in OUTTYPES:
        raise EngineError("invalid_request", f"--outtype must be one of {', '.join(OUTTYPES)}")
    script = os.path.join(converter_dir, script_name)
    if not os.path.isfile(script):
        raise EngineError("converter_missing", f"{script} does not exist: run `tunelab setup --export`")
    sys.path[:0] = [converter_dir, os.path.join(converter_dir, "gguf-py")]


def _run_main(main, argv, out_file):
    """A converter's main() as its command line would run it."""
    sys.argv = argv
    try:
        main()
    except SystemExit as e:
        if e.code:
            raise EngineError("conversion_failed", f"llama.cpp's {argv[0]} exited with {e.code}; see its log") from None
    events.emit("done", path=os.path.abspath(out_file), bytes=os.path.getsize(out_file))


def convert(model_dir, out_file, outtype, converter_dir):
    _load_converter(converter_dir, "convert_hf_to_gguf.py", outtype)
    import convert_hf_to_gguf
    from conversion import base

    hashed = base.TextModel.get_vocab_base_pre

    def pre_tokenizer(self, tokenizer):
        try:
            return hashed(self, tokenizer)
        except NotImplementedError:
            name = known_pre_tokenizer(model_dir)
            if name is None:
                raise EngineError("unsupported_tokenizer",
                                  "llama.cpp's converter does not recognize this model's BPE pre-tokenizer") from None
            return name

    base.TextModel.get_vocab_base_pre = pre_tokenizer
    _run_main(convert_hf_to_gguf.main, ["convert_hf_to_gguf.py", model_dir, "--outtype", outtype, "--outfile", out_file], out_file)


def convert_lora(adapter_dir, base_dir, out_file, outtype, converter_dir):
    """A PEFT adapter folder to a GGUF LoRA adapter for the base's GGUF, by llama.cpp's convert_lora_to_gguf.py."""
    _load_converter(converter_dir, "convert_lora_to_gguf.py", outtype)
    script = os.path.join(converter_dir, "convert_lora_to_gguf.py")
    argv = ["convert_lora_to_gguf.py", "--base", base_dir, "--outtype", outtype, "--outfile", out_file, adapter_dir]
    # Its command line is its `if __name__ == "__main__":` block, not a main().
    _run_main(lambda: runpy.run_path(script, run_name="__main__"), argv, out_file)
