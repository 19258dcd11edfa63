"""The GPT app: a nanoGPT-style model (baseline or char-aware) and its training CLI,
`python -m charfast.train`. Built on the core (charfast.CharEmbedding); the core never
imports it."""

from charfast.gpt.model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
