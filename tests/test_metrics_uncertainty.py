"""Bootstrap intervals over photos and seeds (chapter 07): known answers and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from gradsal.metrics import bootstrap_interval, paired_difference


def test_constant_scores_give_a_point_interval():
    iv = bootstrap_interval(np.full(7, 0.3))
    assert (
        iv.estimate == pytest.approx(0.3)
        and iv.low == pytest.approx(0.3)
        and iv.high == pytest.approx(0.3)
    )
    assert (
        not iv.excludes(0.3)
        and iv.excludes(0.0)
        and str(iv) == "0.30 [0.30, 0.30]"
    )


def test_interval_width_matches_the_standard_error_of_the_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 2.0, size=200)
    iv = bootstrap_interval(values, n_boot=4000)
    se = values.std() / np.sqrt(values.size)
    assert iv.estimate == pytest.approx(values.mean())
    assert (iv.high - iv.low) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.08)


def test_coverage_is_near_nominal_for_thirty_photos_and_low_for_seven():
    rng = np.random.default_rng(1)

    def coverage(n, trials=300):
        hits = 0
        for t in range(trials):
            iv = bootstrap_interval(
                rng.normal(0.0, 1.0, size=n), n_boot=400, seed=t
            )
            hits += iv.low <= 0.0 <= iv.high
        return hits / trials

    assert 0.89 <= coverage(30) <= 0.99
    assert (
        0.78 <= coverage(7) <= 0.93
    )  # the documented caveat: too narrow for n this small


def test_seeds_within_photos_widen_the_interval_by_their_own_spread():
    rng = np.random.default_rng(2)
    photo_effect = rng.normal(0, 1, size=(7, 1))
    no_seed_noise = bootstrap_interval(np.repeat(photo_effect, 4, axis=1))
    noisy = bootstrap_interval(photo_effect + rng.normal(0, 3, size=(7, 4)))
    assert no_seed_noise.n_seeds == noisy.n_seeds == 4
    assert (noisy.high - noisy.low) > (no_seed_noise.high - no_seed_noise.low)


def test_paired_differences_remove_the_shared_photo_effect():
    rng = np.random.default_rng(3)
    photo = rng.normal(0, 5, size=7)  # photos differ a lot
    a, b = photo + 1.0 + rng.normal(0, 0.1, 7), photo + rng.normal(0, 0.1, 7)
    diff = paired_difference(a, b)
    assert diff.excludes(0.0) and diff.low > 0.8 and diff.high < 1.2
    separate = bootstrap_interval(a), bootstrap_interval(b)
    assert separate[0].low < separate[1].high  # the unpaired intervals overlap
    with_seeds = paired_difference(np.tile(a[:, None], (1, 3)), b)
    assert with_seeds.estimate == pytest.approx(diff.estimate)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least two photos"):
        bootstrap_interval([1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval([1.0, np.nan])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="same photos"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
