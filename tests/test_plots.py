"""Figures: the right panels, colour maps and scales."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import gradsal
from gradsal import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_image_map_overlay_has_three_panels():
    img = torch.rand(3, 16, 16)
    fig = plots.image_map_overlay(img, torch.rand(16, 16), title="t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["image", "saliency", "overlay"]
    assert fig.axes[1].images[0].get_cmap().name == "magma"


def test_map_grid_shares_one_colour_scale():
    maps = [torch.rand(8, 8), 5 * torch.rand(8, 8), torch.zeros(8, 8)]
    fig = plots.map_grid(maps, ["a", "b", "c"])
    limits = {ax.images[0].get_clim() for ax in fig.axes if ax.images}
    assert len(limits) == 1
    lo, hi = limits.pop()
    assert lo == pytest.approx(0.0) and hi == pytest.approx(
        max(float(m.max()) for m in maps)
    )


def test_map_grid_signed_is_symmetric_red_blue():
    maps = [torch.tensor([[1.0, -3.0]]), torch.tensor([[0.5, 2.0]])]
    fig = plots.map_grid(maps, signed=True)
    for ax in fig.axes:
        if ax.images:
            assert ax.images[0].get_cmap().name == "RdBu_r"
            assert ax.images[0].get_clim() == (-3.0, 3.0)


def test_signed_figure_limits_are_symmetric():
    s = np.array([[0.2, -0.1], [0.05, 0.0]])
    fig = plots.signed_figure(torch.rand(3, 2, 2), s)
    im = fig.axes[1].images[0]
    assert im.get_clim() == (-0.2, 0.2) and im.get_cmap().name == "RdBu_r"


def test_grid_errors():
    with pytest.raises(ValueError, match="at least one map"):
        plots.map_grid([])
    with pytest.raises(ValueError, match="2 titles for 1 maps"):
        plots.map_grid([torch.rand(4, 4)], ["a", "b"])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        plots.map_grid([torch.rand(3, 4, 4)])


def test_real_map_end_to_end(lite0):
    x = gradsal.load_image("cat")
    s = gradsal.normalize(
        gradsal.reduce_channels(gradsal.vanilla_gradient(lite0, x))
    )
    fig = plots.image_map_overlay(x, s)
    image_ax, map_ax, overlay_ax = fig.axes[:3]
    # the panels show the photo, the map itself, and the map over a grey copy of the photo
    np.testing.assert_allclose(
        image_ax.images[0].get_array(), x.permute(1, 2, 0).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        map_ax.images[0].get_array(), s.numpy(), atol=1e-6
    )
    assert (
        map_ax.images[0].get_cmap().name == "magma"
        and len(overlay_ax.images) == 2
    )
    np.testing.assert_allclose(
        overlay_ax.images[0].get_array(), x.mean(0).numpy(), atol=1e-6
    )
    assert (
        float(s.max()) == 1.0
        and float(s.min()) == 0.0
        and float(s.std()) > 0.01
    )
