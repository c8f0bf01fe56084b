"""Closed-form checks of gradsal.metrics.concentration (map summaries of chapter 01, The Vanilla Gradient)."""

import math

import numpy as np
import pytest
import torch

from gradsal.metrics import concentration


def one_hot(n: int = 100, at: int = 7) -> np.ndarray:
    s = np.zeros(n)
    s[at] = 3.0
    return s


def test_constant_map():
    s = torch.full((10, 10), 0.5)
    assert concentration.sparsity(s) == 0.0
    assert concentration.max_mean_ratio(s) == pytest.approx(1.0)
    assert concentration.top_mass(s, 0.05) == pytest.approx(0.05)
    assert concentration.gini(s) == pytest.approx(0.0, abs=1e-12)


def test_single_pixel_map():
    n = 100
    s = one_hot(n)
    assert concentration.sparsity(s) == pytest.approx((n - 1) / n)
    assert concentration.max_mean_ratio(s) == pytest.approx(n)
    assert concentration.top_mass(s, 0.01) == pytest.approx(1.0)
    assert concentration.gini(s) == pytest.approx((n - 1) / n)


@pytest.mark.parametrize("n", [2, 5, 64])
def test_gini_of_arithmetic_sequence(n):
    assert concentration.gini(np.arange(1, n + 1)) == pytest.approx(
        (n - 1) / (3 * n)
    )


def test_gini_and_ratios_ignore_scale_and_order():
    rng = np.random.default_rng(0)
    s = rng.random((8, 8))
    perm = rng.permutation(s.ravel())
    for f in (
        concentration.gini,
        concentration.max_mean_ratio,
        concentration.top_mass,
        concentration.sparsity,
    ):
        assert f(7.5 * s) == pytest.approx(f(s))
        assert f(perm) == pytest.approx(f(s))


def test_sparsity_threshold():
    s = np.array([0.0, 0.05, 0.2, 0.5, 1.0])
    assert concentration.sparsity(s, 0.1) == pytest.approx(2 / 5)
    assert concentration.sparsity(s, 0.3) == pytest.approx(3 / 5)
    assert concentration.sparsity(np.zeros(4)) == 0.0


def test_top_mass_rounds_count_up():
    s = np.array([4.0, 3.0, 2.0, 1.0])
    assert concentration.top_mass(s, 0.25) == pytest.approx(0.4)
    assert concentration.top_mass(s, 0.3) == pytest.approx(
        0.7
    )  # ceil(1.2) = 2 pixels
    assert concentration.top_mass(s, 1.0) == pytest.approx(1.0)


def test_percentiles_linear_interpolation():
    p = concentration.percentiles(np.arange(101.0), q=(50, 90, 99.5))
    assert p == {"p50": 50.0, "p90": 90.0, "p99.5": 99.5}


def test_map_statistics_keys_and_values():
    s = np.arange(1.0, 101.0)
    out = concentration.map_statistics(
        s, threshold=0.1, fraction=0.05, q=(50, 90)
    )
    assert list(out) == [
        "sparsity",
        "max/mean",
        "top mass",
        "gini",
        "p50/max",
        "p90/max",
    ]
    assert out["sparsity"] == pytest.approx(0.09)  # values 1..9 are below 10
    assert out["max/mean"] == pytest.approx(100 / 50.5)
    assert out["top mass"] == pytest.approx(sum(range(96, 101)) / 5050)
    assert out["p50/max"] == pytest.approx(50.5 / 100)


def test_inputs_not_modified_and_torch_equals_numpy():
    s = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    before = s.clone()
    assert concentration.gini(s) == pytest.approx(
        concentration.gini(s.numpy())
    )
    assert torch.equal(s, before)


@pytest.mark.parametrize(
    "bad", [np.array([]), np.array([1.0, np.nan]), np.array([1.0, -0.5])]
)
def test_bad_maps_raise(bad):
    with pytest.raises(ValueError):
        concentration.gini(bad)


