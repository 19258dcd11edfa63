"""The study's confidence intervals: the paired bootstrap of an accuracy difference."""

import numpy as np
import pytest

from charfast.study.stats import paired_bootstrap_difference


def test_bootstrap_on_known_inputs():
    same = np.array([1, 0, 1, 1, 0] * 20)
    interval = paired_bootstrap_difference(same, same)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    ones, zeros = np.ones(50), np.zeros(50)
    assert paired_bootstrap_difference(ones, zeros).low == 1.0
    a = np.r_[np.ones(200), np.zeros(200)]
    b = np.zeros(400)
    interval = paired_bootstrap_difference(a, b, seed=3)
    assert interval.estimate == 0.5
    half_width = 1.96 * np.sqrt(0.25 / 400)  # normal approximation of the same interval
    assert abs((interval.high - interval.low) / 2 - half_width) < 0.01
    assert interval.low < 0.5 < interval.high


def test_bootstrap_averages_seeds_per_example():
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0]])  # [seeds, N]
    b = np.zeros((2, 4))
    assert paired_bootstrap_difference(a, b).estimate == 0.5
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap_difference(a, b[:, :3])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_difference(a, b, confidence=1.5)
