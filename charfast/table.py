"""TokenCharTable: the precomputed token -> characters table that CharEmbedding reads.

A table maps every token id in [0, vocab_size) to a row of character ids:

    chars   [V, Lmax]  uint8 / int16 / int32 (smallest that holds n_chars); 0 after the token's end
    lengths [V]        int32, each in [0, Lmax]

For a tiktoken encoding the characters are the token's UTF-8 bytes (n_chars = 256).
Special tokens (``<|endoftext|>`` ...) and unused ids in the id space have no bytes: they
get length 0, so their LSTM state is h = 0 and CharEmbedding gives them only the
projection bias. Tokens are never truncated unless ``max_chars`` asks for it.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from charfast.cache import default_cache_dir, read_checked, safe_filename, write_checked
from charfast.token_bytes import hf_token_bytes, sentencepiece_token_bytes, token_bytes

# A model's vocabulary rounded up for fast kernels (nanoGPT: to a multiple of 64) is within
# this many ids of its tokenizer's; TokenCharTable.padded refuses more unless asked.
PAD_ROUNDING = 1024
_CACHE_FORMAT = 4  # bump when the on-disk layout or the key changes, so stale files are rebuilt


def _char_dtype(n_chars: int) -> torch.dtype:
    if n_chars <= 256:
        return torch.uint8
    if n_chars <= 2**15:
        return torch.int16
    return torch.int32


class TokenCharTable:
    """Token -> character-id table, with its per-device copies cached.

    Args:
        chars: integer tensor or array [V, Lmax]; entries past a token's length are ignored.
        lengths: integer tensor or array [V], each in [0, Lmax].
        n_chars: size of the character alphabet; every used char id must be in [0, n_chars).
        name: a label saying where the table came from (used in messages and cache keys).
    """

    def __init__(self, chars, lengths, n_chars: int, name: str = "custom", alphabet: str | None = None):
        if not isinstance(n_chars, int) or isinstance(n_chars, bool) or n_chars < 1:
            raise ValueError(f"TokenCharTable: n_chars must be a positive int, got {n_chars!r}")
        if alphabet is not None and (not isinstance(alphabet, str) or len(alphabet) != n_chars):
            raise ValueError(f"TokenCharTable: alphabet must be a str of n_chars ({n_chars}) chars or None")
        chars, lengths = _integer_tensor(chars, "chars", 2), _integer_tensor(lengths, "lengths", 1)
        _check_consistent(chars, lengths.long(), n_chars, past_ends_checked=False)
        # Canonical form: zeros past each token's end, smallest dtype that holds n_chars.
        lengths = lengths.long()
        chars = chars.masked_fill(torch.arange(chars.shape[1]) >= lengths[:, None], 0)  # [V, Lmax]
        self._chars = chars.to(_char_dtype(n_chars)).contiguous()  # [V, Lmax]
        self._lengths = lengths.to(torch.int32).contiguous()  # [V]
        self.n_chars = n_chars
        self.name = name
        self.alphabet = alphabet  # the char of each char id (from_strings), None for byte tables
        self._version = 0
        self._derive()

    # ------------------------------------------------------------ contents and their version
    # Everything derived from chars and lengths (the step bound of most_chars, device copies,
    # backends' precomputations such as the cpp trie, a CharEmbedding's inference cache) is
    # tied to `version`. Assigning chars or lengths, or editing them in place (which bumps
    # a tensor's _version), makes the next use check the table again and rebuild what was
    # derived from it, or refuse an inconsistent table before any kernel reads it.
    @property
    def chars(self) -> torch.Tensor:
        """[V, Lmax] char ids (a CPU tensor)."""
        return self._chars

    @chars.setter
    def chars(self, value) -> None:
        self._chars = _integer_tensor(value, "chars", 2).contiguous()

    @property
    def lengths(self) -> torch.Tensor:
        """[V] token lengths (a CPU tensor)."""
        return self._lengths

    @lengths.setter
    def lengths(self, value) -> None:
        self._lengths = _integer_tensor(value, "lengths", 1).contiguous()

    @property
    def version(self) -> int:
        """A number that changes whenever chars or lengths change (by assignment or an
        in-place edit). Reading it checks a changed table again: a ValueError names what is
        inconsistent. Not read under torch.compile (a trace cannot see tensor versions)."""
        if not torch.compiler.is_compiling() and self._contents_key() != self._derived_from:
            _check_consistent(self._chars, self._lengths.long(), self.n_chars, past_ends_checked=True, name=self.name)
            self._version += 1
            self._derive()
        return self._version

    def _contents_key(self) -> tuple[int, int, int, int]:
        chars, lengths = self._chars, self._lengths
        return (id(chars), chars._version, id(lengths), lengths._version)

    def _derive(self) -> None:
        """(Re)compute what depends on chars and lengths; called with a consistent table."""
        # [V] the sum of the k + 1 longest lengths, for most_chars (host ints: no tensor read per call)
        self._longest_first_totals = torch.cumsum(self._lengths.long().sort(descending=True).values, 0).tolist()
        self._device_copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._backend_state: dict[str, object] = {}
        self._derived_from = self._contents_key()

    @property
    def backend_state(self) -> dict[str, object]:
        """Backends' and encoders' precomputations for this table's current contents (e.g.
        the cpp vocabulary trie, ngram-exact's n-grams), kept here so they live as long as
        the table and a compiled graph can read them; emptied whenever the contents change."""
        self.version  # noqa: B018 - checks the contents, clearing this dict if they changed
        return self._backend_state

    @property
    def vocab_size(self) -> int:
        return self.chars.shape[0]

    @property
    def max_len(self) -> int:
        return self.chars.shape[1]

    def most_chars(self, n_tokens: int) -> int:
        """The most characters any n_tokens distinct tokens of this table have in total (the
        sum of the n_tokens longest): a bound a batch's packed LSTM steps never exceed."""
        self.version  # noqa: B018 - a changed table recomputes the totals
        n = min(n_tokens, self.vocab_size)
        return self._longest_first_totals[n - 1] if n > 0 else 0

    def on(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(chars, lengths) on `device`, copied once and then reused."""
        device = torch.device(device)
        self.version  # noqa: B018 - a changed table drops its stale device copies
        if device.type != "cpu" and device.index is None:
            device = torch.device(device.type, torch.empty(0, device=device).device.index)
        if device.type == "cpu":
            return self.chars, self.lengths
        if device not in self._device_copies:
            self._device_copies[device] = (self.chars.to(device), self.lengths.to(device))
        return self._device_copies[device]

    def token_text(self, token_id: int) -> bytes | str | list[int]:
        """The characters of one token: a str over the alphabet for a table that has one
        (from_strings), bytes for a byte table (n_chars 256), else the char ids."""
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token_text: token_id must be an int in [0, {self.vocab_size}), got {token_id!r}")
        ids = self.chars[token_id, : int(self.lengths[token_id])].tolist()
        if self.alphabet is not None:
            return "".join(self.alphabet[i] for i in ids)
        return bytes(ids) if self.n_chars == 256 else ids

    def padded(self, vocab_size: int, allow: int = PAD_ROUNDING - 1, named_by: str | None = None) -> TokenCharTable:
        """This table with zero-length rows appended up to `vocab_size` ids: for a model whose
        id space is padded past its tokenizer's (nanoGPT rounds GPT-2's 50257 up to 50304).

        Rounding up adds fewer than PAD_ROUNDING (1024) rows; more than `allow` rows (by
        default that rounding) is refused with a ValueError naming both sizes: such a table
        is most likely another tokenizer's, and every id past it would be spelled wrong or
        not at all. Pass `allow` (the number of rows you mean to add) to pad further;
        `named_by` (e.g. the setting that chose the table) is named in that error."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < self.vocab_size:
            raise ValueError(
                f"padded: vocab_size must be an int >= the table's {self.vocab_size} ids, got {vocab_size!r}"
            )
        if vocab_size == self.vocab_size:
            return self
        extra = vocab_size - self.vocab_size
        if extra > allow:
            chosen = f" ({named_by})" if named_by else ""
            raise ValueError(
                f"padded: the table {self.name!r}{chosen} covers {self.vocab_size} ids and the model {vocab_size}: "
                f"{extra} ids without chars is more than rounding up adds (< {PAD_ROUNDING}), so the table is "
                f"likely another tokenizer's; build it from the model's tokenizer, or pass allow={extra}"
            )
        chars = torch.cat([self.chars, self.chars.new_zeros(extra, self.max_len)])  # [vocab_size, Lmax]
        lengths = torch.cat([self.lengths, self.lengths.new_zeros(extra)])  # [vocab_size]
        return TokenCharTable(chars, lengths, self.n_chars, name=f"{self.name}+{extra}", alphabet=self.alphabet)

    def shuffled(self, seed: int) -> TokenCharTable:
        """The same rows under a seeded random permutation of the token ids: token i gets
        the characters of token perm[i]. A control with the same alphabet, the same token
        lengths (as a multiset) and the same compute, but no true spelling."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"shuffled: seed must be an int >= 0, got {seed!r}")
        perm = torch.randperm(self.vocab_size, generator=torch.Generator().manual_seed(seed))  # [V]
        return TokenCharTable(
            self.chars[perm],
            self.lengths[perm],
            self.n_chars,
            name=f"{self.name}-shuffled{seed}",
            alphabet=self.alphabet,
        )

    def __repr__(self) -> str:
        return (
            f"TokenCharTable(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"max_len={self.max_len}, n_chars={self.n_chars})"
        )

    # ------------------------------------------------------------------ from tokenizers
    @classmethod
    def from_tiktoken(
        cls, encoding, max_chars: int | None = None, cache_dir: str | os.PathLike | None = None
    ) -> TokenCharTable:
        """Build (or load from the disk cache) the byte table of a tiktoken Encoding.

        Every id in [0, encoding.n_vocab) gets a row: ordinary tokens their UTF-8 bytes,
        special tokens and unused ids length 0. `max_chars`, if given, keeps only the
        first `max_chars` bytes of longer tokens (the study used 8); by default nothing is cut.
        The cache key is the encoding's name plus a SHA-256 of every token's bytes and of
        max_chars, so a changed encoding never reads a stale table.
        """
        _check_is_tiktoken_encoding(encoding)
        _check_max_chars(max_chars, "from_tiktoken")
        return cls._from_token_bytes(token_bytes(encoding), encoding.name, max_chars, cache_dir)

    @classmethod
    def from_hf(cls, tokenizer, max_chars: int | None = None, cache_dir: str | os.PathLike | None = None):
        """The byte table of a Hugging Face tokenizer: a tokenizers.Tokenizer or a transformers
        fast tokenizer. Every id gets the exact UTF-8 bytes its token contributes to decoded
        text: byte-level BPE (GPT-2, RoBERTa, Llama-3, Qwen) through the inverted byte ->
        unicode alphabet; SentencePiece-style (Llama-2, Mistral, T5) with "▁" as a space and
        a byte-fallback token <0xNN> as that byte (their decoder drops the one space it
        prepends to a text); WordPiece (BERT) without the "##" of a continued word. Special
        tokens and unused ids get length 0. A tokenizer whose decoder is none of these is
        refused with a ValueError that names it. Cached like from_tiktoken.
        """
        _check_max_chars(max_chars, "from_hf")
        every_token, family = hf_token_bytes(tokenizer)
        return cls._from_token_bytes(every_token, f"hf-{family}", max_chars, cache_dir)

    @classmethod
    def from_sentencepiece(cls, model, max_chars: int | None = None, cache_dir: str | os.PathLike | None = None):
        """The byte table of a SentencePiece model: a .model file or a
        sentencepiece.SentencePieceProcessor (pip install sentencepiece). Control and unknown
        pieces get length 0, byte pieces their byte, the others their text with "▁" as a
        space. Cached like from_tiktoken."""
        _check_max_chars(max_chars, "from_sentencepiece")
        try:
            import sentencepiece
        except ImportError as err:
            raise ImportError("from_sentencepiece needs the sentencepiece package: pip install sentencepiece") from err
        if isinstance(model, (str, os.PathLike)):
            if not Path(model).is_file():
                raise ValueError(f"from_sentencepiece: no SentencePiece model file at {model}")
            model = sentencepiece.SentencePieceProcessor(model_file=str(model))
        if not isinstance(model, sentencepiece.SentencePieceProcessor):
            raise TypeError(
                "from_sentencepiece: model must be a .model file path or a SentencePieceProcessor, "
                f"got {type(model).__name__}"
            )
        return cls._from_token_bytes(sentencepiece_token_bytes(model), "sentencepiece", max_chars, cache_dir)

    @classmethod
    def from_strings(
        cls, tokens, alphabet, unknown: int | None = None, max_chars: int | None = None, name: str = "strings"
    ) -> TokenCharTable:
        """The table of token strings over a char alphabet (as a char-level model such as the
        seed study's, with its 100 chars, has it): token i's chars are the positions in
        `alphabet` (a string or a sequence of distinct chars) of the chars of tokens[i];
        None gives a token no chars. A char outside the alphabet is a ValueError naming the
        token, or the char id `unknown` when one is given. `max_chars` keeps only the first
        max_chars chars of longer tokens."""
        _check_max_chars(max_chars, "from_strings")
        alphabet = list(alphabet)
        index = {char: i for i, char in enumerate(alphabet)}
        if not alphabet or len(index) != len(alphabet) or not all(isinstance(c, str) and len(c) == 1 for c in alphabet):
            raise ValueError("from_strings: alphabet must be a non-empty sequence of distinct single chars")
        if unknown is not None and (
            isinstance(unknown, bool) or not isinstance(unknown, int) or not 0 <= unknown < len(alphabet)
        ):
            raise ValueError(
                f"from_strings: unknown must be a char id in [0, {len(alphabet)}) or None, got {unknown!r}"
            )
        rows = []
        for token_id, token in enumerate(tokens):
            if token is not None and not isinstance(token, str):
                raise TypeError(f"from_strings: token {token_id} must be a str or None, got {type(token).__name__}")
            ids = [index.get(char, unknown) for char in (token or "")][:max_chars]
            if None in ids:
                bad = next(char for char in token if char not in index)
                raise ValueError(
                    f"from_strings: token {token_id} ({token!r}) has the char {bad!r}, which is not in the alphabet; "
                    "pass unknown= the char id to give such chars"
                )
            rows.append(ids)
        width = max(1, max(map(len, rows), default=0))
        chars = np.zeros((len(rows), width), dtype=np.int64)  # [V, Lmax]
        for token_id, ids in enumerate(rows):
            chars[token_id, : len(ids)] = ids
        lengths = np.array([len(ids) for ids in rows], dtype=np.int64)  # [V]
        return cls(chars, lengths, len(alphabet), name=name, alphabet="".join(alphabet))

    @classmethod
    def _from_token_bytes(cls, every_token: list, source: str, max_chars: int | None, cache_dir) -> TokenCharTable:
        """The byte table of every id's bytes (None: no chars), read from or written to the
        disk cache under a key of `source`, max_chars and a SHA-256 of every token's bytes."""
        sizes = np.array([-1 if b is None else len(b) for b in every_token], dtype=np.int32)  # [V], -1: None
        joined = b"".join([b for b in every_token if b])
        contents = hashlib.sha256(sizes.tobytes() + joined).hexdigest()  # the sizes split the bytes: no collision
        key = hashlib.sha256(f"{_CACHE_FORMAT}|{source}|{max_chars}|{contents}".encode()).hexdigest()
        name = source if max_chars is None else f"{source}[:{max_chars}]"
        cache_file = Path(cache_dir or default_cache_dir()) / f"table-{safe_filename(source)}-{key[:16]}.npz"
        full = np.maximum(sizes, 0)  # [V]
        lengths = full if max_chars is None else np.minimum(full, max_chars)  # [V]
        chars = _read_cached_chars(cache_file, key, lengths)
        if chars is None:
            chars = np.zeros((len(every_token), max(int(lengths.max()), 1)), dtype=np.uint8)  # [V, Lmax]
            flat = np.frombuffer(joined, dtype=np.uint8)
            if max_chars is not None:  # keep the first max_chars bytes of each token
                starts = np.cumsum(full) - full  # [V] where each token's bytes start in `joined`
                flat = flat[np.repeat(starts, lengths) + _ranges(lengths)]
            chars[np.arange(chars.shape[1]) < lengths[:, None]] = flat
            _save_npz(cache_file, key, chars=chars, lengths=lengths, key=np.array(key))
        return cls._of_bytes(torch.from_numpy(chars), torch.from_numpy(lengths), name)

    @classmethod
    def _of_bytes(cls, chars: torch.Tensor, lengths: torch.Tensor, name: str) -> TokenCharTable:
        """A byte table from arrays built (or read back and verified) here: canonical already,
        so the checks of __init__ over every char are skipped."""
        table = cls.__new__(cls)
        table._chars, table._lengths = chars.contiguous(), lengths.to(torch.int32).contiguous()
        table.n_chars, table.name, table.alphabet, table._version = 256, name, None, 0
        table._derive()
        return table


def _ranges(counts: np.ndarray) -> np.ndarray:
    """[sum(counts)]: 0..counts[0]-1, 0..counts[1]-1, ... (positions inside each token)."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def _check_max_chars(max_chars, where: str) -> None:
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"{where}: max_chars must be a positive int or None, got {max_chars!r}")


def _read_cached_chars(path: Path, key: str, lengths: np.ndarray) -> np.ndarray | None:
    """The cached chars [V, Lmax] when `path` holds the table of `key` with exactly these
    lengths [V]; None for a missing or mismatched file (then it is rebuilt; a file that fails
    its integrity check is named, charfast.cache)."""
    payload = read_checked(path, key)
    if payload is None:
        return None
    try:
        with np.load(io.BytesIO(payload)) as saved:
            chars, saved_lengths, saved_key = saved["chars"], saved["lengths"], str(saved["key"])
    except Exception:  # noqa: BLE001 - a payload that checks out but does not parse: rebuilt and overwritten
        print(f"note: cache file {path} does not hold a table; rebuilding it", file=sys.stderr)
        return None
    fits = (
        saved_key == key
        and np.array_equal(saved_lengths, lengths)
        and chars.dtype == np.uint8
        and chars.shape == (len(lengths), max(int(lengths.max()), 1))
    )
    return chars if fits else None


_WHAT = {"chars": "[vocab, max_len] of char ids", "lengths": "[vocab] of token lengths"}


def _integer_tensor(values, arg: str, dims: int) -> torch.Tensor:
    """`values` as an integer CPU tensor of `dims` dimensions; a clear error naming `arg` if not."""
    try:
        tensor = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"TokenCharTable: {arg} must be an integer tensor or array {_WHAT[arg]}, "
            f"got {type(values).__name__} ({err})"
        ) from err
    if tensor.dim() != dims:
        raise ValueError(f"TokenCharTable: {arg} must be {dims}-D {_WHAT[arg]}, got shape {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"TokenCharTable: {arg} must be an integer tensor, got {tensor.dtype}")
    return tensor.cpu()


def _check_consistent(
    chars: torch.Tensor, lengths: torch.Tensor, n_chars: int, past_ends_checked: bool, name: str | None = None
) -> None:
    """A ValueError naming the problem unless chars [V, W] and lengths [V] form a table:
    at least one token, one length per token, each in [0, W], char ids in [0, n_chars)
    (within each token; everywhere when past_ends_checked, as kernels may read the padding)."""
    where = "TokenCharTable" if name is None else f"TokenCharTable {name!r} (changed since it was built)"
    if lengths.shape[0] != chars.shape[0]:
        raise ValueError(
            f"{where}: lengths must be 1-D with one entry per token ({chars.shape[0]}), "
            f"got shape {tuple(lengths.shape)}"
        )
    if chars.shape[0] == 0:
        raise ValueError(f"{where}: the table needs at least one token")
    max_len = chars.shape[1]
    if lengths.min() < 0 or lengths.max() > max_len:
        bad = int(((lengths < 0) | (lengths > max_len)).nonzero()[0])
        raise ValueError(
            f"{where}: lengths must lie in [0, {max_len}] (the width of chars); "
            f"token {bad} has length {int(lengths[bad])}"
        )
    checked = chars if past_ends_checked else chars.masked_fill(torch.arange(max_len) >= lengths[:, None], 0)
    low, high = (int(checked.min()), int(checked.max())) if checked.numel() else (0, 0)
    if low < 0 or high >= n_chars:
        raise ValueError(f"{where}: char ids must lie in [0, {n_chars}) (n_chars); found {low}..{high}")


def _check_is_tiktoken_encoding(encoding) -> None:
    """tiktoken is imported here, on first use, so `import charfast` does not need it."""
    try:
        import tiktoken
    except ImportError as err:
        raise ImportError("TokenCharTable.from_tiktoken needs the tiktoken package: pip install tiktoken") from err
    if not isinstance(encoding, tiktoken.Encoding):
        raise TypeError(
            f"from_tiktoken: encoding must be a tiktoken.Encoding (e.g. tiktoken.get_encoding(...)), "
            f"got {type(encoding).__name__} {encoding!r}"
        )


def _save_npz(path: Path, cache_key: str, **arrays) -> None:
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    try:
        write_checked(path, [payload.getvalue()], cache_key)
    except OSError:
        pass  # a read-only cache folder costs a rebuild next time, nothing more
