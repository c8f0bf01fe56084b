"""Tests of gradsal.metrics.localization: scoring an attribution against a known answer (chapter 06, Beyond Images)."""

import pytest
import torch

from gradsal.metrics import localization


def test_window_mask():
    m = localization.window_mask(torch.tensor([0, 3]), 2, 6)
    assert m.tolist() == [
        [True, True, False, False, False, False],
        [False, False, False, True, True, False],
    ]


def test_top_k_hits_mass_inside_pointing_game():
    attr = torch.tensor([[0.0, 5.0, 4.0, 1.0, 0.0], [3.0, 0.0, 0.0, 2.0, 1.0]])
    mask = torch.tensor(
        [[False, True, True, False, False], [False, True, True, False, False]]
    )
    assert localization.top_k_hits(attr, mask).tolist() == [
        1.0,
        0.0,
    ]  # k = 2 = mask size
    assert localization.top_k_hits(attr, mask, k=3).tolist() == pytest.approx(
        [2 / 3, 0.0]
    )
    assert localization.pointing_game(attr, mask).tolist() == [1.0, 0.0]
    assert localization.mass_inside(-attr, mask).tolist() == pytest.approx(
        [0.9, 0.0]
    )  # uses |attr|
    assert localization.mass_inside(torch.zeros(1, 5), mask[:1]).tolist() == [
        0.0
    ]
    # a shared (T,) mask, e.g. the informative columns of a table
    cols = torch.tensor([True, False, True, False, False])
    assert localization.top_k_hits(attr, cols).tolist() == pytest.approx(
        [0.5, 0.5]
    )
    with pytest.raises(ValueError):
        localization.top_k_hits(attr, mask[:, :3])


def test_random_attribution_scores_the_chance_rate():
    g = torch.Generator().manual_seed(0)
    attr = torch.rand(4000, 50, generator=g)
    start = torch.randint(0, 40, (4000,), generator=g)
    mask = localization.window_mask(start, 10, 50)
    for score in (
        localization.top_k_hits(attr, mask),
        localization.mass_inside(attr, mask),
        localization.pointing_game(attr, mask),
    ):
        assert abs(float(score.mean()) - 0.2) < 0.02


def test_aligned_profile():
    attr = torch.arange(10.0).reshape(1, 10).repeat(2, 1)
    prof = localization.aligned_profile(
        attr, torch.tensor([0, 5]), before=2, after=3
    )
    assert prof.tolist() == pytest.approx([3.0, 4.0, 2.5, 3.5, 4.5])
    mask_attr = localization.window_mask(torch.tensor([2, 6]), 3, 10).float()
    assert localization.aligned_profile(
        mask_attr, torch.tensor([2, 6]), 1, 4
    ).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
