"""Vanilla gradient, Gradient x Input and SmoothGrad against answers known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

import gradsal


def test_vanilla_gradient_of_linear_model_is_the_weight_row(
    linear_model, image_batch
):
    weight = linear_model[1].weight.detach()
    for c in range(4):
        g = gradsal.vanilla_gradient(linear_model, image_batch[0], target=c)
        assert g.shape == (3, 8, 8)
        torch.testing.assert_close(g, weight[c].view(3, 8, 8))


def test_vanilla_gradient_matches_finite_differences(tiny_cnn, image_batch):
    x = image_batch[0].double()
    model = tiny_cnn.double()
    g = gradsal.vanilla_gradient(model, x, target=2)
    h = 1e-6
    for idx in [(0, 0, 0), (1, 3, 4), (2, 7, 7)]:
        e = torch.zeros_like(x)
        e[idx] = h
        with torch.no_grad():
            fd = (model((x + e)[None])[0, 2] - model((x - e)[None])[0, 2]) / (
                2 * h
            )
        assert abs(float(fd) - float(g[idx])) < 1e-6


def test_default_target_is_the_predicted_class(tiny_cnn, image_batch):
    with torch.no_grad():
        predicted = tiny_cnn(image_batch).argmax(1)
    g = gradsal.vanilla_gradient(tiny_cnn, image_batch)
    for i in range(3):
        torch.testing.assert_close(
            g[i],
            gradsal.vanilla_gradient(
                tiny_cnn, image_batch[i], int(predicted[i])
            ),
        )


def test_batch_and_single_inputs_and_per_image_targets(tiny_cnn, image_batch):
    targets = [0, 3, 4]
    batch = gradsal.vanilla_gradient(tiny_cnn, image_batch, targets)
    assert batch.shape == image_batch.shape
    for i, t in enumerate(targets):
        torch.testing.assert_close(
            batch[i], gradsal.vanilla_gradient(tiny_cnn, image_batch[i], t)
        )
    as_tensor = gradsal.vanilla_gradient(
        tiny_cnn, image_batch, torch.tensor(targets)
    )
    torch.testing.assert_close(batch, as_tensor)


def test_gradient_x_input_is_the_elementwise_product(
    linear_model, image_batch
):
    x = image_batch[1]
    gxi = gradsal.gradient_x_input(linear_model, x, target=1)
    torch.testing.assert_close(
        gxi, x * linear_model[1].weight[1].view(3, 8, 8)
    )


@pytest.mark.parametrize("noise_level", [0.05, 0.5, 3.0])
def test_smoothgrad_of_linear_model_for_any_sigma(
    linear_model, image_batch, noise_level
):
    w = linear_model[1].weight.detach()[2].view(3, 8, 8)
    x = image_batch[0]
    kw = dict(target=2, n_samples=7, noise_level=noise_level, generator=0)
    torch.testing.assert_close(
        gradsal.smoothgrad(linear_model, x, mode="signed", **kw), w
    )
    torch.testing.assert_close(
        gradsal.smoothgrad(linear_model, x, mode="abs", **kw), w.abs()
    )
    torch.testing.assert_close(
        gradsal.smoothgrad(linear_model, x, mode="square", **kw), w.square()
    )
    torch.testing.assert_close(
        gradsal.smoothgrad(linear_model, x, mode="var", **kw),
        torch.zeros_like(w),
        atol=1e-10,
        rtol=0,
    )


@pytest.mark.parametrize(
    "x0,w,b", [(0.3, 1.5, -0.2), (-0.4, -2.0, 0.1), (0.0, 1.0, 0.05)]
)
def test_smoothgrad_of_single_relu_is_a_probit_smoothed_step(
    single_relu, x0, w, b
):
    # x = (x0, x1): the model reads x0 only; x1 sets the range max - min to 1.
    x = torch.tensor([[x0, x0 + 1.0]], dtype=torch.float64)
    noise_level, n = 0.3, 20_000
    sigma = noise_level * 1.0
    sg = gradsal.smoothgrad(
        single_relu(w, b),
        x,
        target=0,
        n_samples=n,
        noise_level=noise_level,
        mode="signed",
        generator=11,
        batch_size=5000,
    )
    p = norm.cdf((w * x0 + b) / (abs(w) * sigma))
    expected = w * p
    standard_error = abs(w) * math.sqrt(p * (1 - p) / n)
    assert abs(float(sg[0, 0]) - expected) < 5 * standard_error + 1e-12
    assert float(sg[0, 1]) == 0.0


def test_signed_smoothgrad_of_cubic_pins_down_sigma(cubic_model):
    x = torch.rand(
        3,
        4,
        4,
        generator=torch.Generator().manual_seed(5),
        dtype=torch.float64,
    )
    noise_level, n = 0.2, 4000
    sigma = noise_level * float(x.max() - x.min())
    a = cubic_model.a.detach()[1].view(3, 4, 4)
    pool = gradsal.noisy_attributions(
        cubic_model,
        x,
        target=1,
        n_samples=n,
        noise_level=noise_level,
        generator=4,
        batch_size=1000,
    )
    sg = gradsal.smoothgrad(
        cubic_model,
        x,
        target=1,
        n_samples=n,
        noise_level=noise_level,
        mode="signed",
        generator=4,
        batch_size=1000,
    )
    expected = 3 * a * (x.square() + sigma**2)
    standard_error = pool.std(0) / math.sqrt(n)
    z = (sg - expected).abs() / standard_error
    assert float(z.max()) < 5.0
    # The same draws with sigma^2 missing would be off by 3 a sigma^2, many standard errors.
    wrong = 3 * a * x.square()
    assert float(((sg - wrong).abs() / standard_error).median()) > 10


def test_zero_noise_gives_the_vanilla_gradient(tiny_cnn, image_batch):
    x = image_batch[2]
    g = gradsal.vanilla_gradient(tiny_cnn, x, target=1)
    torch.testing.assert_close(
        gradsal.smoothgrad(
            tiny_cnn, x, 1, noise_level=0.0, n_samples=3, mode="signed"
        ),
        g,
    )
    torch.testing.assert_close(
        gradsal.smoothgrad(
            tiny_cnn, x, 1, noise_level=0.0, n_samples=3, mode="abs"
        ),
        g.abs(),
    )
    tiny = gradsal.smoothgrad(
        tiny_cnn,
        x,
        1,
        noise_level=1e-7,
        n_samples=4,
        mode="signed",
        generator=0,
    )
    torch.testing.assert_close(tiny, g, atol=1e-5, rtol=1e-4)


def test_square_equals_signed_squared_plus_vargrad_on_the_same_draws(
    tiny_cnn, image_batch
):
    kw = dict(target=3, n_samples=24, noise_level=0.3, generator=7)
    x = image_batch[0]
    signed = gradsal.smoothgrad(tiny_cnn, x, mode="signed", **kw)
    square = gradsal.smoothgrad(tiny_cnn, x, mode="square", **kw)
    var = gradsal.smoothgrad(tiny_cnn, x, mode="var", **kw)
    torch.testing.assert_close(
        square, signed.square() + var, atol=1e-9, rtol=1e-5
    )
    assert float(var.max()) > 0  # noise crossed some ReLU boundaries


def test_modes_agree_with_the_pool_of_individual_gradients(
    tiny_cnn, image_batch
):
    kw = dict(target=0, n_samples=10, noise_level=0.2, generator=3)
    pool = gradsal.noisy_attributions(tiny_cnn, image_batch, **kw)
    assert pool.shape == (3, 10, 3, 8, 8)
    for mode in gradsal.SMOOTHGRAD_MODES:
        direct = gradsal.smoothgrad(tiny_cnn, image_batch, mode=mode, **kw)
        torch.testing.assert_close(
            direct,
            gradsal.smoothgrad_from_samples(pool, mode, dim=1),
            atol=1e-7,
            rtol=1e-5,
        )
    var = gradsal.smoothgrad_from_samples(pool[0], "var")
    torch.testing.assert_close(var, pool[0].var(0, correction=0))


def test_noise_sigma_is_a_fraction_of_each_images_range(linear_model):
    # With a linear model the gradient is constant, so look at the draws instead:
    # the pool of x + eps is recovered through a model whose gradient is 2 x.
    class Square(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1).square().sum(1, keepdim=True)

    x = torch.zeros(2, 1, 40, 40, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0  # range 1
    x[1, 0, 0, 0] = 4.0  # range 4
    pool = gradsal.noisy_attributions(
        Square(), x, target=0, n_samples=50, noise_level=0.1, generator=0
    )
    noise = pool / 2 - x[:, None]
    assert abs(float(noise[0].std()) - 0.1) < 0.005
    assert abs(float(noise[1].std()) - 0.4) < 0.02


def test_same_seed_same_map_and_batch_size_does_not_matter(
    tiny_cnn, image_batch
):
    kw = dict(target=None, n_samples=13, noise_level=0.25, mode="abs")
    a = gradsal.smoothgrad(
        tiny_cnn,
        image_batch,
        generator=torch.Generator().manual_seed(9),
        batch_size=13,
        **kw,
    )
    b = gradsal.smoothgrad(
        tiny_cnn,
        image_batch,
        generator=torch.Generator().manual_seed(9),
        batch_size=13,
        **kw,
    )
    assert torch.equal(a, b)
    for bs in (1, 4, 100):
        c = gradsal.smoothgrad(
            tiny_cnn,
            image_batch,
            generator=torch.Generator().manual_seed(9),
            batch_size=bs,
            **kw,
        )
        torch.testing.assert_close(c, a, atol=1e-6, rtol=1e-5)
    d = gradsal.smoothgrad(
        tiny_cnn,
        image_batch,
        generator=torch.Generator().manual_seed(10),
        **kw,
    )
    assert not torch.allclose(a, d)
    assert torch.equal(
        gradsal.smoothgrad(tiny_cnn, image_batch, generator=9, **kw), a
    )


def test_batch_of_images_equals_images_one_by_one(tiny_cnn, image_batch):
    # Image by image, in order, the draws continue from one generator.
    gen = torch.Generator().manual_seed(21)
    batch = gradsal.smoothgrad(
        tiny_cnn, image_batch, [1, 2, 3], n_samples=6, generator=gen
    )
    gen = torch.Generator().manual_seed(21)
    singles = [
        gradsal.smoothgrad(
            tiny_cnn, image_batch[i], t, n_samples=6, generator=gen
        )
        for i, t in enumerate([1, 2, 3])
    ]
    torch.testing.assert_close(batch, torch.stack(singles))


def test_non_image_models_work_unchanged():
    torch.manual_seed(0)
    tabular = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).eval()
    x = torch.randn(5, 6)
    assert gradsal.vanilla_gradient(tabular, x).shape == (5, 6)
    assert gradsal.vanilla_gradient(tabular, x[0]).shape == (6,)
    assert gradsal.smoothgrad(tabular, x, n_samples=4, generator=0).shape == (
        5,
        6,
    )

    class Seq(torch.nn.Module):  # (B, T, F) sequences
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(4, 8, batch_first=True)
            self.out = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.out(self.rnn(x)[0][:, -1])

    seq = Seq().eval()
    xs = torch.randn(3, 10, 4)
    assert gradsal.vanilla_gradient(seq, xs, batched=True).shape == (3, 10, 4)
    assert gradsal.smoothgrad(
        seq, xs[0], batched=False, n_samples=3, generator=0
    ).shape == (10, 4)


def test_progress_bar_is_optional(tiny_cnn, image_batch, capsys):
    a = gradsal.smoothgrad(
        tiny_cnn, image_batch[0], n_samples=4, generator=0, progress=True
    )
    b = gradsal.smoothgrad(tiny_cnn, image_batch[0], n_samples=4, generator=0)
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------
# SmoothGrad over any method (chapter 02, SmoothGrad; Captum's NoiseTunnel)


def test_smoothgrad_of_gradient_x_input_on_a_cubic_is_3a_x3_plus_3x_sigma2(
    cubic_model,
):
    # f_c = sum a x^3, so x * grad f_c = 3 a x^3 and E[3 a (x+e)^3] = 3 a (x^3 + 3 x sigma^2).
    x = torch.linspace(-1.0, 1.0, 48, dtype=torch.float64).view(3, 4, 4)
    noise_level, n = 0.2, 4000
    sigma = noise_level * float(x.max() - x.min())
    pool = gradsal.noisy_attributions(
        cubic_model,
        x,
        target=1,
        method=gradsal.gradient_x_input,
        n_samples=n,
        noise_level=noise_level,
        generator=7,
    )
    a = cubic_model.a.detach()[1].view(3, 4, 4)
    expected = 3 * a * (x**3 + 3 * x * sigma**2)
    signed = gradsal.smoothgrad(
        cubic_model,
        x,
        1,
        method=gradsal.gradient_x_input,
        n_samples=n,
        noise_level=noise_level,
        mode="signed",
        generator=7,
    )
    torch.testing.assert_close(signed, pool.mean(0))
    # Monte Carlo error: within 5 standard errors entry by entry.
    stderr = pool.std(0) / math.sqrt(n)
    assert bool(((signed - expected).abs() <= 5 * stderr + 1e-12).all())
    # and the plain gradient would give 3 a (x^2 + sigma^2), a different map
    plain = gradsal.smoothgrad(
        cubic_model,
        x,
        1,
        n_samples=n,
        noise_level=noise_level,
        mode="signed",
        generator=7,
    )
    assert not torch.allclose(plain, expected, atol=1e-2)


def test_method_none_is_the_vanilla_gradient_bit_for_bit(
    tiny_cnn, image_batch
):
    kw = dict(target=1, n_samples=5, noise_level=0.2, generator=3)
    assert torch.equal(
        gradsal.smoothgrad(tiny_cnn, image_batch, **kw),
        gradsal.smoothgrad(
            tiny_cnn, image_batch, method=gradsal.vanilla_gradient, **kw
        ),
    )


def test_any_callable_and_partials_are_smoothed_on_the_same_draws(
    tiny_cnn, image_batch
):
    import functools

    x = image_batch[0]
    kw = dict(n_samples=6, noise_level=0.3, generator=4, mode="signed")
    gxi = gradsal.smoothgrad(
        tiny_cnn, x, 2, method=gradsal.gradient_x_input, **kw
    )

    def mine(
        model, xb, targets
    ):  # any f(model, x_batch, targets), as a reader writes it
        return gradsal.vanilla_gradient(model, xb, targets) * xb

    torch.testing.assert_close(
        gradsal.smoothgrad(tiny_cnn, x, 2, method=mine, **kw),
        gxi,
        atol=1e-6,
        rtol=1e-5,
    )
    partial = functools.partial(gradsal.gradient_x_input, batched=True)
    torch.testing.assert_close(
        gradsal.smoothgrad(tiny_cnn, x, 2, method=partial, **kw), gxi
    )


def test_smoothgrad_of_a_method_does_not_depend_on_the_batch_size(
    tiny_cnn, image_batch
):
    kw = dict(
        target=None,
        method=gradsal.gradient_x_input,
        n_samples=7,
        noise_level=0.25,
        generator=1,
        mode="var",
    )
    a = gradsal.smoothgrad(tiny_cnn, image_batch, batch_size=7, **kw)
    for bs in (1, 3):
        torch.testing.assert_close(
            gradsal.smoothgrad(tiny_cnn, image_batch, batch_size=bs, **kw),
            a,
            atol=1e-7,
            rtol=1e-5,
        )


def test_a_method_whose_output_has_another_shape_keeps_it(
    tiny_cnn, image_batch
):
    def channel_sum(model, xb, targets):
        return gradsal.vanilla_gradient(model, xb, targets).sum(1)  # (B, H, W)

    pool = gradsal.noisy_attributions(
        tiny_cnn, image_batch, method=channel_sum, n_samples=4, generator=0
    )
    assert pool.shape == (3, 4, 8, 8)
    sg = gradsal.smoothgrad(
        tiny_cnn,
        image_batch[0],
        method=channel_sum,
        n_samples=4,
        generator=0,
        mode="signed",
    )
    assert sg.shape == (8, 8)


def test_bad_methods_get_clear_errors(tiny_cnn, image_batch):
    import functools

    x = image_batch[0]
    with pytest.raises(
        TypeError, match="method must be an attribution function"
    ):
        gradsal.smoothgrad(tiny_cnn, x, method="gradient", n_samples=2)
    with pytest.raises(ValueError, match="keyword options only"):
        gradsal.smoothgrad(
            tiny_cnn,
            x,
            method=functools.partial(gradsal.vanilla_gradient, tiny_cnn),
            n_samples=2,
        )
    with pytest.raises(ValueError, match="one attribution per example"):
        gradsal.smoothgrad(
            tiny_cnn, x, method=lambda m, xb, t: xb.sum(), n_samples=2
        )


# ---------------------------------------------------------------------------
# the pool of noisy attributions (chapter 02, SmoothGrad)


def test_sample_pool_grows_by_continuing_its_generator(tiny_cnn, image_batch):
    x = image_batch[1]
    pool = gradsal.SamplePool(tiny_cnn, x, 3, noise_level=0.2, seed=5)
    first = pool.draw(3).clone()
    assert pool.computations == 1 and len(pool) == 3
    grown = pool.draw(8)
    assert pool.computations == 2 and len(pool) == 8
    assert torch.equal(grown[:3], first) and pool.draw(2).shape == (2, 3, 8, 8)
    assert pool.computations == 2  # a prefix needs no new passes
    direct = gradsal.noisy_attributions(
        tiny_cnn, x, 3, n_samples=8, noise_level=0.2, generator=5
    )
    torch.testing.assert_close(grown, direct, atol=1e-6, rtol=1e-5)
    sg = gradsal.smoothgrad(
        tiny_cnn,
        x,
        3,
        n_samples=8,
        noise_level=0.2,
        generator=5,
        mode="square",
    )
    torch.testing.assert_close(
        pool.smoothgrad(8, "square"), sg, atol=1e-6, rtol=1e-5
    )


def test_sample_pool_of_a_method_and_at_zero_noise(tiny_cnn, image_batch):
    x = image_batch[0]
    pool = gradsal.SamplePool(
        tiny_cnn, x, 1, noise_level=0.0, method=gradsal.gradient_x_input
    )
    samples = pool.draw(6)
    assert samples.shape == (6, 3, 8, 8) and pool.computations == 1
    torch.testing.assert_close(
        samples[4],
        gradsal.gradient_x_input(tiny_cnn, x, 1),
        atol=1e-6,
        rtol=1e-5,
    )


def test_sample_pool_finds_the_target_in_eval_mode_on_the_models_device(
    tiny_cnn, image_batch
):
    x = image_batch[2]
    model = (
        tiny_cnn.train()
    )  # dropout would make a train-mode prediction random
    with torch.no_grad():
        expected = int(model.eval()(x[None]).argmax())
    model.train()
    pool = gradsal.SamplePool(model, x)
    assert pool.target == expected and all(m.training for m in model.modules())

    class BufferOnly(
        torch.nn.Module
    ):  # no parameters: the device comes from a buffer
        def __init__(self):
            super().__init__()
            self.register_buffer(
                "w",
                torch.randn(
                    3 * 8 * 8, 4, generator=torch.Generator().manual_seed(0)
                ),
            )

        def forward(self, xb):
            return xb.flatten(1) @ self.w

    bpool = gradsal.SamplePool(BufferOnly(), x, noise_level=0.1)
    assert bpool.draw(2).shape == (2, 3, 8, 8)


def test_sample_pool_rejects_bad_arguments(tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="noise_level"):
        gradsal.SamplePool(tiny_cnn, image_batch[0], noise_level=-0.1)
    with pytest.raises(TypeError, match="method"):
        gradsal.SamplePool(tiny_cnn, image_batch[0], method=3)
    pool = gradsal.SamplePool(tiny_cnn, image_batch[0])
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        pool.draw(0)


@pytest.mark.parametrize("steps", [None, 3])
def test_a_pools_first_copies_are_a_smaller_runs_copies(
    tiny_cnn, image_batch, steps
):
    # Chapters reuse one pool: its first k copies serve as a k-sample run
    # with the same seed (chapter 07 does this for SmoothGrad-IG)
    import functools

    method = (
        None
        if steps is None
        else functools.partial(gradsal.integrated_gradients, n_steps=steps)
    )
    x = image_batch[0]
    kw = dict(method=method, noise_level=0.2, generator=5)
    pool = gradsal.noisy_attributions(tiny_cnn, x, 1, n_samples=7, **kw)
    for k in (1, 3):
        torch.testing.assert_close(
            gradsal.smoothgrad(tiny_cnn, x, 1, n_samples=k, **kw),
            gradsal.smoothgrad_from_samples(pool[:k], "abs"),
            atol=1e-6,
            rtol=1e-5,
        )


def test_one_seed_per_example_gives_each_example_its_own_run(
    tiny_cnn, image_batch
):
    # a batch with a seed per example equals one call per example with its seed,
    # so a chapter can run all its photos at once on their own draws
    import functools

    xb = image_batch[:3]
    seeds = [4, 0, torch.Generator().manual_seed(9)]
    for method in (
        None,
        functools.partial(gradsal.integrated_gradients, n_steps=2),
    ):
        kw = dict(method=method, noise_level=0.2, n_samples=5)
        pool = gradsal.noisy_attributions(
            tiny_cnn, xb, [1, 2, 3], generator=seeds[:2] + [9], **kw
        )
        mean = gradsal.smoothgrad(
            tiny_cnn, xb, [1, 2, 3], generator=[4, 0, 9], **kw
        )
        for b, seed in enumerate([4, 0, 9]):
            alone = gradsal.noisy_attributions(
                tiny_cnn, xb[b], b + 1, generator=seed, **kw
            )
            torch.testing.assert_close(pool[b], alone)
            torch.testing.assert_close(
                mean[b], alone.abs().mean(0), atol=1e-6, rtol=1e-5
            )
    # any sequence of seeds, e.g. a range
    torch.testing.assert_close(
        gradsal.noisy_attributions(
            tiny_cnn, xb, [1, 2, 3], generator=range(3), n_samples=2
        ),
        gradsal.noisy_attributions(
            tiny_cnn, xb, [1, 2, 3], generator=[0, 1, 2], n_samples=2
        ),
    )
    # a generator object is advanced as usual
    gradsal.noisy_attributions(
        tiny_cnn, xb, [1, 2, 3], generator=seeds, n_samples=2
    )
    with pytest.raises(ValueError, match="one seed or generator per example"):
        gradsal.smoothgrad(tiny_cnn, xb, generator=[1, 2], n_samples=2)
    with pytest.raises(TypeError, match="generator must be"):
        gradsal.smoothgrad(tiny_cnn, xb, generator=[1, "a", 2], n_samples=2)
