"""Text from a GPT, piece by piece as its tokens are generated (for charfast.sample, the
samples a training run draws, and anyone holding a model and its tokenizer)."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import torch

from charfast.gpt.bpe import end_of_text_id
from charfast.gpt.model import GPT


def prompt_ids(encoding, prompt: str) -> list[int]:
    """The prompt's tokens (a document start when empty); a ValueError when the tokenizer
    cannot encode it exactly (tiktoken would silently replace what UTF-8 cannot hold)."""
    if not prompt:
        eot = end_of_text_id(encoding)
        return [eot if eot is not None else 0]
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"--prompt: character {err.start} ({prompt[err.start]!r}) is not valid text "
            "(an undecodable byte in the command line?); the tokenizer cannot encode it"
        ) from err
    ids = encoding.encode_ordinary(prompt)
    if encoding.decode(ids) != prompt:
        raise ValueError("--prompt: the tokenizer cannot encode this text exactly")
    return ids


def decoded_pieces(encoding, tokens: Iterator[int]) -> Iterator[str]:
    """Text of each new token as soon as it completes a character (a token may end inside a
    multi-byte UTF-8 character); <|endoftext|> is left out."""
    eot = end_of_text_id(encoding)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        if token != eot:
            yield decoder.decode(encoding.decode_single_token_bytes(token))
    yield decoder.decode(b"", final=True)


def stream_sample(
    model: GPT, encoding, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None
) -> Iterator[str]:
    """The text of the new tokens after `prompt`, piece by piece as they are generated."""
    device = next(model.parameters()).device
    idx = torch.tensor([prompt_ids(encoding, prompt)], device=device)
    model.eval()

    def token_ids() -> Iterator[int]:
        for token in model.generate_stream(idx, max_new_tokens, temperature=temperature, top_k=top_k):
            yield int(token)

    return decoded_pieces(encoding, token_ids())
