"""Hugging Face transformers: a char-aware model that saves and loads like any other.

    from charfast.hf import add_char_embedding, from_pretrained

    model = add_char_embedding(model, table)      # any model with get/set_input_embeddings
    model.save_pretrained(path)                   # weights, the table and its settings
    model = from_pretrained(path)                 # in a fresh process: nothing rebuilt by hand
    save_folded(model, served)                    # a plain model of the family's own class: no charfast

add_char_embedding replaces the model's input embedding by a CharAwareEmbedding: an
nn.Embedding whose weight *is* the old one (so weight tying, resize and every state-dict
key stay as they were) and whose output gains charfast's CharEmbedding of the same ids.
The token -> chars table is saved with the weights (two integer buffers) and the
CharEmbedding's sizes in config.json under "charfast"; from_pretrained builds the model's
own class with the embedding already in place, and loads everything.

Imports transformers, unlike the rest of the core: `import charfast` never loads this module.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from charfast.char_embedding import CharEmbedding
from charfast.table import TokenCharTable

CONFIG_KEY = "charfast"  # the CharEmbedding's settings in the model's config


class CharAwareEmbedding(nn.Embedding):
    """A token embedding plus the CharEmbedding of the same ids. Its `weight` is the token
    embedding's Parameter itself; table_chars [V, W] and table_lengths [V] (buffers, kept on
    the CPU) hold the char table so it is saved and loaded with the weights.

    The buffers always describe the char embedding's table: a table assigned to
    `char_embedding.table` is taken as it is (never written to), loading a state dict gives
    the char embedding a new table of the loaded tensors (never copied into a caller's
    table), and a resize of the token embedding (transformers' resize_token_embeddings sets
    num_embeddings) pads the table with empty rows or cuts it to the new size."""

    def __init__(self, token_embedding: nn.Embedding, char_embedding: CharEmbedding, settings: dict):
        super().__init__(
            token_embedding.num_embeddings,
            token_embedding.embedding_dim,
            padding_idx=token_embedding.padding_idx,
            _weight=token_embedding.weight.detach(),  # no new storage: replaced just below
        )
        self.weight = token_embedding.weight  # the same Parameter: a tied output layer stays tied
        self.char_embedding = char_embedding
        self.settings = settings  # the model config's charfast settings: the table's size is kept there
        self._take_table(char_embedding.table)
        # A table assigned to the char embedding becomes the buffers at once, so every read
        # (state_dict, save_pretrained and its config.json, named_buffers) sees it.
        char_embedding.table_listeners.append(self._take_table)

    @property
    def num_embeddings(self) -> int:
        return self.__dict__["_num_embeddings"]

    @num_embeddings.setter
    def num_embeddings(self, value: int) -> None:
        self.__dict__["_num_embeddings"] = value
        char_embedding = self._modules.get("char_embedding") if "_modules" in self.__dict__ else None
        if char_embedding is not None and char_embedding.table.vocab_size != value:  # a resize
            table = char_embedding.table
            if value > table.vocab_size:
                resized = table.padded(value, allow=value - table.vocab_size)
            else:
                resized = TokenCharTable(table.chars[:value], table.lengths[:value], table.n_chars, name=table.name)
            char_embedding.table = resized  # its listener, _take_table, makes it the buffers

    def _take_table(self, table: TokenCharTable) -> None:
        """Make the buffers `table`'s tensors (shared, not copied) and remember that they are."""
        if table.vocab_size != self.num_embeddings:
            raise ValueError(
                f"CharAwareEmbedding: the table covers {table.vocab_size} ids but the model embeds "
                f"{self.num_embeddings}; build it from the model's tokenizer (pad with table.padded)"
            )
        self.register_buffer("table_chars", table.chars)
        self.register_buffer("table_lengths", table.lengths)
        self._buffers_of = (table, table.chars, table.lengths)
        self.settings.update(vocab_size=table.vocab_size, max_len=table.max_len, n_chars=table.n_chars)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self._sync_table_and_buffers()
        token = F.embedding(input_ids, self.weight, self.padding_idx, self.max_norm, self.norm_type)
        return token + self.char_embedding(input_ids)

    def _sync_table_and_buffers(self) -> None:
        """Buffers a load replaced become the char embedding's new table (loads copy or set
        the buffers one by one; the table follows when the load ends, or at the next forward)."""
        table, chars, lengths = self._buffers_of
        if self._buffers["table_chars"] is not chars or self._buffers["table_lengths"] is not lengths:
            loaded = TokenCharTable(self._buffers["table_chars"], self._buffers["table_lengths"], table.n_chars,
                                    name=table.name)  # fmt: skip
            self.char_embedding.table = loaded  # the listener takes it as the buffers

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Loading copies into the buffers in place; they may be a caller's table's tensors,
        # so they are replaced by fresh ones first (the next forward builds a table of them).
        for name in ("table_chars", "table_lengths"):
            loaded = state_dict.get(prefix + name)
            if loaded is not None:
                self._buffers[name] = torch.empty_like(loaded, device="cpu")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._sync_table_and_buffers()  # the loaded table is the char embedding's from now on

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
    every id's token embedding. The settings go into model.config, whose model_type becomes
    "charfast-<type>": save_pretrained and this module's from_pretrained bring the model
    back as it is, and a plain AutoModel.from_pretrained refuses the save, naming charfast,
    instead of loading the model without its char embedding. Returns the model."""
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
    encoder = char_embedding.encoder
    settings = {
        "char_dim": char_embedding.char_dim,
        "hidden": char_embedding.proj.in_features,
        "table_name": table.name,
        "backend": char_embedding.backend,
        "encoder": char_embedding.encoder_name,
        "encoder_sizes": {} if encoder is None else encoder.sizes(),
    }  # CharAwareEmbedding adds the table's sizes and keeps them current
    model.set_input_embeddings(CharAwareEmbedding(token_embedding, char_embedding, settings))
    setattr(model.config, CONFIG_KEY, settings)
    model.config.__class__ = _char_aware_config_class(_base_config_class(type(model.config)))
    return model


MODEL_TYPE_PREFIX = "charfast-"


def _base_config_class(config_class: type) -> type:
    return getattr(config_class, "_charfast_base", config_class)


@functools.cache
def _char_aware_config_class(base: type) -> type:
    """`base` (a transformers config class) with model_type "charfast-<its type>": written
    into config.json, it makes transformers' own loaders refuse the save by that name."""
    return type(
        f"CharAware{base.__name__}",
        (base,),
        {"model_type": MODEL_TYPE_PREFIX + base.model_type, "_charfast_base": base, "__module__": __name__},
    )


