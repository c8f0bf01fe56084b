"""The fused gradient pass of gradsal.engine.fastpath: paddings grown into kernels and
ReLU6 fused into convolutions give the gradients of the unfused graph, on a small
conv + ReLU6 network and on EfficientNet-Lite0. bfloat16 autocast, which the fused
layer leaves to the ordinary operators, is smoke-tested here."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradsal
from gradsal.engine import GradConv, fastpath

UNFUSED = dict(asymmetric_pads=False, relu6=False, input_only=False)


class MobileBlock(nn.Module):
    """Stem behind an asymmetric padding, an inverted residual block (1 x 1 expand,
    depthwise, 1 x 1 project, residual add), a stride-2 depthwise convolution behind
    another asymmetric padding, and ReLU6 written three ways."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, bias=False)
        self.expand = nn.Conv2d(8, 16, 1, bias=False)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.project = nn.Conv2d(16, 8, 1, bias=False)
        self.down = nn.Conv2d(8, 8, 5, stride=2, groups=8, bias=True)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in (8, 16, 16, 8))
        self.act = nn.ReLU6()
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4 + 0.1)
            self.stem.weight.mul_(
                6.0
            )  # some units above 6: both kinks of ReLU6 in play
            for bn in self.bns:
                bn.running_mean.uniform_(-0.3, 0.3, generator=g)
                bn.running_var.uniform_(0.5, 2.0, generator=g)

    def forward(self, x):
        x = self.act(self.bns[0](self.stem(F.pad(x, (0, 1, 0, 1)))))
        y = F.relu6(self.bns[1](self.expand(x)))
        y = F.hardtanh(self.bns[2](self.depthwise(y)), 0.0, 6.0)
        x = x + self.bns[3](self.project(y))
        x = self.act(self.down(F.pad(x, (1, 2, 1, 2))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def block() -> nn.Module:
    return MobileBlock().eval()


def _gradient(module, x, target=1):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(module(x)[:, target].sum(), x)
    return g


def test_relu6_and_paddings_are_fused(block):
    folded = fastpath.fold_for_gradients(block)
    assert (folded.folded_bn, folded.folded_pad, folded.fused_relu6) == (
        4,
        2,
        4,
    )
    convs = [m for m in folded.gm.modules() if isinstance(m, GradConv)]
    assert [m.relu6 for m in convs] == [True, True, True, False, True]
    assert [m.pointwise for m in convs] == [False, True, False, True, False]
    assert convs[0].kernel_size == (4, 4) and convs[-1].kernel_size == (6, 6)
    targets = [n.target for n in folded.gm.graph.nodes]
    assert F.pad not in targets and F.relu6 not in targets


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [15, 16])
def test_fused_graph_has_the_gradients_of_the_unfused_one(
    block, channels_last, size
):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(
        3, 3, size, size, generator=torch.Generator().manual_seed(size)
    )
    x = x.contiguous(memory_format=fmt)
    fused = fastpath.fold_for_gradients(block).module(channels_last)
    unfused = fastpath.trace_and_fold(block, **UNFUSED).module(channels_last)
    torch.testing.assert_close(fused(x), unfused(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused(x), block(x), atol=1e-5, rtol=1e-5)
    g = _gradient(fused, x)
    torch.testing.assert_close(g, _gradient(unfused, x), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g, _gradient(block, x), atol=1e-6, rtol=1e-5)
    assert not any(p.grad is not None for p in block.parameters())


def test_fused_layer_falls_back_under_autocast(block):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fused = fastpath.fold_for_gradients(block).module(channels_last=True)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g16 = _gradient(fused, x)
    g32 = _gradient(fused, x)
    assert torch.isfinite(g16).all()
    assert float((g16.float() - g32).norm() / g32.norm()) < 0.5
    a = gradsal.smoothgrad(
        block, x[0], n_samples=3, generator=0, precision="bfloat16"
    )
    b = gradsal.smoothgrad(
        block, x[0], n_samples=3, generator=0, precision="float32"
    )
    assert gradsal.rank_correlation(a, b) > 0.8


def test_efficientnet_lite0_gradients_match_the_unfused_graph(lite0):
    folded = fastpath.fold_for_gradients(lite0)
    assert (folded.folded_bn, folded.folded_pad, folded.fused_relu6) == (
        49,
        17,
        33,
    )
    x = gradsal.load_image("cat")
    gen = torch.Generator().manual_seed(0)
    xb = (
        x[None] + 0.15 * torch.randn((2, *x.shape), generator=gen)
    ).contiguous(memory_format=torch.channels_last)
    fused = folded.module(channels_last=True)
    unfused = fastpath.trace_and_fold(lite0, **UNFUSED).module(
        channels_last=True
    )
    with torch.no_grad():
        torch.testing.assert_close(
            fused(xb), unfused(xb), atol=1e-4, rtol=1e-4
        )
    g, ref = _gradient(fused, xb, 281), _gradient(unfused, xb, 281)
    # Rounding may move a unit across a ReLU6 kink (as batch-norm folding does).
    torch.testing.assert_close(
        g, ref, atol=1e-3 * float(ref.abs().max()), rtol=1e-3
    )
    assert float((g - ref).norm() / ref.norm()) < 1e-2


def test_guided_backprop_on_the_fused_graph_still_applies_the_rule(block):
    """The fused layers call ReLU6 as a function while Guided Backprop's mode
    watches, so the guided rule acts on the engine's graph as on the model."""
    x = torch.rand(5, 3, 17, 17, generator=torch.Generator().manual_seed(4))
    as_given = gradsal.guided_backprop(block, x, 1)
    on_engine = gradsal.attribute(block, x, 1, method=gradsal.guided_backprop)
    torch.testing.assert_close(on_engine, as_given, rtol=1e-4, atol=1e-6)
    plain = gradsal.vanilla_gradient(block, x, 1)
    assert (as_given - plain).abs().max() > 0.1 * plain.abs().max()


def test_guided_backprop_on_efficientnet_lite0_runs_the_rule_on_the_engine(
    lite0,
):
    x = gradsal.load_image("cat")
    on_engine = gradsal.reduce_channels(
        gradsal.attribute(lite0, x[None], method=gradsal.guided_backprop)[0]
    )
    as_given = gradsal.reduce_channels(gradsal.guided_backprop(lite0, x))
    plain = gradsal.reduce_channels(gradsal.vanilla_gradient(lite0, x))
    assert gradsal.rank_correlation(on_engine, as_given) > 0.99
    assert gradsal.rank_correlation(on_engine, plain) < 0.5


def test_cpu_autocast_is_seen_on_old_and_new_torch(monkeypatch):
    def old_signature():  # torch 2.3: no device argument
        return False

    def seen_as_torch_2_3() -> bool:
        # read through the CPU-only call, deprecated in today's torch; the
        # patch ends before torch.autocast itself needs the new signature
        with monkeypatch.context() as patch, warnings.catch_warnings():
            patch.setattr(torch, "is_autocast_enabled", old_signature)
            warnings.simplefilter("ignore", DeprecationWarning)
            return fastpath.cpu_autocast_enabled()

    assert not fastpath.cpu_autocast_enabled() and not seen_as_torch_2_3()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fastpath.cpu_autocast_enabled() and seen_as_torch_2_3()
    assert not fastpath.cpu_autocast_enabled() and not seen_as_torch_2_3()
