"""Tests of gradsal.analysis.regions (chapter 03, ReLU Boundaries) on tiny models with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradsal.analysis import gaussian, regions
from gradsal.core import as_generator
from gradsal.methods import gaussian_noise, noise_sigma


def one_hidden_layer(
    n_in: int = 2, n_hidden: int = 7, seed: int = 0
) -> nn.Sequential:
    """f(x) = v . relu(W x + b), two output logits so targets can be picked."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 2)
    ).double()
    net.eval()
    return net


# ---------------------------------------------------------------------------
# states and recording


def test_states_follow_autograd_convention_at_the_kinks():
    z = torch.tensor(
        [-1.0, 0.0, 1e-9, 3.0, 6.0 - 1e-9, 6.0, 7.0], dtype=torch.float64
    )
    assert regions.activation_states(z, 0.0, 6.0).tolist() == [
        0,
        0,
        1,
        1,
        1,
        2,
        2,
    ]
    assert regions.activation_states(z, 0.0, None).tolist() == [
        0,
        0,
        1,
        1,
        1,
        1,
        1,
    ]
    # BETWEEN is exactly where autograd lets the gradient through
    zz = z.clone().requires_grad_(True)
    (g6,) = torch.autograd.grad(nn.ReLU6()(zz).sum(), zz)
    assert torch.equal(
        g6 == 1, regions.activation_states(z, 0.0, 6.0) == regions.BETWEEN
    )
    (g,) = torch.autograd.grad(torch.relu(zz).sum(), zz)
    assert torch.equal(
        g == 1, regions.activation_states(z, 0.0, None) == regions.BETWEEN
    )


def test_kinks_of_modules():
    assert regions.activation_kinks(nn.ReLU6()) == (0.0, 6.0)
    assert regions.activation_kinks(nn.ReLU()) == (0.0, None)
    assert regions.activation_kinks(nn.Hardtanh(-1.0, 2.0)) == (-1.0, 2.0)
    assert regions.activation_kinks(nn.Linear(2, 2)) is None


def test_plain_relu_is_the_default_and_leaky_relu_passes_gradient_below():
    # Without upper, a unit is a plain ReLU: never ABOVE, however large z is.
    z = torch.tensor([-1.0, 0.0, 3.0, 6.0, 7.0], dtype=torch.float64)
    assert regions.activation_states(z).tolist() == [0, 0, 1, 1, 1]
    assert regions.activation_states(z, upper=6.0).tolist() == [0, 0, 1, 2, 2]
    # LeakyReLU: BELOW passes the gradient times the negative slope, BETWEEN unchanged
    leaky = nn.LeakyReLU(0.1)
    lower, upper = regions.activation_kinks(leaky)
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(leaky(zz).sum(), zz)
    states = regions.activation_states(z, lower, upper)
    assert torch.allclose(
        g[states == regions.BELOW], torch.full((2,), 0.1, dtype=torch.float64)
    )
    assert torch.all(g[states == regions.BETWEEN] == 1)


