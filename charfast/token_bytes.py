"""The bytes of every token of a tiktoken Encoding, and a digest that identifies them.

Duck-typed on the Encoding (n_vocab, special_tokens_set, encode_single_token,
decode_single_token_bytes), so this module does not import tiktoken.
"""

from __future__ import annotations

import hashlib


def token_bytes(encoding) -> list[bytes | None]:
    """Every id's bytes in [0, n_vocab); None for special tokens and for unused ids."""
    special_ids = {encoding.encode_single_token(s) for s in encoding.special_tokens_set}
    out: list[bytes | None] = []
    for token_id in range(encoding.n_vocab):
        try:
            out.append(None if token_id in special_ids else encoding.decode_single_token_bytes(token_id))
        except KeyError:  # an id the encoding does not use
            out.append(None)
    return out


def token_bytes_digest(tokens: list[bytes | None]) -> str:
    """SHA-256 of a token_bytes() list (length-prefixed, so no two lists collide by concatenation)."""
    digest = hashlib.sha256()
    for b in tokens:
        digest.update(b"\xff\xff" if b is None else len(b).to_bytes(2, "little") + b)
    return digest.hexdigest()
