"""The referee for template parity: transformers' own apply_chat_template on the same files.

Reads one JSON object on stdin, {"trl_templates": [names]} for the templates TRL stores, or: {"tokenizer": folder, "template": str|null, "training_template": str|null,
"cases": [{"messages", "tools", "add_generation_prompt"}]}; writes one JSON object: per case the rendered
text, its ids, and, where a training template with generation markers renders the same text, the
assistant mask transformers computes from it.
"""
import json
import sys

from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer

request = json.load(sys.stdin)
if "trl_templates" in request:
    # TRL keeps the chat templates of the model families it supports, byte for byte as the hub ships them.
    from importlib.resources import files

    folder = files("trl") / "chat_templates"
    json.dump({name: (folder / f"{name}.jinja").read_text(encoding="utf-8") for name in request["trl_templates"]}, sys.stdout)
    sys.exit(0)


def judge(family):
    tokenizer = AutoTokenizer.from_pretrained(family["tokenizer"], clean_up_tokenization_spaces=False)
    training = family.get("training_template")
    results = []
    for pair in family.get("pairs", []):
        # As TRL tokenizes a prompt-completion example: the whole text, the prompt's share untrained, then EOS.
        ids = tokenizer(pair["prompt"] + pair["completion"]).input_ids + [tokenizer.eos_token_id]
        results.append({"ids": ids, "prompt_length": len(tokenizer(pair["prompt"]).input_ids)})
    for case in family.get("cases", []):
        common = dict(tools=case.get("tools"), add_generation_prompt=case["add_generation_prompt"], enable_thinking=False)
        try:
            text = tokenizer.apply_chat_template(case["messages"], tokenize=False, **common)
        except TemplateError as error:
            results.append({"error": str(error)})
            continue
        ids = tokenizer.apply_chat_template(case["messages"], tokenize=True, return_dict=True, **common)["input_ids"]
        result = {"text": text, "ids": list(ids), "mask": None, "pieces": [tokenizer.decode([i]) for i in ids]}
        if training and not case["add_generation_prompt"]:
            marked_text = tokenizer.apply_chat_template(case["messages"], tokenize=False, chat_template=training, **common)
            if marked_text == text:
                marked = tokenizer.apply_chat_template(
                    case["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=training, **common
                )
                result["mask"] = list(marked["assistant_masks"])
        results.append(result)
    return results


json.dump([judge(family) for family in request["families"]], sys.stdout)