def test_pattern_of_one_hidden_layer_net():
    net = one_hidden_layer()
    x = torch.randn(
        5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    pattern = regions.activation_pattern(net, x)
    expected = (x @ net[0].weight.T + net[0].bias > 0).to(torch.int8)
    assert pattern.dtype == torch.int8 and torch.equal(pattern, expected)
    assert torch.equal(regions.activation_pattern(net, x[0]), expected[0])


class ReusedActivation(nn.Module):
    """One ReLU6 module called twice, in place, as EfficientNet-Lite's blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        return self.b(self.act(self.a(self.act(x * 10))))


def test_recorder_counts_each_call_sees_pre_activations_and_removes_hooks():
    model = ReusedActivation().eval()
    x = torch.tensor([[-1.0, 0.3, 0.7]])
    with regions.PatternRecorder(model) as rec:
        model(x.clone())
        states = rec.take()
    assert [n for _, n in rec.layout] == [3, 4]
    # first call: 10 x = (-10, 3, 7) -> below, between, above (in place: the pre-hook sees z)
    assert states[0, :3].tolist() == [0, 1, 2]
    assert not model.act._forward_pre_hooks and not model.act._forward_hooks
    with pytest.raises(RuntimeError):
        with regions.PatternRecorder(model):
            raise RuntimeError("boom")
    assert not model.act._forward_pre_hooks
    with pytest.raises(ValueError, match="no nn.ReLU"):
        regions.PatternRecorder(nn.Linear(2, 2)).__enter__()


def test_pattern_changes_broadcast():
    a = torch.tensor([0, 1, 2, 1], dtype=torch.int8)
    b = torch.tensor([[0, 1, 2, 1], [1, 1, 0, 1]], dtype=torch.int8)
    assert regions.pattern_changes(a, b).tolist() == [0, 2]
    with pytest.raises(ValueError):
        regions.pattern_changes(a, b[:, :3])


def test_pattern_changes_counts_across_blocks_of_units():
    # more units than one block, changes placed on both sides of block edges
    n = 3 * 2**18 + 5
    a = torch.zeros(n, dtype=torch.int8)
    b = torch.zeros(3, n, dtype=torch.int8)
    b[1, [0, 2**18 - 1, 2**18, n - 1]] = 2
    b[2, :: 2**10] = 1
    counts = regions.pattern_changes(a, b)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [0, 4, len(range(0, n, 2**10))]
    assert regions.pattern_changes(b, a).tolist() == counts.tolist()


# ---------------------------------------------------------------------------
# line scans


def test_line_scan_counts_crossings_of_a_one_hidden_layer_net():
    net = one_hidden_layer(n_in=2, n_hidden=12, seed=3)
    x = torch.tensor([0.2, -0.1], dtype=torch.float64)
    d = torch.tensor([1.0, 0.6], dtype=torch.float64)
    ts = torch.linspace(-3, 3, 601, dtype=torch.float64)
    scan = regions.line_scan(net, x, d, ts, target=1, pixel=(0,), batch_size=7)
    W, b = net[0].weight.detach(), net[0].bias.detach()
    v = net[2].weight.detach()[1]
    # each hidden unit crosses its hyperplane once along the line, at t_j
    t_cross = -(W @ x + b) / (W @ d)
    inside = ((t_cross > ts[0]) & (t_cross < ts[-1])).sum()
    assert int(scan.changes.sum()) == int(inside) > 0
    per_step = torch.histogram(t_cross.clamp(-10, 10), bins=ts).hist
    assert torch.equal(scan.changes.double(), per_step)
    # closed forms of the logit and its derivatives
    points = x + ts[:, None] * d
    gates = (points @ W.T + b > 0).double()
    assert torch.allclose(
        scan.logit,
        (torch.relu(points @ W.T + b) @ v) + net[2].bias[1].detach(),
    )
    assert torch.allclose(scan.directional, (gates * v) @ (W @ d))
    assert torch.allclose(scan.partial, (gates * v) @ W[:, 0])
    # same pattern => same gradient; different pattern => different gradient here
    assert torch.all(scan.grad_change[scan.changes == 0] == 0)
    assert torch.all(scan.grad_change[scan.changes > 0] > 0)
    assert scan.n_units == 12 and scan.target == 1 and scan.pixel == (0,)


def test_line_scan_default_pixel_and_target_and_bad_input():
    net = one_hidden_layer()
    x = torch.tensor([0.5, 0.5], dtype=torch.float64)
    d = torch.tensor([1.0, 0.0], dtype=torch.float64)
    scan = regions.line_scan(net, x, d, [0.0, 0.1, 0.2])
    assert scan.target == int(net(x[None]).argmax())
    assert len(scan.pixel) == 1 and scan.changes.shape == (2,)
    with pytest.raises(ValueError, match="increasing"):
        regions.line_scan(net, x, d, [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        regions.line_scan(net, x, d[:1], [0.0, 1.0])
    assert not any(m._forward_pre_hooks for m in net.modules())


# ---------------------------------------------------------------------------
# flip sweeps


def test_flip_sweep_first_layer_matches_closed_form():
    torch.manual_seed(0)
    net = (
        nn.Sequential(nn.Linear(6, 400), nn.ReLU6(), nn.Linear(400, 3))
        .double()
        .eval()
    )
    with torch.no_grad():
        net[0].bias.mul_(8.0).add_(
            3.0
        )  # spread the pre-activations over both kinks
    x = torch.linspace(-1, 1, 6, dtype=torch.float64)
    sweep = regions.flip_sweep(
        net,
        x,
        [0.0, 0.1, 0.4],
        n_copies=300,
        batch_size=64,
        generator=0,
        gradients=True,
    )
    assert sweep.flipped.shape == (3, 300, 1)
    assert torch.all(sweep.flipped[0] == 0) and torch.allclose(
        sweep.cosine[0], torch.ones(300, dtype=torch.float64)
    )
    W, b = net[0].weight.detach(), net[0].bias.detach()
    z = W @ x + b
    for li in (1, 2):
        sigma = float(sweep.sigmas[li])
        predicted = gaussian.flip_probability(
            z, sigma * W.norm(dim=1), upper=6.0
        ).mean()
        measured = sweep.fraction[li].mean()
        se = sweep.fraction[li].std() / math.sqrt(300)
        assert abs(float(measured - predicted)) < 4 * float(se) + 1e-12
    assert sweep.sigmas[1] == pytest.approx(
        0.1 * 2.0
    )  # level times the range of x


def test_flip_sweep_same_seed_same_draws():
    net = one_hidden_layer()
    x = torch.tensor([0.1, 0.2], dtype=torch.float64)
    a = regions.flip_sweep(
        net, x, [0.5], n_copies=5, generator=3, keep_noise=True, batch_size=2
    )
    b = regions.flip_sweep(
        net, x, [0.5], n_copies=5, generator=3, keep_noise=True, batch_size=5
    )
    assert torch.equal(a.noise, b.noise) and torch.equal(a.flipped, b.flipped)
    with pytest.raises(ValueError):
        regions.flip_sweep(net, x, [-0.1])


def test_flip_sweep_draws_smoothgrads_noise():
    # one noise rule and one draw for the package: sigma = level * range, gaussian_noise per level
    net = one_hidden_layer()
    x = torch.tensor([0.1, 0.7], dtype=torch.float64)
    sweep = regions.flip_sweep(
        net,
        x,
        [0.2, 0.5],
        n_copies=4,
        generator=9,
        keep_noise=True,
        batch_size=3,
    )
    gen = as_generator(9)
    expected = torch.stack([gaussian_noise(x.shape, 4, gen) for _ in range(2)])
    assert torch.equal(sweep.noise, expected.float())
    assert sweep.sigmas.tolist() == [noise_sigma(x, 0.2), noise_sigma(x, 0.5)]


# ---------------------------------------------------------------------------
# row norms


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 1)])
def test_affine_row_norms_of_a_convolution(stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding).double()

    def fn(images):
        return conv(
            images * 2.0 - 1.0
        )  # an affine map with a shift and a scale

    x0 = torch.zeros(3, 9, 8, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda im: fn(im[None])[0], x0)
    expected = jac.flatten(start_dim=3).norm(dim=-1)
    norms = regions.affine_row_norms(
        fn, (3, 9, 8), period=3, dtype=torch.float64
    )
    assert norms.dtype == torch.float64 and torch.allclose(
        norms, expected, atol=1e-12
    )
