"""Tables from the tokenizers users have, with nothing downloaded: tiny tokenizers trained
here with `tokenizers` (byte-level BPE; BPE with Metaspace and byte fallback; Unigram with
Metaspace; WordPiece), their transformers fast wrappers, a SentencePiece model, and token
strings over a char alphabet. The property: the table's bytes of encode(text), joined, are
the UTF-8 of decode(encode(text)), over text of every kind."""

from __future__ import annotations

import random
import re
import string

import pytest
import torch

from charfast import CharEmbedding, TokenCharTable
from charfast.gpt.corpus import shakespeare_documents

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402 - after the skip

SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def _corpus() -> list[str]:
    text = shakespeare_documents()[0][1][:60_000]
    return [*text.splitlines(), "naïve café 日本語 🍓 straße", *random_texts(40, seed=7)]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Text of every kind: ASCII, accents, combining marks, CJK, emoji, control chars, runs of spaces."""
    rng = random.Random(seed)
    pools = [
        string.ascii_letters + string.digits + string.punctuation,
        "àéîõüçñßøåÆŒ",
        "e\u0301a\u0308o\u0302",  # combining marks
        "日本語中文한국어",
        "🍓🙂👍🏽🇫🇷",
        "\t\n\r\x00\x07\x1b",
        " " * 6,
    ]
    return ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def byte_level_bpe():
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def _sentencepiece_style(model, byte_fallback: bool):
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    steps = [decoders.Replace("▁", " ")] + ([decoders.ByteFallback()] if byte_fallback else [])
    tok.decoder = decoders.Sequence([*steps, decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


@pytest.fixture(scope="module")
def byte_fallback_bpe():
    """As transformers writes Llama-2's and Mistral's: BPE over Metaspace, byte fallback."""
    tok = _sentencepiece_style(models.BPE(), byte_fallback=False)
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS))
    vocab, merges = tok.get_vocab(), [tuple(m.split(" ")) for m in _merges(tok)]
    for piece in BYTE_TOKENS:  # the 256 byte pieces are ordinary vocabulary entries
        vocab.setdefault(piece, len(vocab))
    tok = _sentencepiece_style(models.BPE(vocab, merges, byte_fallback=True, unk_token="<unk>"), byte_fallback=True)
    tok.add_special_tokens(SPECIALS)
    return tok


def _merges(tok) -> list[str]:
    import json

    return [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]


@pytest.fixture(scope="module")
def unigram():
    """As transformers writes T5's: Unigram over Metaspace, no byte fallback."""
    tok = _sentencepiece_style(models.Unigram(), byte_fallback=False)
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=SPECIALS, unk_token="<unk>")
    tok.train_from_iterator(_corpus(), trainer)
    return tok


