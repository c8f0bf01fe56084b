"""Channel reductions, normalisation and rank correlation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import gradsal

G = torch.tensor(
    [[[1.0, -4.0]], [[-2.0, 3.0]], [[0.5, 0.0]]]
)  # (C=3, H=1, W=2)


@pytest.mark.parametrize(
    "how, expected",
    [
        ("max", [[2.0, 4.0]]),
        ("mean", [[3.5 / 3, 7.0 / 3]]),
        ("l2", [[(1 + 4 + 0.25) ** 0.5, 5.0]]),
        ("sum", [[3.5, 7.0]]),
        ("positive", [[1.0, 3.0]]),
        ("square", [[4.0, 16.0]]),
    ],
)
def test_reductions_over_colour_channels(how, expected):
    torch.testing.assert_close(
        gradsal.reduce_channels(G, how), torch.tensor(expected)
    )


def test_reduction_keeps_leading_axes_and_input():
    g = torch.randn(2, 3, 5, 4)
    before = g.clone()
    assert gradsal.reduce_channels(g, "l2").shape == (2, 5, 4)
    assert torch.equal(g, before)


def test_reduction_errors():
    with pytest.raises(ValueError, match="how must be one of"):
        gradsal.reduce_channels(G, "median")
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        gradsal.reduce_channels(torch.ones(4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        gradsal.reduce_channels(torch.ones(3, 4, 4, dtype=torch.int64))


def test_normalize_to_unit_interval_and_constant_to_zeros():
    s = torch.tensor([[2.0, 4.0], [6.0, 10.0]])
    torch.testing.assert_close(
        gradsal.normalize(s), torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    )
    const = gradsal.normalize(torch.full((3, 3), 7.0))
    assert (
        torch.equal(const, torch.zeros(3, 3)) and not torch.isnan(const).any()
    )


def test_normalize_per_map_versus_shared():
    s = torch.stack([torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 10.0]])])
    per_map = gradsal.normalize(s, dim=(-2, -1))
    torch.testing.assert_close(per_map[:, 0, 1], torch.tensor([1.0, 1.0]))
    shared = gradsal.normalize(s)
    torch.testing.assert_close(shared[:, 0, 1], torch.tensor([0.1, 1.0]))


def test_normalize_with_percentile_clip():
    s = torch.arange(100, dtype=torch.float32).view(10, 10)
    s[0, 0] = 1e6  # one outlier would make everything else dark
    out = gradsal.normalize(s, clip_percentile=95)
    assert float(out.max()) == 1.0 and float(out[5, 5]) > 0.5
    assert float(s[0, 0]) == 1e6  # input untouched


def test_normalize_errors():
    with pytest.raises(ValueError, match="NaN or infinite"):
        gradsal.normalize(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="empty"):
        gradsal.normalize(torch.empty(0))
    with pytest.raises(ValueError, match="clip_percentile"):
        gradsal.normalize(torch.ones(3), clip_percentile=0)


def test_rank_correlation_matches_scipy_and_is_rank_invariant():
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    b = a + 0.3 * rng.random((8, 8))
    rho = gradsal.rank_correlation(torch.tensor(a), torch.tensor(b))
    assert rho == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    assert gradsal.rank_correlation(a, np.exp(3 * a)) == pytest.approx(1.0)
    assert gradsal.rank_correlation(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        gradsal.rank_correlation(a, a[:4])
    with pytest.raises(ValueError, match="constant map"):
        gradsal.rank_correlation(a, np.ones_like(a))


def test_average_ranks_and_rank_correlation_match_scipy_with_ties():
    from scipy.stats import rankdata

    rng = np.random.default_rng(1)
    # many ties (rounded values, zero regions) as in ReLU and Grad-CAM maps
    a = np.round(rng.normal(size=(40, 40)), 1).clip(0)
    b = np.round(a + rng.normal(size=(40, 40)), 1)
    for v in (a, b, a.astype(np.float32), np.arange(5.0)):
        np.testing.assert_array_equal(
            gradsal.maps.average_ranks(v), rankdata(v.ravel())
        )
    rho = gradsal.rank_correlation(a, b)
    assert rho == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    assert -1 < rho < 1
    c = a.astype(np.float32)
    assert gradsal.rank_correlation(c, c) == 1.0


def test_a_ranked_map_gives_the_same_correlations_and_is_checked():
    from gradsal import metrics as mt
    from gradsal.maps import RankedMap

    rng = np.random.default_rng(2)
    a = np.round(rng.normal(size=(30, 30)), 1)  # with ties
    kept = a.copy()
    ranked = RankedMap(torch.tensor(a))
    np.testing.assert_array_equal(a, kept)  # the map is not modified
    for b in (a + rng.normal(size=a.shape), np.exp(a), -a):
        for x, y in ((ranked, b), (b, ranked)):
            assert gradsal.rank_correlation(x, y) == pytest.approx(
                gradsal.rank_correlation(a, b), abs=1e-12
            )
        assert mt.spearman(ranked, b) == pytest.approx(
            mt.spearman(a, b), abs=1e-12
        )
    assert gradsal.rank_correlation(ranked, ranked) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        gradsal.rank_correlation(ranked, a[:4])
    with pytest.raises(ValueError, match="constant map"):
        RankedMap(np.ones((4, 4)))
    with pytest.raises(ValueError, match="rank the absolute values"):
        mt.spearman(ranked, a, absolute=True)
