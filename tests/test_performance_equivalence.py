"""SmoothGrad's fast path gives the same maps as float32 on the book's photos.

``precision="auto"`` (the default: rewritten graph with batch norms, paddings and ReLU6s
folded into the convolutions, channels-last layout, worker threads) must rank
pixels like the plain float32 run of the model as given: Spearman rho >= 0.99 on
every bundled photo. Small N keeps this fast; the same seed gives the same noise
to both runs, so only the arithmetic differs. No timings are asserted here
(see bench/). bfloat16 is opt-in and approximate; it is smoke-tested on a tiny
network in test_fastpath.py.
"""

from __future__ import annotations

import pytest
import torch

import gradsal

N = 8


@pytest.fixture(scope="module")
def reference(lite0):
    """Float32 maps of the model as given, one per photo, with their noise seed."""
    maps = {}
    for i, name in enumerate(gradsal.photo_names()):
        x = gradsal.load_image(name)
        maps[name] = (
            x,
            i,
            gradsal.smoothgrad(
                lite0, x, n_samples=N, generator=i, precision="float32"
            ),
        )
    return maps


@pytest.mark.parametrize("name", gradsal.photo_names())
def test_auto_precision_ranks_pixels_like_float32(lite0, reference, name):
    x, seed, ref = reference[name]
    fast = gradsal.smoothgrad(
        lite0, x, n_samples=N, generator=seed, precision="auto"
    )
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    assert gradsal.rank_correlation(fast, ref) >= 0.99
    assert (
        gradsal.rank_correlation(
            gradsal.reduce_channels(fast), gradsal.reduce_channels(ref)
        )
        >= 0.99
    )
    # float32 arithmetic on the rewritten graph: equal up to rounding, which now and
    # then moves a unit across a ReLU6 kink for one noisy copy (hence 1%, not 1e-6).
    assert float((fast - ref).abs().sum() / ref.abs().sum()) < 1e-2


def test_pool_and_map_use_the_same_fast_path(lite0, reference):
    x, seed, _ = reference["cat"]
    pool = gradsal.noisy_attributions(lite0, x, n_samples=4, generator=seed)
    direct = gradsal.smoothgrad(lite0, x, n_samples=4, generator=seed)
    torch.testing.assert_close(
        gradsal.smoothgrad_from_samples(pool, "abs"),
        direct,
        atol=1e-7,
        rtol=1e-5,
    )
