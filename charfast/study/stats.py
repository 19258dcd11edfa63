"""Confidence intervals for the study: percentile bootstraps of a mean or a paired difference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float


def paired_bootstrap_difference(a, b, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of a minus mean of b, with a percentile-bootstrap interval that resamples the
    shared test examples (the pairing: both models answered the same questions).

    a, b: per-example scores [N] (e.g. 0/1 exact match), or [S, N] for S seeds, in which
    case each example's score is first averaged over its seeds.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a.mean(axis=0), b.mean(axis=0)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"scores must be [N] or [seeds, N] with N > 0, got shape {a.shape}")
    return stratified_bootstrap_mean([a - b], n_resamples, confidence, seed)  # one group: the shared examples


def stratified_bootstrap_mean(
    groups: list, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """The mean over groups of each group's mean (e.g. one group per seed, whose items are
    that seed's test tokens), with a percentile-bootstrap interval that resamples items
    within each group. For a paired difference, pass each group's a - b."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    if not groups or any(g.ndim != 1 or g.size == 0 for g in groups):
        raise ValueError("groups must be a non-empty list of non-empty 1-D score arrays")
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    resampled = np.mean(
        [g[rng.integers(0, g.size, size=(n_resamples, g.size))].mean(axis=1) for g in groups], axis=0
    )  # [R]
    return _percentile_interval(float(np.mean([g.mean() for g in groups])), resampled, confidence)


_CHUNK = 500  # resamples drawn at once by seed_and_example_bootstrap


def seed_and_example_bootstrap(
    differences, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """The mean of paired differences [S, N] (S seeds, N shared examples: questions, tokens;
    N = 1 for one number per seed, e.g. a validation loss), with a percentile-bootstrap
    interval that resamples both: S seeds with replacement, then N examples with
    replacement, the same examples for every drawn seed (they are shared). Wider than an
    interval over examples alone by what the seeds disagree; with 3 seeds, coarse."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"differences must be [seeds, examples] with both > 0, got shape {d.shape}")
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    seeds, examples = d.shape
    seed_draws = rng.integers(0, seeds, size=(n_resamples, seeds))  # [R, S]
    seed_means = np.empty((n_resamples, seeds))  # [R, S]: each seed's mean over that resample's examples
    for start in range(0, n_resamples, _CHUNK):  # [chunk, N] draws at a time: bounded memory
        draws = rng.integers(0, examples, size=(min(_CHUNK, n_resamples - start), examples))
        seed_means[start : start + len(draws)] = d[:, draws].mean(axis=2).T
    resampled = np.take_along_axis(seed_means, seed_draws, axis=1).mean(axis=1)  # [R]
    return _percentile_interval(float(d.mean()), resampled, confidence)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _percentile_interval(estimate: float, resampled: np.ndarray, confidence: float) -> Interval:
    """`estimate` with the central `confidence` share of its bootstrap resamples [R]."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), confidence)
