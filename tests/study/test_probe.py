"""The spelling probe scores near 100% where the spelling is linearly present and near
the majority baseline on random vectors."""

import random

import numpy as np
import pytest
import torch

from charfast.study.probe import LENGTH_CAP, PROBES, run_probes, spelling_labels, train_test_split


@pytest.fixture(scope="module")
def vocabulary():
    """1500 distinct random tokens of 1-12 letters, some with a leading space, plus ids a
    probe skips: a special token (None), punctuation, digits."""
    rng = random.Random(0)
    tokens = set()
    while len(tokens) < 1500:
        word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(1, 12)))
        tokens.add(((" " if rng.random() < 0.3 else "") + word).encode())
    return [None, b"!", b" 42", *sorted(tokens)]


def spelling_vectors(labels, n_tokens: int, width: int = 128) -> torch.Tensor:
    """[n_tokens, width]: each probed token's labels, one-hot, under a random rotation, plus noise."""
    features = np.concatenate(
        [
            labels.letters,
            np.eye(LENGTH_CAP + 1)[labels.length],
            np.eye(26)[labels.first_letter],
            np.eye(27)[labels.second_letter],
            np.eye(26)[labels.last_letter],
        ],
        axis=1,
    )  # [N, 116]
    rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(width, width)))[0][: features.shape[1]]
    vectors = np.random.default_rng(2).normal(scale=0.05, size=(n_tokens, width))
    vectors[labels.token_ids] += features @ rotation
    return torch.from_numpy(vectors)


def mean_scores(results):
    return {p: (np.mean(results[p]["score"]), np.mean(results[p]["majority"])) for p in PROBES if p in results}


def test_labels_skip_tokens_without_letters_and_read_the_spelling(vocabulary):
    labels = spelling_labels([None, b"!", b" The", b"42", b"zz"])
    assert labels.token_ids.tolist() == [2, 4]
    assert labels.letters[0, [ord(c) - 97 for c in "the"]].all() and labels.letters[0].sum() == 3
    assert labels.length.tolist() == [4, 2] and labels.first_letter.tolist() == [19, 25]
    assert labels.second_letter.tolist() == [7, 25] and labels.last_letter.tolist() == [4, 25]
    assert spelling_labels([b"a1"]).second_letter.tolist() == [26]  # one letter: the "none" class
    with pytest.raises(ValueError, match="no token holds an ASCII letter"):
        spelling_labels([None, b"1"])


def test_the_split_is_frozen_disjoint_and_80_20():
    train, test = train_test_split(1000)
    again_train, again_test = train_test_split(1000)
    assert (train == again_train).all() and (test == again_test).all()
    assert len(train) == 800 and len(test) == 200 and not set(train) & set(test)


def test_a_linearly_present_spelling_is_read_near_perfectly(vocabulary):
    labels = spelling_labels(vocabulary)
    results = run_probes(spelling_vectors(labels, len(vocabulary)), labels, PROBES)
    assert set(mean_scores(results)) == set(PROBES)
    for probe, (score, majority) in mean_scores(results).items():
        assert score > 0.97, (probe, score)
        assert majority < 0.95
    assert len(results["test_token_ids"]) == round(0.2 * len(labels.token_ids))


def test_random_vectors_score_near_the_majority_baseline(vocabulary):
    labels = spelling_labels(vocabulary)
    vectors = torch.from_numpy(np.random.default_rng(3).normal(size=(len(vocabulary), 128)))
    for probe, (score, majority) in mean_scores(run_probes(vectors, labels, PROBES)).items():
        assert score < majority + 0.03, (probe, score, majority)  # no spelling to read
        assert score > majority - 0.05, (probe, score, majority)  # regularised: it does not overfit much


def test_vectors_must_cover_the_vocabulary(vocabulary):
    labels = spelling_labels(vocabulary)
    with pytest.raises(ValueError, match="must be \\[vocab, C\\] covering token id"):
        run_probes(torch.zeros(10, 8), labels)
