"""Tests of gradsal.toydata (chapter 06, Beyond Images): data with known answers, tiny models, training."""

import math

import pytest
import torch
from torch import nn

import gradsal
from gradsal import toydata
from gradsal.metrics import window_mask

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------
# time series


def test_planted_window_series_shapes_labels_and_pattern():
    x, y, start = toydata.planted_window_series(
        40, length=30, width=5, amplitude=3.0, noise=0.0, generator=0
    )
    assert x.shape == (40, 30) and x.dtype == torch.float32
    assert y.dtype == torch.long and int(y.sum()) == 20  # balanced
    assert int(start.min()) >= 0 and int(start.max()) <= 30 - 5
    mask = window_mask(start, 5, 30)
    # without noise the series is zero outside the window and has the label's sign inside
    assert torch.all(x[~mask] == 0)
    sign = (2 * y - 1).float().reshape(-1, 1)
    inside = x[mask].reshape(40, 5)
    assert torch.all(inside * sign > 0)
    assert torch.allclose(
        inside.abs().amax(1), torch.full((40,), 3.0), atol=0.2
    )


def test_planted_window_series_is_seeded_and_trend_changes_only_the_background():
    a = toydata.planted_window_series(8, generator=3)
    b = toydata.planted_window_series(8, generator=3)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    x0, y0, s0 = toydata.planted_window_series(8, noise=0.0, generator=3)
    x1, y1, s1 = toydata.planted_window_series(
        8, noise=0.0, trend=2.0, generator=3
    )
    assert torch.equal(y0, y1) and torch.equal(s0, s1)
    assert (
        float((x1 - x0).abs().max()) <= 2.0 + 1e-5
        and float((x1 - x0).abs().max()) > 0.5
    )
    with pytest.raises(ValueError):
        toydata.planted_window_series(4, length=5, width=6)


def test_series_cnn_shapes_and_gradsal_rank_rules():
    model = toydata.SeriesCNN(channels=4, seed=1).eval()
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (3, 2)
    g2 = gradsal.vanilla_gradient(model, x)  # (B, T) is a batch
    g3 = gradsal.vanilla_gradient(
        model, x.unsqueeze(1), batched=True
    )  # (B, 1, T) needs batched=True
    assert g2.shape == (3, 20) and g3.shape == (3, 1, 20)
    assert torch.allclose(g2, g3[:, 0])
    g1 = gradsal.vanilla_gradient(model, x[0])  # (T,) is one example
    assert torch.allclose(g1, g2[0])
    # the same seed gives the same weights, and the global RNG is untouched
    state = torch.random.get_rng_state()
    other = toydata.SeriesCNN(channels=4, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(
        torch.equal(p, q)
        for p, q in zip(model.parameters(), other.parameters())
    )


def test_series_cnn_gradient_lives_in_the_receptive_field_of_the_max():
    # With a single channel and an identity-like head the logit is one max over
    # time, so its gradient is zero outside the 2k - 1 steps around the argmax.
    model = toydata.SeriesCNN(
        channels=1, kernel_size=3, n_classes=1, seed=0
    ).eval()
    x = torch.randn(1, 30, generator=torch.Generator().manual_seed(1))
    g = gradsal.vanilla_gradient(model, x)[0]
    nonzero = torch.nonzero(g).flatten()
    assert (
        nonzero.numel() > 0 and int(nonzero.max() - nonzero.min()) <= 2 * 3 - 2
    )


# ---------------------------------------------------------------------------
# tabular


def test_tabular_rule_data_follows_the_rule():
    coef = [2.0, 0.0, -1.0]
    z, y = toydata.tabular_rule_data(20000, coef, generator=0)
    assert z.shape == (20000, 3) and y.dtype == torch.long
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03
    # logistic regression by a few Newton steps recovers the coefficients
    X = torch.cat([z.double(), torch.ones(20000, 1, dtype=torch.float64)], 1)
    w = torch.zeros(4, dtype=torch.float64)
    for _ in range(10):
        p = torch.sigmoid(X @ w)
        H = X.T @ (X * (p * (1 - p)).reshape(-1, 1))
        w = w + torch.linalg.solve(H, X.T @ (y.double() - p))
    assert torch.allclose(
        w[:3], torch.tensor(coef, dtype=torch.float64), atol=0.1
    )


def test_tabular_rule_data_quadratic_and_correlated():
    z, y = toydata.tabular_rule_data(
        20000,
        [0.0, 0.0],
        quadratic={0: 3.0},
        correlated={1: (0, 0.9)},
        generator=1,
    )
    rho = float(torch.corrcoef(z.T)[0, 1])
    assert abs(rho - 0.9) < 0.02 and abs(float(z[:, 1].std()) - 1) < 0.03
    far = z[:, 0].abs() > 1.5
    near = z[:, 0].abs() < 0.5
    assert (
        float(y[far].float().mean()) > 0.9
        and float(y[near].float().mean()) < 0.2
    )
    with pytest.raises(ValueError):
        toydata.tabular_rule_data(10, [0.0, 0.0], correlated={1: (1, 0.5)})


def test_standardize_and_gradients_in_raw_units():
    # A linear logit behind a Standardize layer: the gradient in raw units is w / std.
    raw = torch.tensor([[1.0, 100.0], [3.0, 300.0], [5.0, 200.0]])
    std_layer = toydata.Standardize.fit(raw)
    assert torch.allclose(std_layer(raw).mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(std_layer(raw).std(0), torch.ones(2), atol=1e-6)
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -1.0]]))
    model = nn.Sequential(std_layer, lin)
    g = gradsal.vanilla_gradient(model, raw)
    assert torch.allclose(
        g, (torch.tensor([2.0, -1.0]) / std_layer.std).expand(3, 2), atol=1e-6
    )
    with pytest.raises(ValueError):
        toydata.Standardize(torch.zeros(2), torch.tensor([1.0, 0.0]))


