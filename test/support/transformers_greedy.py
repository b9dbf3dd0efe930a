"""The referee: a model folder loaded by transformers, greedy answers to chat prompts.

argv: model folder, then a JSON list of conversations on stdin; prints a JSON list of answers.
With --adapter FOLDER the folder is a base model and PEFT applies the adapter on top.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
if len(sys.argv) > 3 and sys.argv[2] == "--adapter":
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, sys.argv[3])
model.eval()
answers = []
for messages in json.load(sys.stdin):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=64, do_sample=False)
    answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
print(json.dumps(answers, ensure_ascii=False))
