"""trtexec's statistics on samples whose answers are known."""
import math
import random

import pytest

from benchmarks.stats import median, percentile, summarize


def test_percentiles_follow_trtexec_on_ten_samples():
    samples = [float(i) for i in range(1, 11)]
    # trtexec drops int((1 - p/100) * n) samples from the top, in float32: p90 of 10 drops one.
    assert percentile(samples, 90) == 9.0
    assert percentile(samples, 95) == 10.0
    assert percentile(samples, 99) == 10.0
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 10.0


def test_percentiles_on_hundred_samples():
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 90) == 90.0
    assert percentile(samples, 95) == 95.0
    # float32: (1 - 0.99) * 100 = 0.99999..., so nothing is dropped and p99 is the maximum.
    assert percentile(samples, 99) == 100.0


def test_median_odd_and_even():
    assert median([1.0, 2.0, 7.0]) == 2.0
    assert median([1.0, 2.0, 4.0, 7.0]) == 3.0
    assert math.isinf(median([]))


def test_summary_of_shuffled_samples():
    samples = [float(i) for i in range(1, 11)]
    random.Random(0).shuffle(samples)
    s = summarize(samples)
    assert (s.count, s.min, s.max, s.mean, s.median, s.p90) == (10, 1.0, 10.0, 5.5, 5.5, 9.0)
    assert s.cv == pytest.approx(math.sqrt(8.25) / 5.5)


def test_constant_samples_have_no_variation():
    s = summarize([4.0] * 7)
    assert (s.min, s.median, s.p99, s.max, s.cv) == (4.0, 4.0, 4.0, 4.0, 0.0)


def test_bad_inputs():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)
