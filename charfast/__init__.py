"""charfast: fast character-aware token embeddings (a char-LSTM per BPE token).

The core library: TokenCharTable (token -> chars), CharEmbedding (the nn.Module) and
char_lstm (the op behind it, with its backends). The GPT app (charfast.gpt) and the study
(charfast.study) build on it; importing charfast loads neither.

The names below are imported on first use: `import charfast` itself loads nothing heavy,
so the command lines (python -m charfast.train ...) take charge of signals before torch
loads.
"""

import importlib

__all__ = ["TokenCharTable", "CharEmbedding", "char_lstm", "GPT", "GPTConfig"]
__version__ = "0.1.0"

# name -> the module that defines it; GPT and GPTConfig come from the GPT app.
_DEFINED_IN = {
    "TokenCharTable": "charfast.table",
    "CharEmbedding": "charfast.char_embedding",
    "char_lstm": "charfast.char_lstm_op",
    "GPT": "charfast.gpt",
    "GPTConfig": "charfast.gpt",
}


def __getattr__(name: str):
    if name in _DEFINED_IN:
        return getattr(importlib.import_module(_DEFINED_IN[name]), name)
    raise AttributeError(f"module 'charfast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_DEFINED_IN])