@pytest.fixture(scope="module")
def wordpiece():
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(cleanup=False)  # cleanup's spellings depend on neighbours: refused
    trainer = trainers.WordPieceTrainer(vocab_size=500, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def joined_bytes(table: TokenCharTable, ids: list[int]) -> bytes:
    return b"".join(table.token_text(i) for i in ids)


def test_byte_level_bpe_spells_decoded_text_exactly(byte_level_bpe, tmp_path):
    table = TokenCharTable.from_hf(byte_level_bpe, cache_dir=tmp_path)
    assert table.vocab_size == byte_level_bpe.get_vocab_size() and table.n_chars == 256
    for text in [*random_texts(300), "How many r's are in strawberry?"]:
        ids = byte_level_bpe.encode(text).ids
        assert joined_bytes(table, ids) == byte_level_bpe.decode(ids).encode("utf-8") == text.encode("utf-8"), text
    eot = byte_level_bpe.token_to_id("<|endoftext|>")
    assert int(table.lengths[eot]) == 0  # special: no chars
    assert table.token_text(byte_level_bpe.token_to_id("Ġ")) == b" "


@pytest.mark.parametrize("which", ["byte_fallback_bpe", "unigram"])
def test_sentencepiece_style_spells_decoded_text_up_to_the_prepended_space(which, request, tmp_path):
    tok = request.getfixturevalue(which)
    table = TokenCharTable.from_hf(tok, cache_dir=tmp_path)
    texts = random_texts(300) if which == "byte_fallback_bpe" else [t for t in _corpus()[:300] if t]
    for text in texts:
        ids = tok.encode(text).ids
        decoded = tok.decode(ids, skip_special_tokens=False).encode("utf-8")
        # The pre-tokenizer prepends "▁" to the text and the decoder strips that one space.
        assert joined_bytes(table, ids) in (decoded, b" " + decoded), text
    for special in SPECIALS:
        assert int(table.lengths[tok.token_to_id(special)]) == 0
    if which == "byte_fallback_bpe":
        assert table.token_text(tok.token_to_id("<0x0A>")) == b"\n"
        assert table.token_text(tok.token_to_id("<0xE6>")) == b"\xe6"


def test_wordpiece_pieces_are_their_surface_form_and_word_starts_keep_their_space(wordpiece, tmp_path):
    table = TokenCharTable.from_hf(wordpiece, cache_dir=tmp_path)
    specials = {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"}
    for piece, token_id in wordpiece.get_vocab().items():
        if piece in specials:
            assert int(table.lengths[token_id]) == 0, piece  # [UNK], [CLS], ...: special
        elif piece.startswith("##"):
            assert table.token_text(token_id) == piece.removeprefix("##").encode("utf-8"), piece
        else:  # a word start, as "▁x" in SentencePiece
            assert table.token_text(token_id) == b" " + piece.encode("utf-8"), piece
    word = wordpiece.encode("strawberries").tokens
    assert len(word) > 1 and b"".join(table.token_text(wordpiece.token_to_id(t)) for t in word) == b" strawberries"
    start, continuation = wordpiece.token_to_id("s"), wordpiece.token_to_id("##s")
    assert table.token_text(start) == b" s" and table.token_text(continuation) == b"s"
    rows = CharEmbedding(table, 8, char_dim=4, hidden=4, backend="reference")(torch.tensor([start, continuation]))
    assert not torch.equal(rows[0], rows[1])  # the encoder tells a word start from a continuation
    for text in ["the quick brown fox", "strawberries and cream", "naïve café", "hello, world. don't!"]:
        ids = wordpiece.encode(text).ids
        assert joined_bytes(table, ids) == b" " + wordpiece.decode(ids).encode("utf-8"), text


def test_wordpiece_cleanup_is_refused_by_name_with_the_way_out(wordpiece, tmp_path):
    """BERT's tokenizer.json decodes with cleanup: "hello , world ." becomes "hello, world.",
    a spelling of "," that depends on the token before it."""
    bert_like = tokenizers.Tokenizer.from_str(wordpiece.to_str())
    bert_like.decoder = decoders.WordPiece()  # cleanup=True, the default
    ids = bert_like.encode("hello, world.").ids
    assert bert_like.decode(ids) == "hello, world." and wordpiece.decode(ids) == "hello , world ."
    with pytest.raises(ValueError, match=r"step\(s\) WordPiece\(cleanup=True\) that from_hf does not model") as err:
        TokenCharTable.from_hf(bert_like, cache_dir=tmp_path)
    assert "WordPiece(prefix='##', cleanup=False)" in str(err.value)


@pytest.mark.parametrize("which", ["byte_level_bpe", "byte_fallback_bpe", "unigram", "wordpiece"])
def test_a_transformers_fast_wrapper_gives_the_same_table(which, request, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = request.getfixturevalue(which)
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    direct, through = (TokenCharTable.from_hf(t, cache_dir=tmp_path) for t in (tok, wrapped))
    assert torch.equal(direct.chars, through.chars) and torch.equal(direct.lengths, through.lengths)


def test_the_cache_is_keyed_on_every_tokens_bytes(byte_level_bpe, tmp_path):
    first = TokenCharTable.from_hf(byte_level_bpe, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("table-hf-byte-level-*.npz")
    again = TokenCharTable.from_hf(byte_level_bpe, cache_dir=tmp_path)
    assert torch.equal(first.chars, again.chars) and len(list(tmp_path.glob("*.npz"))) == 1
    other = tokenizers.Tokenizer.from_str(byte_level_bpe.to_str())
    other.add_tokens(["strawberry!"])  # one more token: another key, another file
    assert TokenCharTable.from_hf(other, cache_dir=tmp_path).token_text(other.token_to_id("strawberry!")) == (
        b"strawberry!"
    )
    assert len(list(tmp_path.glob("*.npz"))) == 2 and cached.exists()


def test_a_tokenizer_it_cannot_read_is_refused_by_name(tmp_path):
    word_level = tokenizers.Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="cannot tell how a WordLevel tokenizer with decoder none spells its tokens"):
        TokenCharTable.from_hf(word_level, cache_dir=tmp_path)
    bpe_without_decoder = tokenizers.Tokenizer(models.BPE())
    with pytest.raises(ValueError, match="a BPE tokenizer with decoder none"):
        TokenCharTable.from_hf(bpe_without_decoder, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="must be a tokenizers.Tokenizer or a transformers fast tokenizer"):
        TokenCharTable.from_hf("gpt2", cache_dir=tmp_path)


def test_byte_fallback_pieces_registered_as_special_tokens_are_their_bytes(tmp_path):
    """A SentencePiece-style BPE trained with tokenizers gets its 256 byte pieces through the
    trainer's special_tokens: the ByteFallback decoder still turns each into its byte."""
    tok = _sentencepiece_style(models.BPE(byte_fallback=True, unk_token="<unk>"), byte_fallback=True)
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS + BYTE_TOKENS))
    added = tok.get_added_tokens_decoder()
    assert all(added[tok.token_to_id(piece)].special for piece in BYTE_TOKENS)  # how users register them
    table = TokenCharTable.from_hf(tok, cache_dir=tmp_path)
    ids = tok.encode("ж").ids
    assert [tok.id_to_token(i) for i in ids][-2:] == ["<0xD0>", "<0xB6>"]  # ж is not in the corpus: bytes
    assert joined_bytes(table, ids).strip() == "ж".encode() == tok.decode(ids, skip_special_tokens=False).encode()
    for text in random_texts(200):
        ids = tok.encode(text).ids
        decoded = tok.decode(ids, skip_special_tokens=False).encode("utf-8")
        assert joined_bytes(table, ids) in (decoded, b" " + decoded), text
    for special in SPECIALS:
        assert int(table.lengths[tok.token_to_id(special)]) == 0, special  # the other special tokens stay empty


def _decoder_with(decoder, model=None):
    tok = tokenizers.Tokenizer(model or models.BPE())
    tok.decoder = decoder
    return tok


@pytest.mark.parametrize(
    "decoder, model, step",
    [
        (lambda: decoders.Sequence([decoders.Replace("Ġ", "_"), decoders.ByteLevel()]), None, "Replace('Ġ' -> '_')"),
        (lambda: decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)]), None, "Strip(' ', start=1"),
        (
            lambda: decoders.Sequence([decoders.Replace("▁", " "), decoders.Replace("a", "b"), decoders.Fuse()]),
            None,
            "Replace('a' -> 'b')",
        ),
        (lambda: decoders.Sequence([decoders.Metaspace(), decoders.Strip(" ", 0, 1)]), None, "Strip(' ', start=0"),
        (
            lambda: decoders.Sequence([decoders.WordPiece(cleanup=False), decoders.Replace("x", "y")]),
            lambda: models.WordPiece({"a": 0, "[UNK]": 1}, unk_token="[UNK]"),
            "Replace('x' -> 'y')",
        ),
    ],
    ids=["byte-level + replace", "byte-level + strip", "sentencepiece + replace", "metaspace + strip", "wordpiece"],
)
def test_a_decoder_step_that_is_not_modeled_is_refused_by_name(tmp_path, decoder, model, step):
    tok = _decoder_with(decoder(), model() if model else None)
    with pytest.raises(ValueError, match=r"has step\(s\) " + re.escape(step) + r".*that from_hf does not model"):
        TokenCharTable.from_hf(tok, cache_dir=tmp_path)


