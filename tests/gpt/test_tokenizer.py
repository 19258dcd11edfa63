"""Tokenizers by name: the corpus BPE (against Hugging Face's trainer) and clear errors."""

import pytest

from charfast.gpt.bpe import END_OF_TEXT, train_bpe
from charfast.gpt.sources import corpus_pieces
from charfast.gpt.tokenizer import get_tokenizer


def test_bpe_matches_huggingface_and_round_trips(tiny_corpus, tiny_cache):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = [t for piece in corpus_pieces(tiny_corpus) for _, t in piece.documents()]
    encoding = train_bpe(texts, 300, cache_dir=tiny_cache)
    assert encoding.n_vocab == 301 and encoding.encode_single_token(END_OF_TEXT) == 300
    assert encoding.name.startswith("bpe300-")
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    sample = texts[1][:3000] + " Naïve café — ünïcode!"
    ours = [encoding.decode_single_token_bytes(t) for t in encoding.encode_ordinary(sample)]
    theirs = hf.encode(sample).tokens
    assert len(ours) == len(theirs)  # the same segmentation, token for token
    assert encoding.decode(encoding.encode_ordinary(sample)) == sample
    cached = train_bpe(texts, 300, cache_dir=tiny_cache)
    assert cached.name == encoding.name and cached.encode_ordinary(sample) == encoding.encode_ordinary(sample)
    limited = train_bpe(texts, 300, max_token_length=3, cache_dir=tiny_cache)
    assert max(len(limited.decode_single_token_bytes(i)) for i in range(300)) <= 3


@pytest.mark.parametrize(
    "name, message",
    [
        ("gpt9_base", "unknown tokenizer 'gpt9_base'"),
        ("bpe:lots", "expected 'bpe:VOCAB"),
        ("bpe:100", r"VOCAB must lie in \[257, 16777216\]"),
    ],
)
def test_bad_tokenizer_names(name, message):
    with pytest.raises(ValueError, match=message):
        get_tokenizer(name, lambda: ["some text"])


def test_a_corpus_bpe_trains_on_a_bounded_hash_spread_sample(monkeypatch, tmp_path):
    from charfast.gpt import tokenizer
    from charfast.gpt.bpe import train_bpe
    from charfast.gpt.tokenizer import bpe_sample

    texts = [f"document {i} " * 50 for i in range(100)]  # 100 texts of about 600 chars
    assert bpe_sample(lambda: texts, max_chars=10**9) == texts  # a small corpus: all of it, as before
    sample = bpe_sample(lambda: iter(texts), max_chars=3000)  # a stream, read twice
    assert sum(map(len, sample)) == 3000 and len(sample) == 5
    assert all(t in texts for t in sample[:-1]) and any(t.startswith(sample[-1]) for t in texts)  # the last one cut
    assert [texts.index(t) for t in sample[:-1]] != list(range(4))  # a spread, not the first documents
    assert bpe_sample(lambda: reversed(texts), max_chars=3000) == sample  # by content, whatever the order
    monkeypatch.setattr(tokenizer, "BPE_SAMPLE_CHARS", 3000)
    trained = get_tokenizer("bpe:260", lambda: texts, cache_dir=tmp_path)
    assert trained.name == train_bpe(sample, 260, cache_dir=tmp_path).name  # its name's digest: the sample
