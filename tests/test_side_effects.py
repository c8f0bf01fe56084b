"""No side effects: the caller's tensor and model are exactly as they were."""

from __future__ import annotations

import pytest
import torch

import gradsal

CALLS = {
    "vanilla": lambda m, x: gradsal.vanilla_gradient(m, x),
    "gxi": lambda m, x: gradsal.gradient_x_input(m, x, 1),
    "smoothgrad": lambda m, x: gradsal.smoothgrad(
        m, x, n_samples=4, generator=0
    ),
    "pool": lambda m, x: gradsal.noisy_attributions(
        m, x, 0, n_samples=3, generator=0
    ),
    "smoothgrad of gxi": lambda m, x: gradsal.smoothgrad(
        m, x, method=gradsal.gradient_x_input, n_samples=3
    ),
    "sample pool": lambda m, x: gradsal.SamplePool(
        m, x[0], noise_level=0.1
    ).draw(3),
    "top_k": lambda m, x: gradsal.top_k(m, x, 2),
    "integrated gradients": lambda m, x: gradsal.integrated_gradients(
        m, x, 1, n_steps=4, return_delta=True
    ),
    "guided backprop": lambda m, x: gradsal.guided_backprop(m, x, 1),
    "grad-cam": lambda m, x: gradsal.grad_cam(m, x, 1),
    "guided grad-cam": lambda m, x: gradsal.guided_grad_cam(
        m, x, 1, layer=m.features[3]
    ),
    "smoothgrad of ig": lambda m, x: gradsal.smoothgrad(
        m, x, method=gradsal.integrated_gradients, n_samples=2
    ),
    "attribute": lambda m, x: gradsal.attribute(m, x, 1, batch_size=2),
    "attribute guided backprop": lambda m, x: gradsal.attribute(
        m, x, method=gradsal.guided_backprop
    ),
    "smoothgrad to tolerance": lambda m, x: gradsal.smoothgrad_to_tolerance(
        m, x[0], tolerance=0.5, check_every=2, max_samples=4
    ),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_model_flags_grads_mode_and_input_are_untouched(
    tiny_cnn, image_batch, call
):
    model = tiny_cnn.train()  # train mode, parameters requiring grad
    model.features[0].weight.grad = torch.full_like(
        model.features[0].weight, 0.5
    )
    model.head[2].weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = image_batch.clone().requires_grad_(True)
    before = x.detach().clone()

    call(model, x)

    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(m.training for m in model.modules())
    assert torch.equal(
        model.features[0].weight.grad,
        torch.full_like(model.features[0].weight, 0.5),
    )
    assert all(
        p.grad is None
        for n, p in model.named_parameters()
        if n != "features.0.weight"
    )
    for (
        k,
        v,
    ) in (
        model.state_dict().items()
    ):  # batch-norm statistics unchanged: eval mode was used
        assert torch.equal(v, state[k]), k
    assert (
        torch.equal(x.detach(), before) and x.grad is None and x.requires_grad
    )


def test_gradients_are_taken_in_eval_mode(tiny_cnn, image_batch):
    # Dropout and batch statistics would make train-mode gradients random and batch-dependent.
    model = tiny_cnn.train()
    g1 = gradsal.vanilla_gradient(model, image_batch, 0)
    g2 = gradsal.vanilla_gradient(model, image_batch, 0)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(
        g1[0], gradsal.vanilla_gradient(model, image_batch[0], 0)
    )


def test_mixed_modes_are_restored_per_module(tiny_cnn, image_batch):
    model = tiny_cnn.eval()
    model.head.train()
    gradsal.smoothgrad(model, image_batch, n_samples=2, generator=0)
    assert not model.training and not model.features.training
    assert model.head.training and all(
        m.training for m in model.head.modules()
    )


def test_returned_gradient_does_not_alias_or_track_the_input(
    linear_model, image_batch
):
    x = image_batch[0].clone()
    g = gradsal.vanilla_gradient(linear_model, x, 0)
    assert not g.requires_grad and g.grad_fn is None
    g.zero_()
    assert torch.equal(x, image_batch[0])
