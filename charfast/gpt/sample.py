"""Text from a trained GPT: encode a prompt, sample new tokens, decode them."""

from __future__ import annotations

import torch

from charfast.gpt.bpe import END_OF_TEXT
from charfast.gpt.model import GPT, mixed_precision


def sample_text(model: GPT, encoding, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None) -> str:
    """The prompt (a document start when empty) continued by `max_new_tokens` sampled tokens,
    decoded without <|endoftext|> separators."""
    eot = encoding.encode_single_token(END_OF_TEXT) if END_OF_TEXT in encoding.special_tokens_set else None
    ids = encoding.encode_ordinary(prompt) if prompt else [eot if eot is not None else 0]
    device = next(model.parameters()).device
    model.eval()
    with mixed_precision(device):
        out = model.generate(torch.tensor([ids], device=device), max_new_tokens, temperature=temperature, top_k=top_k)
    return encoding.decode([t for t in out[0].tolist() if t != eot], errors="replace")