def _char_aware_config(path, config):
    """The config of a char-aware save at `path` (its model_type "charfast-<type>", or the
    <type> itself with a charfast entry, as earlier versions wrote it)."""
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if config is not None:
        return config
    values, _ = PretrainedConfig.get_config_dict(path)
    model_type = values.get("model_type", "")
    if not model_type.startswith(MODEL_TYPE_PREFIX):
        return AutoConfig.from_pretrained(path)
    base_type = model_type[len(MODEL_TYPE_PREFIX) :]
    if base_type not in CONFIG_MAPPING:
        raise ValueError(f"charfast.hf.from_pretrained: {path} holds a {base_type!r} model, which transformers lacks")
    config = CONFIG_MAPPING[base_type].from_dict({k: v for k, v in values.items() if k != "model_type"})
    config.__class__ = _char_aware_config_class(type(config))
    return config


def from_pretrained(path, model_class=None, **kwargs):
    """A model saved by save_pretrained after add_char_embedding, char embedding and all.
    model_class: the transformers class to load (default: AutoModelForCausalLM's class for
    the saved config); kwargs go to its from_pretrained. A save that lacks the table or the
    char encoder's weights is refused, naming what is missing."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = _char_aware_config(path, kwargs.pop("config", None))
    settings = getattr(config, CONFIG_KEY, None)
    if not isinstance(settings, dict):
        raise ValueError(
            f"charfast.hf.from_pretrained: {path} holds no char-aware model (no {CONFIG_KEY!r} in its config)"
        )
    base = model_class or MODEL_FOR_CAUSAL_LM_MAPPING[_base_config_class(type(config))]

    # A placeholder table of the saved shape (every token empty), whose buffers loading fills.
    # Built here: transformers creates the model with every new tensor on the meta device.
    chars = torch.zeros(settings["vocab_size"], settings["max_len"], dtype=torch.int32)
    placeholder = TokenCharTable(chars, chars[:, 0], settings["n_chars"], name=settings["table_name"])

    def __init__(self, config, *args, **init_kwargs):
        base.__init__(self, config, *args, **init_kwargs)
        encoder = {}  # saved before there were other encoders: the char-LSTM
        if "encoder" in settings:
            encoder = {"encoder": settings["encoder"], "encoder_sizes": settings["encoder_sizes"] or None}
        add_char_embedding(
            self,
            placeholder,
            char_dim=settings["char_dim"],
            hidden=settings["hidden"],
            backend=settings["backend"],
            **encoder,
        )

    char_aware = type(f"CharAware{base.__name__}", (base,), {"__init__": __init__, "_charfast_base": base})
    wants_info = kwargs.pop("output_loading_info", False)
    model, info = char_aware.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    embedding = model.get_input_embeddings()
    prefix = next(name for name, module in model.named_modules() if module is embedding)
    missing = sorted(key for key in info["missing_keys"] if key.startswith(f"{prefix}."))
    if missing:
        raise ValueError(
            f"charfast.hf.from_pretrained: {path} lacks the char embedding's {', '.join(missing)}: "
            "it was not saved from a model made by add_char_embedding (or was saved incompletely)"
        )
    embedding._sync_table_and_buffers()  # transformers set the buffers one by one: the loaded table is in use now
    return (model, info) if wants_info else model


def folded_model(model):
    """`model` (made char-aware by add_char_embedding) as its family's own transformers class,
    which runs and saves without charfast: the input table is the token embedding plus the
    char embedding of every id (a function of the id alone at inference), computed once in
    float64 and cast. A tied output layer is untied and keeps the trained token embedding
    (tie_word_embeddings false), so the logits are the model's. `model` is left as it is."""
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, CharAwareEmbedding):
        raise ValueError("folded_model: the model's input embedding is not char-aware (see add_char_embedding)")
    names = {module: name for name, module in model.named_modules()}
    inputs, outputs = names[embedding], names.get(model.get_output_embeddings())
    base = getattr(type(model), "_charfast_base", type(model))
    values = {k: v for k, v in model.config.to_dict().items() if k not in (CONFIG_KEY, "model_type")}
    config = _base_config_class(type(model.config)).from_dict({**values, "tie_word_embeddings": False})
    folded_weight = embedding.weight.detach().cpu().double() + embedding.char_embedding.exact_vocabulary_output()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{inputs}.")}
    state[f"{inputs}.weight"] = folded_weight.to(embedding.weight.dtype)
    if outputs is not None:
        state[f"{outputs}.weight"] = model.get_output_embeddings().weight.detach()  # tied or not: what was trained
    folded = base(config)
    folded.load_state_dict(state)
    return folded.to(device=embedding.weight.device, dtype=embedding.weight.dtype).train(model.training)


def save_folded(model, path, **kwargs) -> None:
    """folded_model(model).save_pretrained(path, **kwargs): a folder that plain transformers
    (AutoModelForCausalLM.from_pretrained) and the servers built on it load."""
    folded_model(model).save_pretrained(path, **kwargs)
