"""Every bad input gets a clear error that says what was expected (chapter 01, The Vanilla Gradient: the contract)."""

from __future__ import annotations

import pytest
import torch

import gradsal


@pytest.mark.parametrize(
    "x, error, words",
    [
        (
            torch.rand(2, 1, 3, 8, 8),
            ValueError,
            "expected (C, H, W) or (B, C, H, W)",
        ),
        (
            torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8),
            TypeError,
            "floating-point",
        ),
        (torch.full((3, 8, 8), float("nan")), ValueError, "NaN or infinite"),
        (torch.full((3, 8, 8), float("inf")), ValueError, "NaN or infinite"),
        (torch.empty(0, 3, 8, 8), ValueError, "empty"),
        ([[0.1, 0.2]], TypeError, "torch.Tensor"),
    ],
)
@pytest.mark.parametrize(
    "fn",
    [gradsal.vanilla_gradient, gradsal.gradient_x_input, gradsal.smoothgrad],
)
def test_bad_inputs(tiny_cnn, fn, x, error, words):
    with pytest.raises(error, match=None) as info:
        fn(tiny_cnn, x)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "target, error, words",
    [
        (5, ValueError, "out of range: the model has 5 classes"),
        (-1, ValueError, "out of range"),
        ([0, 1], ValueError, "one per example"),
        (1.5, TypeError, "integer class indices"),
        (True, TypeError, "bool"),
        ("cat", TypeError, "target must"),
    ],
)
@pytest.mark.parametrize(
    "fn",
    [
        gradsal.vanilla_gradient,
        # checks given targets in its passes, with no forward pass of its own
        lambda m, x, t: gradsal.integrated_gradients(m, x, t, n_steps=2),
        lambda m, x, t: gradsal.integrated_gradients(
            m, x, t, n_steps=2, return_delta=True
        ),
    ],
    ids=["vanilla_gradient", "integrated_gradients", "ig_with_delta"],
)
def test_bad_targets(tiny_cnn, image_batch, target, error, words, fn):
    with pytest.raises(error) as info:
        fn(tiny_cnn, image_batch, target)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_samples=0), "n_samples must be an integer >= 1"),
        (dict(n_samples=-3), "n_samples must be an integer >= 1"),
        (dict(n_samples=2.5), "n_samples must be an integer >= 1"),
        (dict(noise_level=-0.1), "noise_level must be >= 0"),
        (dict(noise_level=float("nan")), "finite number"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(mode="median"), "mode must be one of"),
    ],
)
def test_bad_smoothgrad_parameters(tiny_cnn, image_batch, kwargs, words):
    with pytest.raises(ValueError) as info:
        gradsal.smoothgrad(tiny_cnn, image_batch, **kwargs)
    assert words in str(info.value)


def test_bad_generator_and_model(tiny_cnn, image_batch):
    with pytest.raises(TypeError, match="generator must be"):
        gradsal.smoothgrad(tiny_cnn, image_batch, generator="seed")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        gradsal.vanilla_gradient(lambda t: t, image_batch)


def test_model_with_wrong_output_shape(image_batch):
    with pytest.raises(ValueError, match=r"\(3, K\) logits"):
        gradsal.vanilla_gradient(torch.nn.Flatten(0), image_batch)


def test_failed_call_leaves_model_as_it_was(tiny_cnn, image_batch):
    model = tiny_cnn.train()
    with pytest.raises(ValueError):
        gradsal.smoothgrad(model, image_batch, target=99)
    assert model.training and all(p.requires_grad for p in model.parameters())
