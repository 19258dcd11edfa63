"""CharEmbedding: a token embedding computed by an LSTM over each token's characters.

    out[..., :] = proj( LSTM(char_emb(chars of idx[...]))  h at the token's last char )

Drop-in: add `CharEmbedding(table, d_model)(idx)` to a model's token + position
embeddings. The LSTM runs once per distinct id in the batch, never per position.
"""

from __future__ import annotations

import torch
from torch import nn

from charfast.backends import resolve_backend
from charfast.char_lstm import char_lstm
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
    ):
        super().__init__()
        if not isinstance(table, TokenCharTable):
            raise TypeError(f"CharEmbedding: table must be a TokenCharTable, got {type(table).__name__}")
        for arg, value in (("d_model", d_model), ("char_dim", char_dim), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CharEmbedding: {arg} must be a positive int, got {value!r}")
        if not isinstance(backend, str):
            raise TypeError(f"CharEmbedding: backend must be a string, got {backend!r}")
        self.table = table
        self.backend = backend
        self.inference_cache = inference_cache
        self.char_emb = nn.Embedding(table.n_chars, char_dim)
        self.lstm = nn.LSTM(char_dim, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, d_model)
        with torch.no_grad():
            self.lstm.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
            self.lstm.bias_hh_l0[hidden : 2 * hidden].fill_(forget_bias)
        self._cache_params: list[torch.Tensor] = []  # the parameters _cache was computed from
        self._cache: torch.Tensor | None = None  # [V, d_model]
        # (Assigning self.lstm above already remembered its weights and the backend.)
        # load_state_dict(assign=True) replaces the LSTM's tensors: remember the new ones.
        self.register_load_state_dict_post_hook(_after_load_state_dict)

    def extra_repr(self) -> str:
        return f"table={self.table!r}, backend={self.backend!r}, inference_cache={self.inference_cache}"

    @property
    def d_model(self) -> int:
        return self.proj.out_features

    def token_states(self, ids: torch.Tensor) -> torch.Tensor:
        """h [U, hidden] for valid distinct token ids [U]."""
        weight_ih, weight_hh, bias_ih, bias_hh = self._lstm_weights()
        return char_lstm(
            self.table,
            ids,
            self.char_emb.weight,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            backend=self._backend_for(ids.device),
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: integer token ids [...] -> [..., d_model]."""
        if not torch.compiler.is_compiling():
            self._check_modules()
        self._check_idx(idx)
        idx = idx.long()  # int16 cannot index and uint8 would index as a mask
        if self._use_inference_cache():
            table = self._vocabulary_output()  # [V, d_model]
            self._check_ids_in_range(idx.reshape(-1))
            return table[idx]
        ids, inverse = torch.unique(idx.reshape(-1), return_inverse=True)  # [U], [N]
        self._check_ids_in_range(ids)
        # index_select, not [inverse]: its backward (index_add) is deterministic on CPU, the
        # backward of advanced indexing (index_put with accumulate) is not.
        out = self.proj(self.token_states(ids)).index_select(0, inverse)  # [N, d_model]
        return out.view(*idx.shape, self.d_model)

    # ------------------------------------------------------------ torch.compile support
    # Dynamo refuses to touch an nn.LSTM module (even to read its weights), and importing
    # or choosing a backend inside a trace breaks the graph. So eager code remembers the
    # LSTM's weight tensors and the chosen backend, refreshed whenever they can change
    # (construction, .to()/_apply, assigning self.lstm, load_state_dict, every eager
    # forward), and a compiled forward reads what was remembered.
    def _lstm_weights(self) -> tuple[torch.Tensor, ...]:
        """(W_ih [4H, D], W_hh [4H, H], b_ih [4H], b_hh [4H]) of self.lstm."""
        if not torch.compiler.is_compiling():
            self._remember_lstm_weights()
        return self._lstm_weights_seen

    def _backend_for(self, device: torch.device):
        seen = self._backend_seen
        if torch.compiler.is_compiling() and seen is not None and seen[0] == device:
            return seen[1]
        backend = resolve_backend(self.backend, device)  # raises if an explicit backend cannot run
        backend.prepare(self.table, device)
        self._backend_seen = (device, backend)
        return backend

    def _remember_lstm_weights(self) -> None:
        lstm = self._modules.get("lstm")
        if lstm is not None:
            self._lstm_weights_seen = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)

    def _remember_lstm_and_backend(self) -> None:
        self._remember_lstm_weights()
        self._backend_seen = None
        parameter = next(self.parameters(), None)
        if parameter is not None:
            try:
                self._backend_for(parameter.device)
            except RuntimeError:  # e.g. backend="triton" while still on the CPU: the forward says so
                pass

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "lstm":
            self._remember_lstm_and_backend()

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self._remember_lstm_and_backend()
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
        # Compared by value: fused optimizers (e.g. AdamW(fused=True)) update parameters
        # without bumping their version counters, so no cheaper key is reliable.
        params = list(self.parameters())
        return (
            self._cache is not None
            and len(params) == len(self._cache_params)
            and all(
                p.shape == q.shape and p.dtype == q.dtype and p.device == q.device and torch.equal(p, q)
                for p, q in zip(params, self._cache_params)
            )
        )

    def _vocabulary_output(self) -> torch.Tensor:
        if not self._cache_is_current():
            self._cache = None  # free the stale table before building the new one
            self._cache = self._compute_vocabulary_output()
            self._cache_params = [p.detach().clone() for p in self.parameters()]
        return self._cache

    def _compute_vocabulary_output(self) -> torch.Tensor:
        device = self.proj.weight.device
        by_length = torch.argsort(self.table.lengths, stable=True)  # [V]: similar lengths share a chunk
        out = torch.empty(self.table.vocab_size, self.d_model, device=device, dtype=self.proj.weight.dtype)
        for chunk in by_length.split(_CACHE_CHUNK):
            ids = chunk.sort().values.to(device)  # ascending, as torch.unique returns them
            out[ids] = self.proj(self.token_states(ids))
        return out

    # ------------------------------------------------------------ checks
    def _check_modules(self) -> None:
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

    def _check_ids_in_range(self, ids: torch.Tensor) -> None:
        if torch.compiler.is_compiling() or ids.numel() == 0:  # numel is data-dependent in a trace
            return
        low, high = torch.stack(torch.aminmax(ids)).tolist()  # one device->host read
        if low < 0 or high >= self.table.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"CharEmbedding: token id {bad} is out of range [0, {self.table.vocab_size}) "
                f"of table {self.table.name!r}"
            )


def _after_load_state_dict(module: CharEmbedding, incompatible_keys) -> None:
    module._remember_lstm_and_backend()
