"""Agreement with Captum where the two libraries compute the same thing."""

from __future__ import annotations

import math

import pytest
import torch

import gradsal

captum_attr = pytest.importorskip("captum.attr")


def test_vanilla_gradient_equals_captum_saliency_without_abs(
    tiny_cnn, image_batch
):
    targets = [0, 2, 4]
    ours = gradsal.vanilla_gradient(tiny_cnn, image_batch, targets)
    theirs = captum_attr.Saliency(tiny_cnn).attribute(
        image_batch.clone().requires_grad_(True), target=targets, abs=False
    )
    torch.testing.assert_close(ours, theirs)
    theirs_abs = captum_attr.Saliency(tiny_cnn).attribute(
        image_batch.clone().requires_grad_(True), target=targets
    )
    torch.testing.assert_close(
        ours.abs(), theirs_abs
    )  # Captum's default abs=True


def test_smoothgrad_abs_agrees_with_noise_tunnel_within_sampling_error(
    tiny_cnn, image_batch
):
    x = image_batch[:1]
    noise_level, n = 0.2, 3000
    sigma = noise_level * float(
        x.max() - x.min()
    )  # Captum's stdevs is absolute: give it our sigma
    kw = dict(target=1, n_samples=n, noise_level=noise_level, batch_size=1000)
    pool = gradsal.noisy_attributions(tiny_cnn, x[0], generator=0, **kw)
    ours = gradsal.smoothgrad(tiny_cnn, x[0], generator=0, **kw)
    torch.manual_seed(123)  # Captum draws from the global generator
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(tiny_cnn))
    theirs = nt.attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=n,
        nt_samples_batch_size=1000,
        stdevs=sigma,
        target=1,
    )[0]
    # Two independent Monte-Carlo estimates of E|g|: their difference has standard error sqrt(2) s / sqrt(n).
    se = math.sqrt(2) * pool.abs().std(0) / math.sqrt(n)
    z = (ours - theirs).abs() / se.clamp_min(1e-12)
    assert float(z.max()) < 5.5
    # And the two agree as maps.
    assert gradsal.rank_correlation(ours, theirs) > 0.95


def test_captum_vargrad_with_default_saliency_is_variance_of_abs(
    tiny_cnn, image_batch
):
    # Documented difference: Captum's vargrad over Saliency(abs=True) is Var(|g|), ours is Var(g).
    x = image_batch[:1]
    n, noise_level = 2000, 0.3
    sigma = noise_level * float(x.max() - x.min())
    pool = gradsal.noisy_attributions(
        tiny_cnn,
        x[0],
        2,
        n_samples=n,
        noise_level=noise_level,
        generator=1,
        batch_size=1000,
    )
    torch.manual_seed(5)
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(tiny_cnn))
    theirs = nt.attribute(
        x,
        nt_type="vargrad",
        nt_samples=n,
        nt_samples_batch_size=1000,
        stdevs=sigma,
        target=2,
    )[0]
    var_abs = pool.abs().var(0, correction=0)
    var_signed = pool.var(0, correction=0)
    err_abs = float((theirs - var_abs).abs().sum())
    err_signed = float((theirs - var_signed).abs().sum())
    assert err_abs < err_signed
