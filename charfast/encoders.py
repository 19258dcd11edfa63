"""Char encoders cheaper than the char-LSTM, for CharEmbedding(encoder=...).

Each maps the characters of distinct tokens to one vector per token, in plain PyTorch:

    chars [U, L] (char ids, padded past each token's length), lengths [U] -> [U, width]

CharEmbedding then projects it to d_model and gives it the LSTM's contract (once per
distinct id, once per step, the inference cache, id checks, torch.compile).

    bag          mean of the token's char embeddings (order-blind)
    posbag       mean of (char, position) slot embeddings: the first `positions` - 1
                 positions each a slot of their own, later ones share the last
    ngram        mean of hashed char n-gram embeddings (n = 1..4 over the chars with a
                 begin and an end marker, `hashes` hash functions into `buckets` rows)
    ngram-exact  the same n-grams, each a row of its own: the vocabulary is closed, so
                 the n-grams of the table are known (an n-gram the table lacks: one shared row)
    cnn          char embeddings -> one Conv1d -> ReLU -> max over the token -> a highway layer

Widths: `matched_encoder` sizes an encoder so that, with CharEmbedding's projection, its
parameters match a budget (the char-LSTM's, for the study's equal-parameter comparison).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from charfast.encoder_names import ENCODERS
from charfast.table import TokenCharTable

NGRAM_SIZES = (1, 2, 3, 4)
_MERSENNE = 2**31 - 1  # the n-gram hashes' modulus: products with a multiplier < 2**20 fit in int64
_HASH_MULTIPLIERS = (1_000_003, 999_983, 524_287, 786_433)  # one per hash function (< 2**20)
# matched_encoder refuses a width this far from the budget (at the study's sizes they come
# within 1%; a tiny model's budget buys only a few widths, the nearest of which may be further)
MATCH_TOLERANCE = 0.10
_VOCABULARY_CHUNK = 4096  # tokens per pass when ngram-exact collects a table's n-grams
_NGRAMS_KEY = "ngram_codes"  # in TokenCharTable.backend_state: table_ngrams


def lstm_parameter_count(n_chars: int, char_dim: int, hidden: int, d_model: int) -> int:
    """Parameters of CharEmbedding(table, d_model, char_dim, hidden) with the char-LSTM."""
    gates = 4 * hidden
    return n_chars * char_dim + gates * (char_dim + hidden) + 2 * gates + hidden * d_model + d_model


class CharEncoder(nn.Module):
    """chars [U, L] int64, lengths [U] int64 -> [U, width]; a token of length 0 gets the
    encoder's value for no chars (zeros from the bags; the CNN's highway of a zero pool)."""

    width: int

    def sizes(self) -> dict:
        """Its sizes beside the width, as make_encoder takes them: enough to build one of the
        same shapes (to load a saved one into)."""
        return {}

    @staticmethod
    def valid(chars: Tensor, lengths: Tensor) -> Tensor:
        """[U, L] bool: which positions hold one of the token's chars."""
        return torch.arange(chars.shape[1], device=chars.device) < lengths[:, None]


def _bag_of_rows(indices: Tensor, valid: Tensor, weight: Tensor) -> Tensor:
    """indices, valid [U, G] -> [U, W]: the mean of weight's rows at the valid indices."""
    scale = valid.to(weight.dtype) / valid.sum(1, keepdim=True).clamp(min=1).to(weight.dtype)  # [U, G]
    return F.embedding_bag(indices, weight, mode="sum", per_sample_weights=scale)


class CharBag(CharEncoder):
    def __init__(self, n_chars: int, width: int):
        super().__init__()
        self.width = width
        self.emb = nn.Embedding(n_chars, width)

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        return _bag_of_rows(chars, self.valid(chars, lengths), self.emb.weight)


class PositionalCharBag(CharEncoder):
    def __init__(self, n_chars: int, width: int, positions: int = 16):
        super().__init__()
        self.width, self.positions = width, positions
        self.emb = nn.Embedding(n_chars * positions, width)  # row c * positions + p

    def sizes(self) -> dict:
        return {"positions": self.positions}

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        slot = torch.arange(chars.shape[1], device=chars.device).clamp(max=self.positions - 1)  # [L]
        return _bag_of_rows(chars * self.positions + slot, self.valid(chars, lengths), self.emb.weight)


