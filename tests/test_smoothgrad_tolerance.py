"""SmoothGrad that stops when its estimated Monte Carlo error meets a tolerance.

Closed forms: a linear model's gradient does not depend on the noise, so the
first check already sees zero variance; a "method" that returns its noisy input
has per-entry standard deviation sigma exactly, so the number of copies needed
is (sigma / (tolerance * q99))^2, and the error estimate can be compared with
the true error.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradsal


def noisy_input(model, xb, targets):
    """A 'method' whose attribution is the noisy copy itself: x + sigma * eps."""
    return xb.clone()


@pytest.fixture
def ramp_image():
    """(3, 16, 16) in [0, 1], range exactly 1; channel 0 dominates the display."""
    ramp = torch.linspace(0, 1, 16 * 16, dtype=torch.float64).view(16, 16)
    return torch.stack([ramp, 0.4 * ramp, 0.4 * ramp]).float()


@pytest.fixture
def ramp_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)).eval()


def test_a_linear_model_stops_at_the_first_check(linear_model, image_batch):
    out = gradsal.smoothgrad_to_tolerance(
        linear_model, image_batch[0], 2, tolerance=1e-6, check_every=4
    )
    w = linear_model[1].weight.detach()[2].view(3, 8, 8)
    assert out.converged and out.n_samples == 4
    assert out.relative_error == 0.0 and out.history == ((4, 0.0),)
    torch.testing.assert_close(out.attribution, w.abs())


@pytest.mark.parametrize("tolerance", [0.04, 0.02])
def test_pure_noise_stops_where_the_formula_says(
    ramp_model, ramp_image, tolerance
):
    sigma = 0.15  # noise level 0.15 of a range of 1
    q99 = float(torch.quantile(ramp_image[0].flatten(), 0.99))
    needed = (sigma / (tolerance * q99)) ** 2
    out = gradsal.smoothgrad_to_tolerance(
        ramp_model,
        ramp_image,
        0,
        tolerance=tolerance,
        method=noisy_input,
        noise_level=sigma,
        mode="signed",
        check_every=4,
        max_samples=1024,
        generator=1,
    )
    assert out.converged and out.relative_error <= tolerance
    # the first multiple of 4 at or above the formula's N, give or take one
    # check for the Monte Carlo error of the variance and of the 99th percentile
    first = 4 * math.ceil(needed / 4)
    assert first - 4 <= out.n_samples <= first + 4, (needed, out.n_samples)
    ns = [n for n, _ in out.history]
    assert ns == list(range(4, out.n_samples + 1, 4))


def test_the_error_estimate_matches_the_true_error(ramp_model, ramp_image):
    # the true map is x itself: the estimated error should be the actual one
    sigma, ratios = 0.15, []
    for seed in range(12):
        out = gradsal.smoothgrad_to_tolerance(
            ramp_model,
            ramp_image,
            0,
            tolerance=0.03,
            method=noisy_input,
            noise_level=sigma,
            mode="signed",
            check_every=4,
            generator=seed,
        )
        shown = out.attribution[0]  # the channel the display shows
        truth = ramp_image[0]
        q99 = float(torch.quantile(out.attribution.abs().amax(0), 0.99))
        actual = float((shown - truth).square().mean().sqrt()) / q99
        ratios.append(actual / out.relative_error)
    mean_ratio = sum(ratios) / len(ratios)
    assert 0.9 < mean_ratio < 1.1, ratios


def test_on_a_relu_network_the_estimate_covers_the_error(tiny_cnn, one_thread):
    # no closed form: the reference is a pool 40 times larger, other seeds
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = gradsal.smoothgrad(
        tiny_cnn, x, 1, n_samples=4000, noise_level=0.2, generator=999
    )
    shown_ref = ref.abs().amax(0)
    ratios = []
    for seed in range(10):
        out = gradsal.smoothgrad_to_tolerance(
            tiny_cnn,
            x,
            1,
            tolerance=0.05,
            noise_level=0.2,
            check_every=10,
            generator=seed,
        )
        assert out.converged
        shown = out.attribution.abs().amax(0)
        q99 = float(torch.quantile(shown.flatten(), 0.99))
        actual = float((shown - shown_ref).square().mean().sqrt()) / q99
        ratios.append(actual / out.relative_error)
    assert 0.6 < sum(ratios) / len(ratios) < 1.4, ratios


def test_the_map_is_smoothgrad_of_the_copies_used(tiny_cnn, image_batch):
    x = image_batch[1]
    out = gradsal.smoothgrad_to_tolerance(
        tiny_cnn, x, 0, tolerance=0.2, check_every=3, generator=5
    )
    same = gradsal.smoothgrad(
        tiny_cnn, x, 0, n_samples=out.n_samples, generator=5
    )
    torch.testing.assert_close(out.attribution, same)


def test_max_samples_ends_an_unmet_tolerance(tiny_cnn, image_batch):
    out = gradsal.smoothgrad_to_tolerance(
        tiny_cnn,
        image_batch[0],
        tolerance=1e-9,
        check_every=4,
        max_samples=10,
    )
    assert not out.converged and out.n_samples == 10
    assert [n for n, _ in out.history] == [4, 8, 10]
    assert out.relative_error == out.history[-1][1] > 1e-9


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(mode="var"), "mode must be"),
        (dict(tolerance=0), "tolerance must be"),
        (dict(tolerance=float("nan")), "tolerance must be"),
        (dict(check_every=1), "check_every must be at least 2"),
        (dict(check_every=8, max_samples=4), "at most max_samples"),
        (dict(max_samples=0), "max_samples"),
    ],
)
def test_bad_arguments_say_what_was_expected(
    tiny_cnn, image_batch, kwargs, message
):
    with pytest.raises(ValueError, match=message):
        gradsal.smoothgrad_to_tolerance(tiny_cnn, image_batch[0], **kwargs)


def test_a_batch_is_refused(tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="one example"):
        gradsal.smoothgrad_to_tolerance(tiny_cnn, image_batch)


def test_the_error_of_a_pool_is_the_one_the_stopping_rule_sees(
    tiny_cnn, image_batch
):
    x = image_batch[2]
    out = gradsal.smoothgrad_to_tolerance(
        tiny_cnn,
        x,
        1,
        tolerance=1e-9,
        check_every=5,
        max_samples=20,
        generator=3,
    )
    pool = gradsal.noisy_attributions(
        tiny_cnn, x, 1, n_samples=20, generator=3
    )
    for n, error in out.history:
        assert gradsal.relative_standard_error(pool[:n]) == pytest.approx(
            error, rel=1e-6
        )


def test_the_error_of_pure_noise_falls_like_one_over_root_n():
    # samples x + sigma eps, mode signed: error = sigma / (sqrt(N) q99)
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, 64 * 64).view(1, 64, 64)
    q99 = float(torch.quantile(x.flatten(), 0.99))
    for n in (16, 64, 256):
        pool = x + 0.1 * torch.randn(n, 1, 64, 64, generator=gen)
        expected = 0.1 / (math.sqrt(n) * q99)
        assert gradsal.relative_standard_error(
            pool[:, 0], "signed"
        ) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="N >= 2"):
        gradsal.relative_standard_error(x)
    with pytest.raises(ValueError, match="mode"):
        gradsal.relative_standard_error(pool, "var")