# ------------------------------------------------------------------ sentencepiece
@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("spm")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(line for line in _corpus() if line.strip()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "tiny"),
        vocab_size=400,
        byte_fallback=True,
        character_coverage=0.9995,
        minloglevel=2,
    )
    return folder / "tiny.model"


def test_sentencepiece_spells_decoded_text_up_to_the_prepended_space(sentencepiece_model, tmp_path):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model))
    table = TokenCharTable.from_sentencepiece(sentencepiece_model, cache_dir=tmp_path)
    same = TokenCharTable.from_sentencepiece(processor, cache_dir=tmp_path)
    assert torch.equal(table.chars, same.chars) and table.vocab_size == processor.get_piece_size()
    for text in random_texts(300):
        ids = processor.encode(text)
        decoded = processor.decode(ids).encode("utf-8")
        assert joined_bytes(table, ids) in (decoded, b" " + decoded), text
    assert all(int(table.lengths[i]) == 0 for i in (processor.bos_id(), processor.eos_id(), processor.unk_id()))
    with pytest.raises(ValueError, match="no SentencePiece model file at"):
        TokenCharTable.from_sentencepiece(tmp_path / "missing.model")


# ------------------------------------------------------------------ token strings over an alphabet
SEED_ALPHABET = string.printable  # the seed study's 100 chars