def test_all_zero_map_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="all-zero"):
        concentration.max_mean_ratio(np.zeros(3))
    with pytest.raises(ValueError):
        concentration.top_mass(np.ones(3), 0.0)
    with pytest.raises(ValueError):
        concentration.sparsity(np.ones(3), 1.5)
    with pytest.raises(ValueError):
        concentration.percentiles(np.ones(3), q=(101,))


def test_gini_bounds_random():
    rng = np.random.default_rng(2)
    for _ in range(5):
        s = rng.exponential(size=50)
        g = concentration.gini(s)
        assert 0 <= g <= (50 - 1) / 50
    # an exponential distribution has Gini 1/2 in the large-sample limit
    assert concentration.gini(rng.exponential(size=200_000)) == pytest.approx(
        0.5, abs=0.01
    )
    assert math.isclose(concentration.gini(np.array([0.0, 1.0])), 0.5)


def test_neighbour_correlation_of_speckle_smooth_and_upsampled_maps():
    import numpy as np
    import torch
    import torch.nn.functional as F

    from gradsal.metrics import neighbour_correlation

    rng = np.random.default_rng(0)
    speckle = rng.random((64, 64))
    assert abs(neighbour_correlation(speckle)) < 0.05
    yy, xx = np.mgrid[:64, :64]
    assert neighbour_correlation(np.sin(xx / 10.0) + np.cos(yy / 10.0)) > 0.98
    coarse = torch.from_numpy(rng.random((1, 1, 7, 7)))
    up = F.interpolate(
        coarse, size=(224, 224), mode="bilinear", align_corners=False
    )[0, 0]
    assert neighbour_correlation(up) > 0.99
    with pytest.raises(ValueError, match="constant"):
        neighbour_correlation(np.ones((8, 8)))


def test_neighbour_correlation_of_two_noisy_estimates_of_a_ramp():
    """A ramp M = i + j has neighbour correlation exactly 1 (a shift adds a
    constant). Independent noise of variance var(M) on one copy halves the
    one-map value, var(M) / (var(M) + s^2) = 1/2; the cross version of two
    copies with independent noise recovers the ramp's 1."""
    from gradsal.metrics import neighbour_correlation

    yy, xx = np.mgrid[:128, :128]
    ramp = (yy + xx).astype(float)
    assert neighbour_correlation(ramp) == pytest.approx(1.0)
    s = ramp[:, 1:].std()
    rng = np.random.default_rng(0)
    a = ramp + rng.normal(0.0, s, ramp.shape)
    b = ramp + rng.normal(0.0, s, ramp.shape)
    assert neighbour_correlation(a) == pytest.approx(0.5, abs=0.03)
    assert neighbour_correlation(a, b) == pytest.approx(1.0, abs=0.03)
    # with other = s it is the one-map value
    assert neighbour_correlation(a, a) == pytest.approx(
        neighbour_correlation(a), abs=1e-12
    )
    with pytest.raises(ValueError, match="shape"):
        neighbour_correlation(a, b[:-1])
    with pytest.raises(ValueError, match="not positively correlated"):
        neighbour_correlation(a, -a)


def test_cross_neighbour_correlation_recovers_a_cosine_field_through_noise():
    # t = cos(2 pi j / 8): correlation cos(pi / 4) one pixel right, 1 one
    # pixel down, so the neighbour correlation of t is (1 + cos(pi / 4)) / 2
    import math

    import numpy as np

    from gradsal.metrics import neighbour_correlation

    j = np.arange(400)
    t = np.tile(np.cos(2 * np.pi * j / 8), (400, 1))
    rng = np.random.default_rng(1)
    a = t + 2 * rng.standard_normal(t.shape)
    b = t + 2 * rng.standard_normal(t.shape)
    exact = (1 + math.cos(math.pi / 4)) / 2
    assert neighbour_correlation(a, b) == pytest.approx(exact, abs=0.06)
    assert neighbour_correlation(a) < 0.2  # one noisy map is attenuated