def test_train_classifier_fits_a_separable_problem_reproducibly():
    z, _ = toydata.tabular_rule_data(400, [1.0, 0.0], generator=2)
    y = (z[:, 0] > 0).long()
    results = []
    for _ in range(2):
        model = toydata.tabular_mlp(2, (8,), 1, seed=0)
        history = toydata.train_classifier(
            model, z, y, epochs=25, batch_size=100, lr=2e-2, generator=0
        )
        results.append(
            (history, [p.detach().clone() for p in model.parameters()])
        )
        assert not model.training
        assert toydata.accuracy(model, z, y) > 0.97
        assert history[-1] < history[0]
    assert results[0][0] == results[1][0]
    assert all(torch.equal(p, q) for p, q in zip(results[0][1], results[1][1]))
    # two logits: softmax cross-entropy
    model2 = toydata.tabular_mlp(2, (8,), 2, seed=0)
    toydata.train_classifier(
        model2, z, y, epochs=25, batch_size=100, lr=2e-2, generator=0
    )
    assert toydata.accuracy(model2, z, y) > 0.97


def test_smoothgrad_on_a_linear_series_model_is_the_weight():
    # chapter 04's identity for a linear model carries over to sequences unchanged
    w = torch.linspace(-1, 1, 16)
    model = nn.Linear(16, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w.reshape(1, -1))
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    sg = gradsal.smoothgrad(model, x, n_samples=8, mode="signed", generator=0)
    assert torch.allclose(sg, w.expand(3, 16), atol=1e-6)
    assert math.isclose(
        float(gradsal.gradient_x_input(model, x)[1].sum()),
        float(model(x).detach()[1, 0]),
        rel_tol=1e-5,
    )


# ---------------------------------------------------------------------------
# seeds: the package's one rule (gradsal.core.as_generator), with seed 0 by default


def test_defaults_are_seed_zero_and_none_is_the_global_generator():
    torch.manual_seed(123)
    for u, v in zip(
        toydata.planted_window_series(6),
        toydata.planted_window_series(6, generator=0),
    ):
        assert torch.equal(u, v)
    z, y = toydata.tabular_rule_data(50, [1.0, -1.0])
    z0, y0 = toydata.tabular_rule_data(50, [1.0, -1.0], generator=0)
    assert torch.equal(z, z0) and torch.equal(y, y0)
    # None means torch's global generator, as everywhere in gradsal: torch.manual_seed decides
    torch.manual_seed(5)
    a = toydata.planted_window_series(6, generator=None)
    torch.manual_seed(5)
    b = toydata.planted_window_series(6, generator=None)
    c = toydata.planted_window_series(6, generator=None)
    assert torch.equal(a[0], b[0]) and not torch.equal(b[0], c[0])
    torch.manual_seed(5)
    assert torch.equal(
        toydata.tabular_rule_data(50, [1.0], generator=None)[0],
        torch.randn(50, 1, generator=torch.Generator().manual_seed(5)),
    )


def test_train_classifier_default_order_is_seed_zero():
    z, y = toydata.tabular_rule_data(200, [1.0, 0.0], generator=4)
    runs = []
    for generator in ("default", 0):
        model = toydata.tabular_mlp(2, (4,), 1, seed=0)
        kwargs = {} if generator == "default" else {"generator": generator}
        runs.append(
            toydata.train_classifier(
                model, z, y, epochs=3, batch_size=50, **kwargs
            )
        )
    assert runs[0] == runs[1]
    with pytest.raises(TypeError, match="generator"):
        toydata.planted_window_series(4, generator="seed")
