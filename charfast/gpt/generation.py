"""Autoregressive generation for the GPT: a cache that makes each new token cost one
position's forward, and the sampling loop.

Dimensions: B batch, T new positions, H heads, D head width, L cached positions, V vocab.

With the cache, the prompt is run once (prefill) and every new token attends to the
cached keys and values of all earlier positions. The positions of a GPT with learned
position embeddings end at block_size: when the window is full, the cache restarts from
the newer half of it, so the context then holds between block_size / 2 and block_size
tokens (recomputing the whole prefix slides the window one token at a time instead;
both are exact while the sequence fits in block_size).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.nn import functional as F


class GenerationCache:
    """What an incremental forward reuses between calls.

    keys, values  per layer [B, H, block_size, D], filled up to `length`
    token_table   [V, C] the input embedding of every id without its position (the
                  char or matched embedding folded into wte once), or None
    """

    def __init__(self, n_layer: int, block_size: int, token_table: torch.Tensor | None = None):
        self.block_size = block_size
        self.token_table = token_table
        self.length = 0  # positions cached
        self._keys: list[torch.Tensor | None] = [None] * n_layer
        self._values: list[torch.Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store `layer`'s k, v [B, H, T, D] of the new positions after the cached ones;
        return that layer's keys and values of every position so far, [B, H, length + T, D]."""
        end = self.length + k.shape[2]
        if end > self.block_size:
            raise ValueError(f"GenerationCache: {end} positions exceed block_size {self.block_size}")
        if self._keys[layer] is None:
            shape = (*k.shape[:2], self.block_size, k.shape[3])
            self._keys[layer] = k.new_empty(shape)
            self._values[layer] = v.new_empty(shape)
        keys, values = self._keys[layer], self._values[layer]
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n_positions: int) -> None:
        """Called once every layer has stored the new positions."""
        self.length += n_positions

    def reset(self) -> None:
        self.length = 0


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    """A ValueError naming the argument when a sampling setting is out of range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature >= 0  # also rejects NaN
        or temperature == float("inf")
    ):
        raise ValueError(f"generate: temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive int or None, got {top_k!r}")


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """The next id [B, 1] from the last position's logits [B, V]: the most likely one at
    temperature 0 (or one too small for the logits' dtype), else drawn from
    softmax(logits / temperature) over the top_k most likely."""
    # A temperature the logits' dtype cannot hold (it would divide by 0) is greedy's limit.
    if temperature < torch.finfo(logits.dtype).tiny:
        return logits.argmax(dim=-1, keepdim=True)
    # Shifted so the largest is 0 first: a tiny temperature then sends the others to -inf
    # (greedy in the limit) instead of every logit to +-inf and the softmax to NaN.
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


@torch.no_grad()  # applies to every step of the generator
def new_tokens(
    model, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None, use_cache: bool
) -> Iterator[torch.Tensor]:
    """Each new token [B, 1] after the prompt idx [B, T0], as soon as it is chosen."""
    block = model.config.block_size
    sequence = idx  # [B, T0 + generated]
    if not use_cache:
        for _ in range(max_new_tokens):
            logits = model(sequence[:, -block:])[0][:, -1].float()  # [B, V]
            next_id = sample_next(logits, temperature, top_k)
            sequence = torch.cat([sequence, next_id], dim=1)
            yield next_id
        return
    cache = GenerationCache(model.config.n_layer, block, token_table=model.token_table())
    pending = sequence[:, -block:]  # tokens whose keys and values are not cached yet
    for _ in range(max_new_tokens):
        if cache.length + pending.shape[1] > block:  # the window is full: restart from its newer half
            cache.reset()
            pending = sequence[:, -max(1, block // 2) :]
        logits = model(pending, cache=cache)[0][:, -1].float()  # [B, V]
        next_id = sample_next(logits, temperature, top_k)
        sequence = torch.cat([sequence, next_id], dim=1)
        pending = next_id
        yield next_id
