"""gradsal.attribute: any method over a batch on the engine gives the method's own result.

The reference is the public method itself (the model as given, one pass); the
engine cuts the batch into chunks for its workers and, for methods that only call
the model, runs the folded graph, so results agree up to float rounding.
"""

from __future__ import annotations

import functools

import pytest
import torch

import gradsal

METHODS = {
    "vanilla": gradsal.vanilla_gradient,
    "gradient x input": gradsal.gradient_x_input,
    "guided backprop": gradsal.guided_backprop,
    "grad-cam": gradsal.grad_cam,
    "integrated gradients": functools.partial(
        gradsal.integrated_gradients, n_steps=4
    ),
}


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("method", METHODS.values(), ids=METHODS.keys())
@pytest.mark.parametrize("target", [None, 2, [0, 1, 2, 3, 4, 0, 1]])
def test_equals_the_method_itself(tiny_cnn, batch, method, target):
    expected = method(tiny_cnn, batch, target)
    for precision in ("auto", "float32"):
        got = gradsal.attribute(
            tiny_cnn, batch, target, method=method, precision=precision
        )
        assert got.shape == expected.shape and got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_the_batch_is_cut_into_chunks_of_batch_size(tiny_cnn, batch):
    seen = []

    def sizes(model, xb, target):
        seen.append(xb.shape[0])
        return gradsal.vanilla_gradient(model, xb, target)

    out = gradsal.attribute(tiny_cnn, batch, 1, method=sizes, batch_size=2)
    assert sorted(seen, reverse=True) == [2, 2, 2, 1]
    torch.testing.assert_close(
        out, gradsal.vanilla_gradient(tiny_cnn, batch, 1)
    )


def test_one_example_comes_back_without_a_batch_axis(tiny_cnn, batch):
    got = gradsal.attribute(tiny_cnn, batch[0], 3)
    assert got.shape == batch[0].shape
    torch.testing.assert_close(
        got, gradsal.vanilla_gradient(tiny_cnn, batch[0], 3)
    )


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"target": [0, 1]}, ValueError, "one per example"),
        ({"target": 9}, ValueError, "out of range"),
        ({"target": 1.5}, TypeError, "integer class"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"precision": "half"}, ValueError, "precision"),
        ({"method": "gradient"}, TypeError, "attribution function"),
    ],
)
def test_bad_input_says_what_was_expected(
    tiny_cnn, batch, kwargs, error, words
):
    with pytest.raises(error, match=words):
        gradsal.attribute(tiny_cnn, batch, **kwargs)


def test_ranks_pixels_like_the_vanilla_gradient_on_the_photos(lite0):
    x = torch.stack([gradsal.load_image(n) for n in gradsal.photo_names()[:3]])
    ref = gradsal.vanilla_gradient(lite0, x)
    got = gradsal.attribute(lite0, x)
    for a, b in zip(got, ref):
        rho = gradsal.rank_correlation(
            gradsal.reduce_channels(a), gradsal.reduce_channels(b)
        )
        assert rho > 0.999


def test_a_model_that_is_not_a_module_is_refused(batch):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gradsal.attribute(lambda x: x, batch)


def _zeros(model, xb, targets):
    return torch.zeros_like(xb)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: gradsal.attribute(m, x, 9, method=_zeros),
        lambda m, x: gradsal.smoothgrad(
            m, x[0], 9, method=_zeros, n_samples=2
        ),
    ],
    ids=["attribute", "smoothgrad"],
)
def test_a_method_of_ones_own_gets_only_targets_in_range(
    tiny_cnn, batch, call
):
    """gradsal kernels check targets against the logits; another callable is
    handed them as given, so they are checked before it runs."""
    with pytest.raises(ValueError, match="out of range"):
        call(tiny_cnn, batch)