def char_ngrams(chars: Tensor, lengths: Tensor, n_chars: int) -> tuple[list[Tensor], list[Tensor]]:
    """Every n-gram (n in NGRAM_SIZES) of each token's chars framed by a begin marker
    (n_chars) and an end marker (n_chars + 1): per n, (grams [U, W, n], valid [U, W]) over
    the W windows of the framed rows; a window is valid when it lies inside its token."""
    tail = max(1, max(NGRAM_SIZES) - 1 - chars.shape[1])  # room for the end marker and the longest window
    begin = torch.full_like(chars[:, :1], n_chars)
    framed = torch.cat([begin, chars, chars.new_zeros(chars.shape[0], tail)], 1)  # [U, F]
    end = (lengths + 1)[:, None]  # [U, 1]: the end marker's position
    framed = framed.scatter(1, end, n_chars + 1)
    grams, valid = [], []
    for n in NGRAM_SIZES:
        windows = framed.unfold(1, n, 1)  # [U, F + 1 - n, n]
        starts = torch.arange(windows.shape[1], device=chars.device)
        grams.append(windows)
        valid.append(starts + n - 1 <= end)  # the window ends at or before the end marker
    return grams, valid


class HashedNgrams(CharEncoder):
    def __init__(self, n_chars: int, width: int, buckets: int, hashes: int = 2):
        super().__init__()
        if not 1 <= hashes <= len(_HASH_MULTIPLIERS):
            raise ValueError(f"HashedNgrams: hashes must lie in [1, {len(_HASH_MULTIPLIERS)}], got {hashes!r}")
        self.width, self.n_chars, self.buckets, self.hashes = width, n_chars, buckets, hashes
        self.emb = nn.Parameter(torch.randn(buckets, width))

    def sizes(self) -> dict:
        return {"buckets": self.buckets, "hashes": self.hashes}

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        grams, valid = char_ngrams(chars, lengths, self.n_chars)
        indices, masks = [], []
        for windows, ok in zip(grams, valid):
            for multiplier in _HASH_MULTIPLIERS[: self.hashes]:
                code = torch.full_like(windows[..., 0], windows.shape[-1])  # n: a 1-gram and a 2-gram differ
                for j in range(windows.shape[-1]):
                    code = (code * multiplier + windows[..., j] + 1) % _MERSENNE
                indices.append(code % self.buckets)
                masks.append(ok)
        return _bag_of_rows(torch.cat(indices, 1), torch.cat(masks, 1), self.emb)


def ngram_codes(chars: Tensor, lengths: Tensor, n_chars: int) -> tuple[Tensor, Tensor]:
    """(every n-gram of char_ngrams as one int64 code [U, G]: n and the chars in base
    n_chars + 2; valid [U, G])."""
    if (n_chars + 2) ** max(NGRAM_SIZES) >= 2**62:
        raise ValueError(f"ExactNgrams: {n_chars} chars are too many to code 4-grams in 64 bits")
    base = n_chars + 2
    grams, valid = char_ngrams(chars, lengths, n_chars)
    codes = []
    for windows in grams:
        code = torch.full_like(windows[..., 0], windows.shape[-1])
        for j in range(windows.shape[-1]):
            code = code * base + windows[..., j]
        codes.append(code)
    return torch.cat(codes, 1), torch.cat(valid, 1)


def table_ngrams(table: TokenCharTable) -> Tensor:
    """[K] the sorted codes of every n-gram the tokens of `table` hold; computed once per
    table contents (kept in table.backend_state), so sizing an encoder to a budget and
    building it read the table once."""
    found = table.backend_state.get(_NGRAMS_KEY)
    if found is None:
        parts = []
        for ids in torch.arange(table.vocab_size).split(_VOCABULARY_CHUNK):  # bounded memory on a 100k vocabulary
            lengths = table.lengths[ids].long()
            chars = table.chars[ids, : max(1, int(lengths.max()))].long()
            codes, valid = ngram_codes(chars, lengths, table.n_chars)
            parts.append(torch.unique(codes[valid]))
        found = table.backend_state[_NGRAMS_KEY] = torch.unique(torch.cat(parts))
    return found


class ExactNgrams(CharEncoder):
    """One row per n-gram of `table` (its vocabulary: the sorted codes in a buffer), and a
    last row shared by every n-gram the table lacks (a table assigned later may have some).
    saved_rows: a placeholder of a saved encoder's shape, to load it into (until then every
    n-gram reads the shared row)."""

    def __init__(self, table: TokenCharTable, width: int, saved_rows: int | None = None):
        super().__init__()
        self.width, self.n_chars = width, table.n_chars
        if saved_rows is None:  # a copy: loading a saved encoder writes into the buffer
            vocabulary = table_ngrams(table).clone()
        else:  # a placeholder of a saved encoder's shape, its n-grams to come with its weights
            vocabulary = torch.full((saved_rows - 1,), -1, dtype=torch.long)
        self.register_buffer("vocabulary", vocabulary)  # [K] sorted n-gram codes
        self.emb = nn.Parameter(torch.randn(len(vocabulary) + 1, width))

    def sizes(self) -> dict:
        return {"saved_rows": len(self.vocabulary) + 1}

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        codes, valid = ngram_codes(chars, lengths, self.n_chars)
        found = torch.searchsorted(self.vocabulary, codes).clamp(max=len(self.vocabulary) - 1)  # [U, G]
        known = self.vocabulary[found] == codes
        rows = torch.where(known, found, len(self.vocabulary))
        return _bag_of_rows(rows, valid, self.emb)


