"""Hugging Face transformers: a char-aware model that saves and loads like any other.

    from charfast.hf import add_char_embedding, from_pretrained

    model = add_char_embedding(model, table)      # any model with get/set_input_embeddings
    model.save_pretrained(path)                   # weights, the table and its settings
    model = from_pretrained(path)                 # in a fresh process: nothing rebuilt by hand

add_char_embedding replaces the model's input embedding by a CharAwareEmbedding: an
nn.Embedding whose weight *is* the old one (so weight tying, resize and every state-dict
key stay as they were) and whose output gains charfast's CharEmbedding of the same ids.
The token -> chars table is saved with the weights (two integer buffers) and the
CharEmbedding's sizes in config.json under "charfast"; from_pretrained builds the model's
own class with the embedding already in place, and loads everything.

Imports transformers, unlike the rest of the core: `import charfast` never loads this module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from charfast.char_embedding import CharEmbedding
from charfast.table import TokenCharTable

CONFIG_KEY = "charfast"  # the CharEmbedding's settings in the model's config


class CharAwareEmbedding(nn.Embedding):
    """A token embedding plus the CharEmbedding of the same ids. Its `weight` is the token
    embedding's Parameter itself; table_chars [V, W] and table_lengths [V] (buffers, kept on
    the CPU) hold the char table so it is saved and loaded with the weights."""

    def __init__(self, token_embedding: nn.Embedding, char_embedding: CharEmbedding):
        super().__init__(
            token_embedding.num_embeddings,
            token_embedding.embedding_dim,
            padding_idx=token_embedding.padding_idx,
            _weight=token_embedding.weight.detach(),  # no new storage: replaced just below
        )
        self.weight = token_embedding.weight  # the same Parameter: a tied output layer stays tied
        self.char_embedding = char_embedding
        table = char_embedding.table
        self.register_buffer("table_chars", table.chars)
        self.register_buffer("table_lengths", table.lengths)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self._use_loaded_table()
        token = F.embedding(input_ids, self.weight, self.padding_idx, self.max_norm, self.norm_type)
        return token + self.char_embedding(input_ids)

    def _use_loaded_table(self) -> None:
        """Point the char embedding's table at the buffers when loading replaced them (the
        table's version mechanism then checks and uses them; an in-place load it sees too)."""
        table = self.char_embedding.table
        if table.chars is not self.table_chars or table.lengths is not self.table_lengths:
            table.chars, table.lengths = self.table_chars, self.table_lengths

    def _apply(self, fn, recurse=True):
        # The table stays on the CPU (the backends keep their own device copies of it).
        table = {name: self._buffers.pop(name) for name in ("table_chars", "table_lengths")}
        try:
            return super()._apply(fn, recurse)
        finally:
            self._buffers.update(table)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, + char embedding"


def add_char_embedding(model, table: TokenCharTable, **char_embedding_kwargs):
    """`model` (a transformers PreTrainedModel) with its input embedding made char-aware:
    CharEmbedding(table, d_model=the embedding width, **char_embedding_kwargs) is added to
    every id's token embedding. The settings go into model.config, so save_pretrained and
    this module's from_pretrained bring the model back as it is. Returns the model."""
    token_embedding = model.get_input_embeddings()
    if isinstance(token_embedding, CharAwareEmbedding):
        raise ValueError("add_char_embedding: the model's input embedding is char-aware already")
    if not isinstance(token_embedding, nn.Embedding):
        raise TypeError(
            "add_char_embedding: the model's input embedding must be an nn.Embedding, "
            f"got {type(token_embedding).__name__}"
        )
    if table.vocab_size != token_embedding.num_embeddings:
        raise ValueError(
            f"add_char_embedding: the table covers {table.vocab_size} ids but the model embeds "
            f"{token_embedding.num_embeddings}; build it from the model's tokenizer (pad with table.padded)"
        )
    char_embedding = CharEmbedding(table, token_embedding.embedding_dim, **char_embedding_kwargs)
    char_embedding.to(device=token_embedding.weight.device, dtype=token_embedding.weight.dtype)
    model.set_input_embeddings(CharAwareEmbedding(token_embedding, char_embedding))
    lstm = char_embedding.lstm
    setattr(
        model.config,
        CONFIG_KEY,
        {
            "char_dim": lstm.input_size,
            "hidden": lstm.hidden_size,
            "n_chars": table.n_chars,
            "vocab_size": table.vocab_size,
            "max_len": table.max_len,
            "table_name": table.name,
            "backend": char_embedding.backend,
        },
    )
    return model


def from_pretrained(path, model_class=None, **kwargs):
    """A model saved by save_pretrained after add_char_embedding, char embedding and all.
    model_class: the transformers class to load (default: AutoModelForCausalLM's class for
    the saved config); kwargs go to its from_pretrained."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(path)
    settings = getattr(config, CONFIG_KEY, None)
    if not isinstance(settings, dict):
        raise ValueError(
            f"charfast.hf.from_pretrained: {path} holds no char-aware model (no {CONFIG_KEY!r} in its config)"
        )
    base = model_class or MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]

    # A placeholder table of the saved shape (every token empty), whose buffers loading fills.
    # Built here: transformers creates the model with every new tensor on the meta device.
    chars = torch.zeros(settings["vocab_size"], settings["max_len"], dtype=torch.int32)
    placeholder = TokenCharTable(chars, chars[:, 0], settings["n_chars"], name=settings["table_name"])

    def __init__(self, config, *args, **init_kwargs):
        base.__init__(self, config, *args, **init_kwargs)
        add_char_embedding(
            self, placeholder, char_dim=settings["char_dim"], hidden=settings["hidden"], backend=settings["backend"]
        )

    char_aware = type(f"CharAware{base.__name__}", (base,), {"__init__": __init__})
    return char_aware.from_pretrained(path, config=config, **kwargs)