def test_from_strings_spells_over_the_alphabet():
    table = TokenCharTable.from_strings(["the", " cat", None, "a\tb"], SEED_ALPHABET)
    assert table.n_chars == 100 and table.lengths.tolist() == [3, 4, 0, 3]
    assert table.token_text(1) == " cat" and table.chars[1, :4].tolist() == [SEED_ALPHABET.index(c) for c in " cat"]
    capped = TokenCharTable.from_strings(["strawberry"], SEED_ALPHABET, max_chars=8)
    assert capped.lengths.tolist() == [8]


@pytest.mark.parametrize(
    "tokens, alphabet, unknown, error, message",
    [
        (["caf\u00e9"], SEED_ALPHABET, None, ValueError, r"token 0 \('café'\) has the char 'é', which is not in the"),
        (["ab"], "abca", None, ValueError, "distinct single chars"),
        (["ab"], "", None, ValueError, "non-empty"),
        (["ab"], "ab", 2, ValueError, r"unknown must be a char id in \[0, 2\)"),
        ([b"ab"], "ab", None, TypeError, "token 0 must be a str or None"),
    ],
)
def test_from_strings_mistakes_are_named(tokens, alphabet, unknown, error, message):
    with pytest.raises(error, match=message):
        TokenCharTable.from_strings(tokens, alphabet, unknown=unknown)


def test_from_strings_maps_chars_outside_the_alphabet_to_the_unknown_id_given():
    table = TokenCharTable.from_strings(["café"], "acfe?", unknown=4)
    assert table.chars[0].tolist() == [1, 0, 2, 4] and table.token_text(0) == "caf?"


class SeedCharEncoder(torch.nn.Module):
    """The seed study's char encoder, as its code has it: an Embedding over its 100-char
    alphabet, an nn.LSTM over packed sequences of each token's first 8 chars, a Linear."""

    def __init__(self, vocab: list[str], dim: int = 24):
        super().__init__()
        self.stoi = {c: i for i, c in enumerate(SEED_ALPHABET)}
        self.vocab = vocab
        self.char_embedding = torch.nn.Embedding(len(SEED_ALPHABET), dim)
        self.lstm = torch.nn.LSTM(dim, dim, batch_first=True)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        chars = [torch.tensor([self.stoi[c] for c in self.vocab[i][:8]]) for i in idx.tolist()]
        padded = torch.nn.utils.rnn.pad_sequence(chars, batch_first=True)
        lengths = torch.tensor([len(c) for c in chars])
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            self.char_embedding(padded), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)
        return self.proj(h[0])


def test_a_seed_style_encoder_runs_in_charfast_through_from_strings():
    """No seed weights are at hand: a synthetic encoder with the seed's alphabet and layout
    stands in. Its weights load into CharEmbedding over from_strings' table (its 8-char cap
    as max_chars), and the outputs agree."""
    rng = random.Random(3)
    vocab = ["".join(rng.choice(SEED_ALPHABET) for _ in range(rng.randint(1, 12))) for _ in range(60)]
    torch.manual_seed(0)
    seed = SeedCharEncoder(vocab).double()
    table = TokenCharTable.from_strings(vocab, SEED_ALPHABET, max_chars=8)
    emb = CharEmbedding(table, 24, char_dim=24, hidden=24, backend="reference").double()
    emb.char_emb.load_state_dict(seed.char_embedding.state_dict())
    emb.lstm.load_state_dict(seed.lstm.state_dict())
    emb.proj.load_state_dict(seed.proj.state_dict())
    idx = torch.randint(0, len(vocab), (50,))
    torch.testing.assert_close(emb(idx), seed(idx), rtol=1e-10, atol=1e-12)
