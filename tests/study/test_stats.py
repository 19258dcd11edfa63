"""The study's confidence intervals (the paired and the stratified bootstrap) and the steps-to-threshold reading."""

import numpy as np
import pytest

from charfast.study.analysis import steps_to
from charfast.study.stats import paired_bootstrap_difference, stratified_bootstrap_mean


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


def test_stratified_bootstrap_resamples_within_each_group():
    # Two seeds with different test tokens: the estimate is the mean of the group means.
    groups = [np.r_[np.ones(300), np.zeros(100)], np.r_[np.ones(100), np.zeros(100)]]
    interval = stratified_bootstrap_mean(groups, seed=1)
    assert interval.estimate == pytest.approx((0.75 + 0.5) / 2)
    # Its half width is that of the mean of two independent proportions.
    half_width = 1.96 * np.sqrt(0.75 * 0.25 / 400 + 0.25 / 200) / 2
    assert abs((interval.high - interval.low) / 2 - half_width) < 0.01
    assert stratified_bootstrap_mean([np.ones(5), np.ones(9)]).low == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        stratified_bootstrap_mean([np.ones(3), np.array([])])


def test_steps_to_a_threshold_reads_the_first_evaluation_that_reaches_it():
    curve = [
        {"step": s, "exact_match": {"spell|train": v}} for s, v in [(0, 0.0), (500, 0.45), (1000, 0.8), (1500, 0.7)]
    ]
    assert steps_to(curve, "spell|train", 0.5) == 1000
    assert steps_to(curve, "spell|train", 0.8) == 1000
    assert steps_to(curve, "spell|train", 0.9) is None
    assert steps_to(curve, "count|train", 0.1) is None
