"""Closed-form checks of gradsal.statistics (map summaries of chapter 01)."""

import math

import numpy as np
import pytest
import torch

from gradsal import statistics as st


def one_hot(n: int = 100, at: int = 7) -> np.ndarray:
    s = np.zeros(n)
    s[at] = 3.0
    return s


def test_constant_map():
    s = torch.full((10, 10), 0.5)
    assert st.sparsity(s) == 0.0
    assert st.max_mean_ratio(s) == pytest.approx(1.0)
    assert st.top_mass(s, 0.05) == pytest.approx(0.05)
    assert st.gini(s) == pytest.approx(0.0, abs=1e-12)


def test_single_pixel_map():
    n = 100
    s = one_hot(n)
    assert st.sparsity(s) == pytest.approx((n - 1) / n)
    assert st.max_mean_ratio(s) == pytest.approx(n)
    assert st.top_mass(s, 0.01) == pytest.approx(1.0)
    assert st.gini(s) == pytest.approx((n - 1) / n)


@pytest.mark.parametrize("n", [2, 5, 64])
def test_gini_of_arithmetic_sequence(n):
    assert st.gini(np.arange(1, n + 1)) == pytest.approx((n - 1) / (3 * n))


def test_gini_and_ratios_ignore_scale_and_order():
    rng = np.random.default_rng(0)
    s = rng.random((8, 8))
    perm = rng.permutation(s.ravel())
    for f in (st.gini, st.max_mean_ratio, st.top_mass, st.sparsity):
        assert f(7.5 * s) == pytest.approx(f(s))
        assert f(perm) == pytest.approx(f(s))


def test_sparsity_threshold():
    s = np.array([0.0, 0.05, 0.2, 0.5, 1.0])
    assert st.sparsity(s, 0.1) == pytest.approx(2 / 5)
    assert st.sparsity(s, 0.3) == pytest.approx(3 / 5)
    assert st.sparsity(np.zeros(4)) == 0.0


def test_top_mass_rounds_count_up():
    s = np.array([4.0, 3.0, 2.0, 1.0])
    assert st.top_mass(s, 0.25) == pytest.approx(0.4)
    assert st.top_mass(s, 0.3) == pytest.approx(0.7)  # ceil(1.2) = 2 pixels
    assert st.top_mass(s, 1.0) == pytest.approx(1.0)


def test_percentiles_linear_interpolation():
    p = st.percentiles(np.arange(101.0), q=(50, 90, 99.5))
    assert p == {"p50": 50.0, "p90": 90.0, "p99.5": 99.5}


def test_map_statistics_keys_and_values():
    s = np.arange(1.0, 101.0)
    out = st.map_statistics(s, threshold=0.1, fraction=0.05, q=(50, 90))
    assert list(out) == ["sparsity", "max/mean", "top mass", "gini", "p50/max", "p90/max"]
    assert out["sparsity"] == pytest.approx(0.09)  # values 1..9 are below 10
    assert out["max/mean"] == pytest.approx(100 / 50.5)
    assert out["top mass"] == pytest.approx(sum(range(96, 101)) / 5050)
    assert out["p50/max"] == pytest.approx(50.5 / 100)


def test_top_overlap():
    a = np.arange(20.0)
    assert st.top_overlap(a, a, 0.1) == 1.0
    assert st.top_overlap(a, -a, 0.1) == 0.0
    b = a.copy()
    b[[18, 0]] = b[[0, 18]]  # one of the two top pixels moves away
    assert st.top_overlap(a, b, 0.1) == pytest.approx(1 / 3)


def test_map_similarity_closed_forms():
    rng = np.random.default_rng(1)
    a = rng.random((6, 6))
    same = st.map_similarity(a, 2 * a + 1)
    assert same["spearman"] == pytest.approx(1.0)
    assert same["pearson"] == pytest.approx(1.0)
    assert same["mean abs diff"] == pytest.approx(0.0, abs=1e-12)
    assert same["top overlap"] == 1.0
    flipped = st.map_similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0)
    # min-max scaled, a' and (-a)' add to one, so the mean |a' - (1 - a')| = mean |2 a' - 1|
    na = (a - a.min()) / np.ptp(a)
    assert flipped["mean abs diff"] == pytest.approx(np.mean(np.abs(2 * na - 1)))


def test_inputs_not_modified_and_torch_equals_numpy():
    s = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    before = s.clone()
    assert st.gini(s) == pytest.approx(st.gini(s.numpy()))
    assert torch.equal(s, before)


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([1.0, -0.5])])
def test_bad_maps_raise(bad):
    with pytest.raises(ValueError):
        st.gini(bad)


def test_all_zero_map_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="all-zero"):
        st.max_mean_ratio(np.zeros(3))
    with pytest.raises(ValueError):
        st.top_mass(np.ones(3), 0.0)
    with pytest.raises(ValueError):
        st.sparsity(np.ones(3), 1.5)
    with pytest.raises(ValueError):
        st.percentiles(np.ones(3), q=(101,))
    with pytest.raises(ValueError, match="same number"):
        st.map_similarity(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="distinct"):
        st.map_similarity(np.ones(3), np.arange(3.0))


def test_gini_bounds_random():
    rng = np.random.default_rng(2)
    for _ in range(5):
        s = rng.exponential(size=50)
        g = st.gini(s)
        assert 0 <= g <= (50 - 1) / 50
    # an exponential distribution has Gini 1/2 in the large-sample limit
    assert st.gini(rng.exponential(size=200_000)) == pytest.approx(0.5, abs=0.01)
    assert math.isclose(st.gini(np.array([0.0, 1.0])), 0.5)
