"""charfast: fast character-aware token embeddings (a char-LSTM per BPE token).

The core library: TokenCharTable (token -> chars), CharEmbedding (the nn.Module) and
char_lstm (the op behind it, with its backends). The GPT app (charfast.gpt) and the study
(charfast.study) build on it; importing charfast loads neither.
"""

from charfast.char_embedding import CharEmbedding
from charfast.char_lstm import char_lstm
from charfast.table import TokenCharTable

__all__ = ["TokenCharTable", "CharEmbedding", "char_lstm", "GPT", "GPTConfig"]
__version__ = "0.1.0"

# The GPT app's classes, re-exported for `from charfast import GPT, GPTConfig` but imported
# only when asked for: `import charfast` loads the core alone.
_FROM_GPT = ("GPT", "GPTConfig")


def __getattr__(name: str):
    if name in _FROM_GPT:
        from charfast import gpt

        return getattr(gpt, name)
    raise AttributeError(f"module 'charfast' has no attribute {name!r}")
