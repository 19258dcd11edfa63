"""CharEmbedding: a token embedding computed by an LSTM over each token's characters.

    out[..., :] = proj( LSTM(char_emb(chars of idx[...]))  h at the token's last char )

Drop-in: add `CharEmbedding(table, d_model)(idx)` to a model's token + position
embeddings. The LSTM runs once per distinct id in the batch, never per position.
`encoder=` puts a cheaper encoder in the LSTM's place (charfast.encoders: a bag of chars,
a positional bag, hashed or exact char n-grams, a char-CNN), with the same contract.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from charfast.backends import Backend, resolve_backend
from charfast.char_lstm_op import token_states
from charfast.distinct import distinct_ids_padded
from charfast.encoder_names import ENCODERS
from charfast.encoders import CharEncoder, make_encoder
from charfast.once_per_step import StepRows, step_rows, with_nan_row
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
        encoder: "lstm" (the char-LSTM), or a cheaper encoder of charfast.encoders ("bag",
            "posbag", "ngram", "ngram-exact", "cnn"): `hidden` is then its output width,
            `char_dim` the CNN's char width (the others' rows are `hidden` wide), and
            `encoder_sizes` its other sizes (ngram: buckets, hashes; posbag: positions;
            cnn: kernel). They run in plain PyTorch (no backend: `backend` stays "auto").
        encoder_sizes: see encoder.
        check_ids: in eager mode, read the ids' range back to the host and refuse ids outside
            the table with a clear error; that read waits for the GPU (one sync per forward).
            False skips it (torch.compile always does): ids outside [0, V), negative ones
            included, then get NaN rows on every backend, and on a GPU the triton backend's
            forward and backward read nothing back at all.

    Attributes: char_emb (nn.Embedding(n_chars, char_dim)), lstm (nn.LSTM(char_dim, hidden,
    batch_first=True), a parameter container in torch's layout), proj (nn.Linear(hidden, d_model));
    with another encoder: encoder (its module) and proj, and char_emb and lstm are None.
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
        encoder: str = "lstm",
        encoder_sizes: dict | None = None,
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
        if encoder not in ENCODERS:
            raise ValueError(f"CharEmbedding: encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if encoder != "lstm" and backend != "auto":
            raise ValueError(f"CharEmbedding: backend {backend!r} is the char-LSTM's; encoder {encoder!r} takes none")
        if encoder == "lstm" and encoder_sizes:
            raise ValueError("CharEmbedding: encoder_sizes are for the other encoders; the LSTM's are char_dim, hidden")
        self.table_listeners: list = []  # callables given each table assigned from now on
        self.table = table
        self.backend = backend
        self.inference_cache = inference_cache
        self.check_ids = check_ids
        self.encoder_name = encoder
        self.char_dim = char_dim
        self.char_emb = self.lstm = self.encoder = None
        if encoder == "lstm":
            self.char_emb = nn.Embedding(table.n_chars, char_dim)
            self.lstm = nn.LSTM(char_dim, hidden, batch_first=True)
            with torch.no_grad():
                self.lstm.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
                self.lstm.bias_hh_l0[hidden : 2 * hidden].fill_(forget_bias)
        else:
            try:
                self.encoder = make_encoder(encoder, table, hidden, char_dim, **(encoder_sizes or {}))
            except TypeError as err:  # an unknown size's name
                raise ValueError(f"CharEmbedding: encoder_sizes {encoder_sizes!r} for {encoder!r}: {err}") from err
        self.proj = nn.Linear(hidden, d_model)
        self._cache_params: list[torch.Tensor] = []  # the parameters _cache was computed from
        self._cache: torch.Tensor | None = None  # [V + 1, d_model]: every id's row, then a NaN row
        self._cache_table: tuple[TokenCharTable, int] | None = None  # (table, its version) _cache was computed from
        self._step_rows: StepRows | None = None  # inside once_per_step
        self._step_table: tuple[TokenCharTable, int] | None = None  # (table, its version) _step_rows came from
        self._lstm_weights: tuple[torch.Tensor, ...] = ()  # see refresh_compile_state
        self._backend: Backend | None = None
        self.refresh_compile_state()
        # load_state_dict(assign=True) replaces the LSTM's tensors: remember the new ones.
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def extra_repr(self) -> str:
        return (
            f"table={self.table!r}, encoder={self.encoder_name!r}, backend={self.backend!r}, "
            f"inference_cache={self.inference_cache}, check_ids={self.check_ids}"
        )

    @property
    def d_model(self) -> int:
        return self.proj.out_features

    def _current_backend(self, device: torch.device) -> Backend | None:
        """The backend a forward on `device` runs: looked up afresh in eager mode (it raises,
        saying why, when self.backend cannot run there); what was looked up under torch.compile.
        None for an encoder other than the LSTM (plain PyTorch)."""
        if self.encoder is not None:
            return None
        if not torch.compiler.is_compiling():
            self.refresh_compile_state()
            if self._backend is None:
                self.resolved_backend(device)  # raises, saying why self.backend cannot run there
        return self._backend

    def _encode(self, ids: torch.Tensor, backend: Backend | None) -> torch.Tensor:
        """ids [U] (in the table) -> the encoder's states [U, hidden]."""
        if self.encoder is not None:
            chars, lengths = self.table.on(ids.device)
            lengths = lengths[ids].long()  # [U]
            # Eager: only as many positions as the longest of these tokens has (one host read);
            # a trace cannot read it and takes the table's width.
            if torch.compiler.is_compiling():
                width = chars.shape[1]
            else:
                width = max(1, int(lengths.max())) if ids.numel() else 1
            chars = chars[ids, :width].long()  # [U, L]
            chars = chars.masked_fill(~CharEncoder.valid(chars, lengths), 0)  # no id past a token's end
            return self.encoder(chars, lengths)
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
            flat = flat.masked_fill(outside, 0)  # id 0 stands in; its row becomes the NaN row below
        # Every path gathers from a table of rows; the last is NaN when an id may lack an answer.
        if self._step_rows is not None:  # inside once_per_step: the step's rows
            if not torch.compiler.is_compiling():
                self._check_step_table()
            rows = self._step_rows.leaf  # [R + 1, d_model]
            positions = self._step_rows.positions(flat, check=self.check_ids and not torch.compiler.is_compiling())
        elif self._use_inference_cache():
            rows, positions = self._vocabulary_rows(), flat  # [V + 1, d_model], [N]
        else:
            rows, positions = self._distinct_ids_rows(flat, nan_row=outside is not None)
        if outside is not None:
            positions = positions.masked_fill(outside, rows.shape[0] - 1)  # no answer for an id the table lacks
        # index_select, not [positions]: its backward (index_add) is deterministic on CPU, the
        # backward of advanced indexing (index_put with accumulate) is not.
        return rows.index_select(0, positions).view(*idx.shape, self.d_model)

    def _distinct_ids_rows(self, flat: torch.Tensor, nan_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [U (+ 1), d_model], positions [N]) for ids flat [N] inside the table: the LSTM
        once per distinct id, then (nan_row) a NaN row."""
        backend = self._current_backend(flat.device)
        if backend is not None and backend.takes_padded_ids:
            # No host read: the distinct ids then padding, at most V rows.
            ids, inverse = distinct_ids_padded(flat)  # [N], [N]
            ids = ids[: self.table.vocab_size]  # [min(N, V)]
        else:
            ids, inverse = torch.unique(flat, return_inverse=True)  # [U], [N]
        rows = self.proj(self._encode(ids, backend))  # [U, d_model]
        return (with_nan_row(rows) if nan_row else rows), inverse

    # ------------------------------------------------------------ once per optimizer step
    @contextlib.contextmanager
    def once_per_step(self, ids):
        """Run the char-LSTM once for all micro-batches of an optimizer step:

            with char_emb.once_per_step(ids_of_the_step):   # every micro-batch's ids
                for x, y in micro_batches:
                    (model(x, y)[1] / len(micro_batches)).backward()
            optimizer.step()

        On entering: one char forward over the distinct ids of `ids` (a tensor of any shape,
        or a list or tuple of them). Inside: every forward of this module is a gather from
        those rows, and backward passes only accumulate their gradient. On leaving: one char
        backward, which adds into the parameters' .grad what a backward per micro-batch
        would have added. Leaving by an exception runs no backward and leaves .grad as it
        was. Every backward runs inside the block: one that reaches this module's output
        after the block raises a RuntimeError (its gradient could reach no parameter). An
        id not among `ids` is a ValueError (check_ids; NaN rows without it); empty `ids`
        make every id such an id. The table cannot change inside the block: assigning
        `table` is refused, and an in-place change is a RuntimeError at the next eager
        forward or at the block's end (which then runs no char backward). Enter it under
        the same autocast as the model's forward. Blocks do not nest. A model compiled with
        torch.compile sees the same shapes every step (the rows are sized by the number of
        ids given), so it is traced once.
        """
        if self._step_rows is not None:
            raise RuntimeError("CharEmbedding.once_per_step: already inside a once_per_step block (they do not nest)")
        flat = self._step_ids(ids)  # [N]
        backend = self._current_backend(flat.device)
        rows = step_rows(flat, self.table.vocab_size, self._padded_ids_rows(backend))
        self._step_table = (self.table, self.table.version)
        self._step_rows = rows
        finished = False
        try:
            yield
            finished = True
        finally:
            self._step_rows = None
            rows.close(run_backward=finished and self._step_table_is_current())
        if finished:
            self._check_step_table()

    def _step_table_is_current(self) -> bool:
        table, version = self._step_table
        return self.table is table and table.version == version

    def _check_step_table(self) -> None:
        if not self._step_table_is_current():
            raise RuntimeError(
                "CharEmbedding.once_per_step: the table changed inside the once_per_step block, whose rows come "
                "from the table at the block's start (no char backward was run for this step); change the "
                "table between optimizer steps, outside the block"
            )

    def _step_ids(self, ids) -> torch.Tensor:
        """The ids given to once_per_step, checked as forward checks them, as one int64 [N];
        ids outside the table (allowed without check_ids) stand in as id 0."""
        parts = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        if not torch.compiler.is_compiling():
            self._check_modules()
        for part in parts:
            self._check_idx(part)
        device = self.proj.weight.device
        flat = torch.cat(
            [part.reshape(-1).long() for part in parts] or [torch.empty(0, dtype=torch.long, device=device)]
        )
        outside = self._ids_outside_table(flat)
        return flat if outside is None else flat.masked_fill(outside, 0)

    def _padded_ids_rows(self, backend: Backend | None):
        """ids [R] (distinct, padded with PAD_ID) -> [R, d_model] rows; a backend that takes no
        padding gets id 0 in place of it (computed once more, never read)."""
        takes_padding = backend is not None and backend.takes_padded_ids

        def rows(ids: torch.Tensor) -> torch.Tensor:
            return self.proj(self._encode(ids if takes_padding else ids.clamp(min=0), backend))

        return rows

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
        (Another encoder reads its own parameters and runs no backend: nothing to remember.)
        """
        lstm = self.lstm
        if lstm is None:
            self._lstm_weights, self._backend = (), None
            return
        self._lstm_weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
        device = lstm.weight_hh_l0.device
        if device.type == "meta":  # being built without storage (e.g. by from_pretrained): no backend runs there
            self._backend = None
            return
        try:
            self._backend = self.resolved_backend(device)
        except RuntimeError:  # e.g. backend="triton" while still on the CPU: the forward says why
            self._backend = None

    def __setattr__(self, name, value):
        if name == "table" and not isinstance(value, TokenCharTable):
            raise TypeError(f"CharEmbedding: table must be a TokenCharTable, got {type(value).__name__}")
        if name == "table" and self.__dict__.get("_step_rows") is not None:
            raise RuntimeError(
                "CharEmbedding: cannot assign table inside a once_per_step block, whose rows come from the table "
                "at the block's start; assign it between optimizer steps, outside the block"
            )
        if name == "table":  # before it is taken: a listener that refuses the table stops the assignment
            for listener in self.__dict__.get("table_listeners", ()):
                listener(value)
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

    def exact_vocabulary_output(self) -> torch.Tensor:
        """[V, d_model] float64 on the CPU: vocabulary_output computed in double precision by
        a copy of this module on the reference backend (the definition), so that folding it
        into a token table (an export) adds no error of its own."""
        sizes = None if self.encoder is None else self.encoder.sizes()
        exact = CharEmbedding(
            self.table,
            self.d_model,
            self.char_dim,
            self.proj.in_features,
            backend="reference" if self.encoder is None else "auto",
            encoder=self.encoder_name,
            encoder_sizes=sizes,
        ).to(torch.float64)
        exact.load_state_dict({k: v.detach().cpu() for k, v in self.state_dict().items()})
        return exact.vocabulary_output()

    def vocabulary_output(self) -> torch.Tensor:
        """[V, d_model]: the output for every id of the table, without gradients; computed
        once and reused until a parameter or the table changes (the inference cache's table)."""
        return self._vocabulary_rows()[:-1]

    @torch.no_grad()
    def _vocabulary_rows(self) -> torch.Tensor:
        """[V + 1, d_model]: vocabulary_output, then a NaN row (for ids outside the table)."""
        if not self._cache_is_current():
            self._cache = None  # free the stale table before building the new one
            self._cache = self._compute_vocabulary_rows()
            self._cache_params = [p.detach().clone() for p in self.parameters()]
            self._cache_table = (self.table, self.table.version)
        return self._cache

    def _compute_vocabulary_rows(self) -> torch.Tensor:
        device = self.proj.weight.device
        by_length = torch.argsort(self.table.lengths, stable=True)  # [V]: similar lengths share a chunk
        out = torch.empty(self.table.vocab_size + 1, self.d_model, device=device, dtype=self.proj.weight.dtype)
        out[-1] = float("nan")
        backend = self._current_backend(device)
        for chunk in by_length.split(_CACHE_CHUNK):
            ids = chunk.sort().values.to(device)  # ascending, as torch.unique returns them
            out[ids] = self.proj(self._encode(ids, backend)).to(out.dtype)  # autocast may give 16 bits
        return out

    # ------------------------------------------------------------ checks
    def _check_modules(self) -> None:
        self.table.version  # noqa: B018 - refuses a table made inconsistent since it was built
        if self.encoder is not None:
            return
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
