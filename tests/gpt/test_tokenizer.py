"""Tokenizers by name: the corpus BPE (against Hugging Face's trainer) and clear errors."""

import pytest

from charfast.gpt.bpe import END_OF_TEXT, train_bpe
from charfast.gpt.data import load_documents
from charfast.gpt.tokenizer import get_tokenizer


def test_bpe_matches_huggingface_and_round_trips(tiny_corpus, tiny_cache):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = [t for _, t in load_documents(tiny_corpus)]
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
        get_tokenizer(name, ["some text"])
