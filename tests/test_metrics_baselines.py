"""Tests of gradsal.metrics.baselines: the random and edge-detector maps (chapter 05, Sanity Checks)."""

from __future__ import annotations

import pytest
import torch

from gradsal.metrics import baselines


def test_random_map_is_seeded_uniform() -> None:
    r = baselines.random_map((50, 60), generator=5)
    assert r.shape == (50, 60) and 0 <= float(r.min()) and float(r.max()) < 1
    assert torch.equal(r, baselines.random_map((50, 60), generator=5))
    assert not torch.equal(r, baselines.random_map((50, 60), generator=6))
    with pytest.raises(ValueError):
        baselines.random_map((50,))  # type: ignore[arg-type]


def test_sobel_map_finds_a_vertical_edge() -> None:
    x = torch.zeros(3, 20, 20)
    x[1, :, 10:] = 1.0  # an edge in the green channel only
    before = x.clone()
    s = baselines.sobel_map(x)
    assert s.shape == (20, 20)
    assert float(s[:, :8].max()) == 0.0 and float(s[:, 12:].max()) == 0.0
    assert float(s[5, 9]) > 0 and float(s[5, 10]) > 0
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        baselines.sobel_map(torch.rand(20, 20))
