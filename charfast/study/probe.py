"""The spelling probe: does the vector a model feeds its first layer for a token, position
left out, linearly encode how the token is spelled?

For every token with at least one ASCII letter, linear probes on that vector (GPT.token_table:
tok_emb + char_emb for the char archs, tok_emb (+ the matched embedding) for the baselines)
predict:

    letters         for each letter a-z, whether it occurs in the token (26 binary probes)
    length          the token's length in bytes (capped at LENGTH_CAP)
    first_letter    the token's first letter
    second_letter   its second letter, or none (a 27th class) when it has one letter only
    last_letter     its last letter

(The order-blind ones, letters and length, do not tell a bag of chars from a sequence; the
last three do. A preset names the probes it runs: DEFAULT_PROBES unless it says otherwise.)

Probes are trained on 80% of those tokens and scored on the other 20%; the split is a
seeded permutation of the token ids, so it is the same for every arch of a tokenizer. Each
probe's L2 penalty is chosen from L2_GRID on a validation fifth of the training tokens
(small vocabularies leave few tokens per input dimension, so an unpenalised probe overfits). Each
test token gets a score per probe (1/0; for letters the fraction of the 26 letters right)
and the same score of the trivial baseline that always answers the training tokens'
majority class, so a figure is read against what no spelling at all gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from charfast.token_bytes import token_bytes

LENGTH_CAP = 10  # lengths >= this share one class: few tokens are longer
# probe -> (classes, binary): a binary probe has one output per letter
PROBE_OUTPUTS = {
    "letters": (26, True),
    "length": (LENGTH_CAP + 1, False),
    "first_letter": (26, False),
    "second_letter": (27, False),
    "last_letter": (26, False),
}
PROBES = tuple(PROBE_OUTPUTS)
DEFAULT_PROBES = ("letters", "length", "first_letter")
TRAIN_FRACTION = 0.8
SPLIT_SEED = 0
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # probe weight penalties, one picked per probe on a validation part of train


@dataclass(frozen=True)
class SpellingLabels:
    token_ids: np.ndarray  # [N] the probed tokens: those with at least one ASCII letter
    letters: np.ndarray  # [N, 26] bool, letter occurs (case-folded)
    length: np.ndarray  # [N] int64 class: byte length, capped at LENGTH_CAP
    first_letter: np.ndarray  # [N] int64 in [0, 26)
    second_letter: np.ndarray  # [N] int64 in [0, 27): 26 when the token has one letter only
    last_letter: np.ndarray  # [N] int64 in [0, 26)


def spelling_labels(spellings: list[bytes | None]) -> SpellingLabels:
    """Labels of every token whose bytes (spellings[id]; None for special ids) hold an ASCII
    letter (the letters: its ASCII letters, case-folded, in order)."""
    ids, letters, length, first, second, last = [], [], [], [], [], []
    for token_id, spelling in enumerate(spellings):
        folded = [b - ord("a") for b in (spelling or b"").lower() if ord("a") <= b <= ord("z")]
        if not folded:
            continue
        ids.append(token_id)
        present = np.zeros(26, dtype=bool)
        present[folded] = True
        letters.append(present)
        length.append(min(len(spelling), LENGTH_CAP))
        first.append(folded[0])
        second.append(folded[1] if len(folded) > 1 else 26)
        last.append(folded[-1])
    if not ids:
        raise ValueError("spelling_labels: no token holds an ASCII letter; nothing to probe")
    return SpellingLabels(
        np.asarray(ids, dtype=np.int64),
        np.stack(letters),
        *(np.asarray(values, dtype=np.int64) for values in (length, first, second, last)),
    )


def encoding_labels(encoding) -> SpellingLabels:
    return spelling_labels(token_bytes(encoding))


def train_test_split(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of n probed tokens: a seeded TRAIN_FRACTION / rest split."""
    if n < 2:
        raise ValueError(f"train_test_split: need at least 2 tokens to split, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    cut = min(n - 1, max(1, round(TRAIN_FRACTION * n)))
    return np.sort(order[:cut]), np.sort(order[cut:])


def _fit_linear(x: torch.Tensor, targets: torch.Tensor, n_out: int, binary: bool, l2: float) -> torch.nn.Linear:
    """A linear probe x [N, C] -> [N, n_out], trained full-batch with L-BFGS: a convex
    problem, so the result does not depend on a learning-rate schedule."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], n_out, dtype=x.dtype)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = probe(x)  # [N, n_out]
        loss = (
            F.binary_cross_entropy_with_logits(logits, targets.to(x.dtype))
            if binary
            else F.cross_entropy(logits, targets)
        )
        loss = loss + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


@torch.no_grad()
def _standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def _predict(probe: torch.nn.Linear, x: torch.Tensor, binary: bool) -> torch.Tensor:
    with torch.no_grad():
        logits = probe(x)
    return logits > 0 if binary else logits.argmax(dim=1)


def _fit_tuned(x: torch.Tensor, targets: torch.Tensor, n_out: int, binary: bool) -> torch.nn.Linear:
    """_fit_linear with the L2_GRID penalty that scores best on a held-back fifth of x."""
    fit_rows, val_rows = train_test_split(x.shape[0], seed=SPLIT_SEED + 1)

    def validation_accuracy(l2: float) -> float:
        probe = _fit_linear(x[fit_rows], targets[fit_rows], n_out, binary, l2)
        return (_predict(probe, x[val_rows], binary) == targets[val_rows]).double().mean().item()

    best = max(L2_GRID, key=validation_accuracy)
    return _fit_linear(x, targets, n_out, binary, best)


def run_probes(vectors: torch.Tensor, labels: SpellingLabels, probes: tuple[str, ...] = DEFAULT_PROBES) -> dict:
    """Train and score `probes` on vectors [V, C] (one row per token id).

    Returns {probe: {"score": [n_test], "majority": [n_test]}} plus "test_token_ids": the
    per-token scores of the probe and of the majority-class baseline on the held-out tokens.
    """
    if vectors.dim() != 2 or vectors.shape[0] <= int(labels.token_ids.max()):
        raise ValueError(
            f"run_probes: vectors must be [vocab, C] covering token id {int(labels.token_ids.max())}, "
            f"got shape {tuple(vectors.shape)}"
        )
    x = vectors.detach().to("cpu", torch.float64)[torch.from_numpy(labels.token_ids)]  # [N, C]
    train_rows, test_rows = train_test_split(len(labels.token_ids))
    x_train, x_test = _standardize(x[train_rows], x[test_rows])
    results: dict = {"test_token_ids": labels.token_ids[test_rows].tolist()}
    for name in probes:
        n_out, binary = PROBE_OUTPUTS[name]
        target = torch.from_numpy(getattr(labels, name))  # [N, 26] bool or [N] class
        train, truth = target[train_rows], target[test_rows]
        predicted = _predict(_fit_tuned(x_train, train, n_out, binary), x_test, binary)
        if binary:  # letters: each token's score is the fraction of the 26 letters right
            majority = train.double().mean(dim=0) > 0.5  # [26]
            score, baseline = (predicted == truth).double().mean(dim=1), (majority == truth).double().mean(dim=1)
        else:
            majority = torch.bincount(train, minlength=n_out).argmax()
            score, baseline = (predicted == truth).double(), (truth == majority).double()
        results[name] = {"score": score.tolist(), "majority": baseline.tolist()}
    return results


def probe_model(model, encoding, probes: tuple[str, ...] = DEFAULT_PROBES) -> dict:
    """run_probes on the model's input vectors without positions (GPT.token_table)."""
    return run_probes(model.token_table(), encoding_labels(encoding), probes)
