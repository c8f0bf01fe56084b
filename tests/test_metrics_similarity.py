"""Tests of gradsal.metrics.similarity: comparing two maps (chapter 01, The Vanilla Gradient; chapter 05, Sanity Checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gradsal
from gradsal.metrics import similarity


def test_similarity_known_values() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, generator=gen)
    assert similarity.ssim(a, a) == pytest.approx(1.0)
    assert similarity.ssim(a, 3 * a + 2) == pytest.approx(
        1.0
    )  # scale-free after min-max scaling
    assert similarity.spearman(a, a) == pytest.approx(1.0)
    assert similarity.spearman(a, -a) == pytest.approx(-1.0)
    assert similarity.spearman(a, -a, absolute=True) == pytest.approx(1.0)
    assert similarity.spearman(a, torch.exp(a)) == pytest.approx(
        1.0
    )  # ranks only
    b = torch.randn(32, 32, generator=gen)
    assert abs(similarity.spearman(a, b)) < 0.1  # independent maps
    assert similarity.ssim(a, b) < 0.2


def test_similarity_rejects_bad_input() -> None:
    a = torch.rand(16, 16)
    with pytest.raises(ValueError, match="same shape"):
        similarity.ssim(a, torch.rand(16, 17))
    with pytest.raises(ValueError, match="2-D"):
        similarity.spearman(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        similarity.spearman(a, torch.full((16, 16), float("nan")))
    with pytest.raises(ValueError, match="constant"):
        similarity.spearman(a, torch.zeros(16, 16))
    with pytest.raises(TypeError):
        similarity.ssim(a, [[1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        similarity.ssim(torch.rand(4, 4), torch.rand(4, 4))


def test_top_overlap():
    a = np.arange(20.0)
    assert similarity.top_overlap(a, a, 0.1) == 1.0
    assert similarity.top_overlap(a, -a, 0.1) == 0.0
    b = a.copy()
    b[[18, 0]] = b[[0, 18]]  # one of the two top pixels moves away
    assert similarity.top_overlap(a, b, 0.1) == pytest.approx(1 / 3)


def test_map_similarity_closed_forms():
    rng = np.random.default_rng(1)
    a = rng.random((6, 6))
    same = similarity.map_similarity(a, 2 * a + 1)
    assert same["spearman"] == pytest.approx(1.0)
    assert same["pearson"] == pytest.approx(1.0)
    assert same["mean abs diff"] == pytest.approx(0.0, abs=1e-12)
    assert same["top overlap"] == 1.0
    flipped = similarity.map_similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0)
    # min-max scaled, a' and (-a)' add to one, so the mean |a' - (1 - a')| = mean |2 a' - 1|
    na = (a - a.min()) / np.ptp(a)
    assert flipped["mean abs diff"] == pytest.approx(
        np.mean(np.abs(2 * na - 1))
    )


def test_map_similarity_bad_arguments_raise():
    with pytest.raises(ValueError, match="same number"):
        similarity.map_similarity(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="distinct"):
        similarity.map_similarity(np.ones(3), np.arange(3.0))


def test_map_similarity_spearman_is_the_package_rank_correlation():
    rng = np.random.default_rng(3)
    a, b = rng.random((7, 9)), rng.random((7, 9))
    b[0, :3] = b[0, 3]  # ties, which get their average rank
    assert similarity.map_similarity(a, b)[
        "spearman"
    ] == gradsal.rank_correlation(a, b)
    assert similarity.spearman(a, b) == gradsal.rank_correlation(a, b)


def test_one_spearman_in_the_package():
    # every rank correlation goes through gradsal.maps.rank_correlation
    src = Path(gradsal.__file__).parent
    texts = {str(p.relative_to(src)): p.read_text() for p in src.rglob("*.py")}
    assert not [
        f for f, t in texts.items() if "spearmanr(" in t or "rankdata(" in t
    ]
    assert [f for f, t in texts.items() if "average_ranks(" in t] == [
        "maps.py"
    ]


def test_hog_similarity_sees_shared_edges_not_pixel_values():
    import numpy as np

    from gradsal.metrics import hog_similarity

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).astype(float)
    assert hog_similarity(disc, disc) == pytest.approx(1.0)
    # a monotone rescaling and a little noise keep the edges: still highly similar
    # (block normalisation amplifies the noise in flat regions, hence not 0.99)
    assert hog_similarity(disc, 3 * disc + 0.02 * rng.random((64, 64))) > 0.75
    square = ((abs(yy - 32) < 20) & (abs(xx - 32) < 8)).astype(float)
    noise = rng.random((64, 64))
    assert hog_similarity(disc, square) < hog_similarity(
        disc, disc + 0.05 * noise
    )
    assert abs(hog_similarity(noise, rng.random((64, 64)))) < 0.3
    with pytest.raises(ValueError, match="same shape"):
        hog_similarity(disc, disc[:32])
    with pytest.raises(ValueError, match="smaller than a HOG block"):
        hog_similarity(disc[:20, :20], disc[:20, :20])
