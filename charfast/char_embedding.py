"""CharEmbedding: a token embedding computed by an LSTM over each token's characters.

    out[..., :] = proj( LSTM(char_emb(chars of idx[...]))  h at the token's last char )

Drop-in: add `CharEmbedding(table, d_model)(idx)` to a model's token + position
embeddings. The LSTM runs once per distinct id in the batch, never per position.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from charfast.backends import Backend, resolve_backend
from charfast.char_lstm_op import token_states
from charfast.distinct import distinct_ids_padded
from charfast.table import TokenCharTable

# Rows per chunk when filling the inference cache; chunks hold tokens of similar length.
_CACHE_CHUNK = 8192


class CharEmbedding(nn.Module):
    """Character-aware token embedding.

    Args:
        table: the TokenCharTable of the tokenizer whose ids this module receives.
        d_model: output width (the model's embedding width).
        char_dim: width of each character's embedding.
        hidden: LSTM hidden size.
        backend: "auto" (CHARFAST_BACKEND, else the best for the device), or a backend
            name ("reference", "cpp", "triton", ...); an explicit one that cannot run raises.
        inference_cache: in eval mode with grad disabled, compute the output for the whole
            vocabulary once and answer with a lookup until a parameter changes.
        forget_bias: the study's initialisation sets the forget-gate slice of both LSTM bias
            vectors to this value (1.0), so an untrained cell keeps its memory; the other
            parameters keep torch's defaults.
        check_ids: in eager mode, read the ids' range back to the host and refuse ids outside
            the table with a clear error; that read waits for the GPU (one sync per forward).
            False skips it (torch.compile always does): ids outside [0, V), negative ones
            included, then get NaN rows on every backend, and on a GPU the triton backend's
            forward and backward read nothing back at all.

    Attributes: char_emb (nn.Embedding(n_chars, char_dim)), lstm (nn.LSTM(char_dim, hidden,
    batch_first=True), a parameter container in torch's layout), proj (nn.Linear(hidden, d_model)).
    """

    def __init__(
        self,
        table: TokenCharTable,
        d_model: int,
        char_dim: int = 128,
        hidden: int = 128,
        backend: str = "auto",
        inference_cache: bool = True,
        forget_bias: float = 1.0,
        check_ids: bool = True,
    ):
        super().__init__()
        if not isinstance(table, TokenCharTable):
            raise TypeError(f"CharEmbedding: table must be a TokenCharTable, got {type(table).__name__}")
        for arg, value in (("d_model", d_model), ("char_dim", char_dim), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CharEmbedding: {arg} must be a positive int, got {value!r}")
        if not isinstance(backend, str):
            raise TypeError(f"CharEmbedding: backend must be a string, got {backend!r}")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)) or not math.isfinite(forget_bias):
            raise ValueError(f"CharEmbedding: forget_bias must be a finite number, got {forget_bias!r}")
        for arg, value in (("inference_cache", inference_cache), ("check_ids", check_ids)):
            if not isinstance(value, bool):
                raise TypeError(f"CharEmbedding: {arg} must be True or False, got {value!r}")
        self.table = table
        self.backend = backend
        self.inference_cache = inference_cache
        self.check_ids = check_ids
        self.char_emb = nn.Embedding(table.n_chars, char_dim)
        self.lstm = nn.LSTM(char_dim, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, d_model)
        with torch.no_grad():
            self.lstm.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
            self.lstm.bias_hh_l0[hidden : 2 * hidden].fill_(forget_bias)
        self._cache_params: list[torch.Tensor] = []  # the parameters _cache was computed from
        self._cache: torch.Tensor | None = None  # [V, d_model]
        self._cache_table: tuple[TokenCharTable, int] | None = None  # (table, its version) _cache was computed from
        self._lstm_weights: tuple[torch.Tensor, ...] = ()  # see refresh_compile_state
        self._backend: Backend | None = None
        self.refresh_compile_state()
        # load_state_dict(assign=True) replaces the LSTM's tensors: remember the new ones.
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def extra_repr(self) -> str:
        return (
            f"table={self.table!r}, backend={self.backend!r}, inference_cache={self.inference_cache}, "
            f"check_ids={self.check_ids}"
        )

    @property
    def d_model(self) -> int:
        return self.proj.out_features

    def _current_backend(self, device: torch.device) -> Backend | None:
        """The backend a forward on `device` runs: looked up afresh in eager mode (it raises,
        saying why, when self.backend cannot run there); what was looked up under torch.compile."""
        if not torch.compiler.is_compiling():
            self.refresh_compile_state()
            if self._backend is None:
                self.resolved_backend(device)  # raises, saying why self.backend cannot run there
        return self._backend

    def _char_lstm(self, ids: torch.Tensor, backend: Backend | None) -> torch.Tensor:
        weight_ih, weight_hh, bias_ih, bias_hh = self._lstm_weights
        chosen = backend if backend is not None else self.backend
        return token_states(self.table, ids, self.char_emb.weight, weight_ih, weight_hh, bias_ih, bias_hh, chosen)

    def resolved_backend(self, device: torch.device) -> Backend:
        """The backend this module runs on `device` (what "auto" picks), prepared for its table;
        a RuntimeError says why when self.backend cannot run there."""
        backend = resolve_backend(self.backend, device)
        backend.prepare(self.table, device)
        return backend

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: integer token ids [...] -> [..., d_model]."""
        if not torch.compiler.is_compiling():
            self._check_modules()
        self._check_idx(idx)
        idx = idx.long()  # int16 cannot index and uint8 would index as a mask
        flat = idx.reshape(-1)  # [N]
        outside = self._ids_outside_table(flat)  # [N] bool, or None when every id was checked
        if outside is not None:
            flat = flat.masked_fill(outside, 0)  # id 0 stands in; its rows become NaN below
        if self._use_inference_cache():
            out = self.vocabulary_output().index_select(0, flat)  # [N, d_model]
        else:
            out = self._distinct_ids_output(flat)  # [N, d_model]
        if outside is not None:
            out = out.masked_fill(outside[:, None], float("nan"))  # no answer for an id the table lacks
        return out.view(*idx.shape, self.d_model)

    def _distinct_ids_output(self, flat: torch.Tensor) -> torch.Tensor:
        """[N, d_model] for ids flat [N] inside the table: the LSTM once per distinct id."""
        backend = self._current_backend(flat.device)
        if backend is not None and backend.takes_padded_ids:
            # No host read: the distinct ids then padding, at most V rows.
            ids, inverse = distinct_ids_padded(flat)  # [N], [N]
            ids = ids[: self.table.vocab_size]  # [min(N, V)]
        else:
            ids, inverse = torch.unique(flat, return_inverse=True)  # [U], [N]
        # index_select, not [inverse]: its backward (index_add) is deterministic on CPU, the
        # backward of advanced indexing (index_put with accumulate) is not.
        return self.proj(self._char_lstm(ids, backend)).index_select(0, inverse)

    # ------------------------------------------------------------ torch.compile support
    def refresh_compile_state(self) -> None:
        """Remember what a forward traced by torch.compile reads but cannot look up itself.

        torch.compile refuses to touch an nn.LSTM module, even to read its weights, and
        resolving or preparing a backend inside a trace breaks the graph. A traced forward
        therefore only reads two attributes, which this method sets:

            _lstm_weights  (W_ih [4H, D], W_hh [4H, H], b_ih [4H], b_hh [4H]): the
                           Parameters registered in self.lstm
            _backend       the Backend that self.backend resolves to on the device of those
                           weights, prepared for self.table; None where it cannot run there

        Invariant: whenever a forward may be traced, both describe the module as it is.
        Every change that can break it calls this method: __init__, assigning self.lstm,
        .to() / .cuda() / .double() (_apply), load_state_dict, and every eager forward.
        """
        lstm = self.lstm
        self._lstm_weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
        try:
            self._backend = self.resolved_backend(lstm.weight_hh_l0.device)
        except RuntimeError:  # e.g. backend="triton" while still on the CPU: the forward says why
            self._backend = None

    def __setattr__(self, name, value):
        if name == "table" and not isinstance(value, TokenCharTable):
            raise TypeError(f"CharEmbedding: table must be a TokenCharTable, got {type(value).__name__}")
        super().__setattr__(name, value)
        if name in ("lstm", "table") and "_lstm_weights" in self.__dict__:  # a new LSTM or table after __init__
            self.refresh_compile_state()

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.refresh_compile_state()
        return result

    # ------------------------------------------------------------ inference cache
    def _use_inference_cache(self) -> bool:
        return (
            self.inference_cache
            and not self.training
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        )

    def _cache_is_current(self) -> bool:
        # Parameters are compared by value: fused optimizers (e.g. AdamW(fused=True)) update
        # them without bumping their version counters, so no cheaper key is reliable. The
        # table is another input of the function: the same object, with the same contents.
        params = list(self.parameters())
        return (
            self._cache is not None
            and self._cache_table == (self.table, self.table.version)
            and len(params) == len(self._cache_params)
            and all(
                p.shape == q.shape and p.dtype == q.dtype and p.device == q.device and torch.equal(p, q)
                for p, q in zip(params, self._cache_params)
            )
        )

    @torch.no_grad()
    def vocabulary_output(self) -> torch.Tensor:
        """[V, d_model]: the output for every id of the table, without gradients; computed
        once and reused until a parameter changes (the inference cache's table)."""
        if not self._cache_is_current():
            self._cache = None  # free the stale table before building the new one
            self._cache = self._compute_vocabulary_output()
            self._cache_params = [p.detach().clone() for p in self.parameters()]
            self._cache_table = (self.table, self.table.version)
        return self._cache

    def _compute_vocabulary_output(self) -> torch.Tensor:
        device = self.proj.weight.device
        by_length = torch.argsort(self.table.lengths, stable=True)  # [V]: similar lengths share a chunk
        out = torch.empty(self.table.vocab_size, self.d_model, device=device, dtype=self.proj.weight.dtype)
        backend = self._current_backend(device)
        for chunk in by_length.split(_CACHE_CHUNK):
            ids = chunk.sort().values.to(device)  # ascending, as torch.unique returns them
            out[ids] = self.proj(self._char_lstm(ids, backend)).to(out.dtype)  # autocast may give 16 bits
        return out

    # ------------------------------------------------------------ checks
    def _check_modules(self) -> None:
        self.table.version  # noqa: B018 - refuses a table made inconsistent since it was built
        lstm = self.lstm
        if self.char_emb.num_embeddings != self.table.n_chars:
            raise ValueError(
                f"CharEmbedding: char_emb has {self.char_emb.num_embeddings} rows but the table "
                f"{self.table.name!r} uses {self.table.n_chars} chars"
            )
        if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size != 0 or not lstm.bias or not lstm.batch_first:
            raise ValueError(
                "CharEmbedding: lstm must be a one-layer, unidirectional nn.LSTM with biases, "
                "batch_first=True and no proj_size"
            )
        if lstm.input_size != self.char_emb.embedding_dim or self.proj.in_features != lstm.hidden_size:
            raise ValueError(
                f"CharEmbedding: widths disagree: char_emb {self.char_emb.embedding_dim} -> lstm "
                f"{lstm.input_size}x{lstm.hidden_size} -> proj {self.proj.in_features}"
            )

    def _check_idx(self, idx) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"CharEmbedding: idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise TypeError(f"CharEmbedding: idx must hold integer token ids, got dtype {idx.dtype}")
        device = self.proj.weight.device
        if idx.device != device:
            raise ValueError(f"CharEmbedding: idx is on {idx.device} but the module's parameters are on {device}")

    def _ids_outside_table(self, ids: torch.Tensor) -> torch.Tensor | None:
        """None when every id of ids [N] was read back and found in the table (check_ids, in
        eager mode: a ValueError names an id outside it); else the mask [N] of ids outside
        [0, V), whose rows the forward fills with NaN, computed without a read."""
        if not self.check_ids or torch.compiler.is_compiling():  # a trace cannot read values
            return (ids < 0) | (ids >= self.table.vocab_size)
        if ids.numel() == 0:
            return None
        low, high = torch.stack(torch.aminmax(ids)).tolist()  # one device->host read
        if low < 0 or high >= self.table.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"CharEmbedding: token id {bad} is out of range [0, {self.table.vocab_size}) "
                f"of table {self.table.name!r}"
            )
        return None


def _refresh_after_load(module: CharEmbedding, incompatible_keys) -> None:
    module.refresh_compile_state()
