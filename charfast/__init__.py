"""charfast: fast character-aware token embeddings (a char-LSTM per BPE token)."""
from charfast.char_embedding import CharEmbedding
from charfast.char_lstm import char_lstm
from charfast.model import GPT, GPTConfig
from charfast.table import TokenCharTable

__all__ = ["TokenCharTable", "CharEmbedding", "char_lstm", "GPT", "GPTConfig"]
__version__ = "0.1.0"
