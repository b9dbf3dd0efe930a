"""tunelab's engine: Llama-family models, LoRA and full fine-tuning, on ids the server tokenized."""