class CharCNN(CharEncoder):
    """Kim et al. (2016)'s char-CNN, one kernel width: max over the token of ReLU(conv),
    then a highway layer (its gate's bias starts at -2: mostly carried through)."""

    def __init__(self, n_chars: int, char_dim: int, width: int, kernel: int = 3):
        super().__init__()
        self.width = width
        self.emb = nn.Embedding(n_chars, char_dim)
        self.conv = nn.Conv1d(char_dim, width, kernel, padding=kernel // 2)
        self.transform = nn.Linear(width, width)
        self.gate = nn.Linear(width, width)
        with torch.no_grad():
            self.gate.bias.fill_(-2.0)

    def sizes(self) -> dict:
        return {"kernel": self.conv.kernel_size[0]}

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        valid = self.valid(chars, lengths)  # [U, L]
        x = self.emb(chars) * valid[..., None]  # [U, L, D]: padding reads as zeros, as past the ends
        features = F.relu(self.conv(x.transpose(1, 2)))  # [U, width, L]
        pooled = features.masked_fill(~valid[:, None, :], 0.0).amax(2)  # [U, width]; ReLU >= 0, so 0 is neutral
        gate = torch.sigmoid(self.gate(pooled))
        return gate * F.relu(self.transform(pooled)) + (1 - gate) * pooled


def encoder_parameter_count(name: str, n_chars: int, width: int, char_dim: int, ngrams: int = 0, **sizes) -> int:
    """Parameters of encoder `name` of `width` (without the projection): ngrams is the
    table's n-gram count for ngram-exact, sizes the encoder's other sizes (buckets, positions)."""
    if name == "bag":
        return n_chars * width
    if name == "posbag":
        return n_chars * sizes.get("positions", 16) * width
    if name == "ngram":
        return sizes["buckets"] * width
    if name == "ngram-exact":
        return (ngrams + 1) * width
    if name == "cnn":
        kernel = sizes.get("kernel", 3)
        return n_chars * char_dim + width * char_dim * kernel + width + 2 * (width * width + width)
    raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {name!r}")


def make_encoder(name: str, table: TokenCharTable, width: int, char_dim: int, **sizes) -> CharEncoder:
    """The encoder `name` (not "lstm") for `table`, of output `width`."""
    if name == "bag":
        return CharBag(table.n_chars, width, **sizes)
    if name == "posbag":
        return PositionalCharBag(table.n_chars, width, **sizes)
    if name == "ngram":
        return HashedNgrams(table.n_chars, width, **sizes)
    if name == "ngram-exact":
        return ExactNgrams(table, width, **sizes)
    if name == "cnn":
        return CharCNN(table.n_chars, char_dim, width, **sizes)
    raise ValueError(f"encoder must be one of {', '.join(e for e in ENCODERS if e != 'lstm')}, got {name!r}")


def ngram_count(table: TokenCharTable) -> int:
    """How many distinct n-grams (NGRAM_SIZES, with the markers) the tokens of `table` hold."""
    return len(table_ngrams(table))


def matched_encoder(
    name: str, table: TokenCharTable, d_model: int, budget: int, char_dim: int, ngram_width: int = 32
) -> tuple[int, dict]:
    """(width, sizes) of encoder `name` whose parameters, with a Linear(width, d_model)
    projection, come nearest to `budget`: the width is solved for, except for ngram, whose
    bucket count is (at width `ngram_width`). A ValueError where the nearest is further than
    MATCH_TOLERANCE from the budget (ngram-exact over a large vocabulary: more n-grams than
    the budget buys rows of any useful width)."""
    ngrams = ngram_count(table) if name == "ngram-exact" else 0

    def total(width: int, **sizes) -> int:
        return (
            encoder_parameter_count(name, table.n_chars, width, char_dim, ngrams, **sizes) + width * d_model + d_model
        )

    if name == "ngram":
        buckets = max(1, round((budget - d_model - ngram_width * d_model) / ngram_width))
        return ngram_width, {"buckets": buckets}
    low, high = 1, 1
    while total(high) < budget:  # every count grows with the width
        high *= 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if total(middle) < budget else (low, middle)
    width = min((low, high), key=lambda w: abs(total(w) - budget))
    if abs(total(width) - budget) > MATCH_TOLERANCE * budget:
        rows = f"{ngrams + 1} rows (the table's n-grams)" if name == "ngram-exact" else f"{table.n_chars} chars"
        raise ValueError(
            f"encoder {name!r} cannot match a budget of {budget:,} parameters within {MATCH_TOLERANCE:.0%}: "
            f"its table of {rows} at width {width} gives {total(width):,}; raise the budget (larger "
            "char_dim / char_hidden, or an arch with a larger budget)"
        )
    return width, {}
