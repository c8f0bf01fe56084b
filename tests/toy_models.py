"""Tiny models with known answers that several test modules share (chapter 05, Sanity Checks)."""

from __future__ import annotations

import torch
from torch import nn


class TinyEfficientNet(nn.Module):
    """The attribute layout of an EfficientNet, at toy size (3 stages, 5 blocks)."""

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int) -> None:
            super().__init__()
            self._depthwise_conv = nn.Conv2d(
                c_in, c_in, 3, padding=1, groups=c_in, bias=False
            )
            self._bn1 = nn.BatchNorm2d(c_in)
            self._project_conv = nn.Conv2d(c_in, c_out, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(c_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._bn2(
                self._project_conv(
                    torch.relu(self._bn1(self._depthwise_conv(x)))
                )
            )

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(4)
        widths = [(4, 4), (4, 6), (6, 6), (6, 8), (8, 8)]
        self._blocks = nn.ModuleList(self.Block(a, b) for a, b in widths)
        self._conv_head = nn.Conv2d(8, 10, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(10)
        self._fc = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = torch.relu(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter and batch-norm statistic a non-initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(
                    torch.randn(m.running_mean.shape, generator=gen) * 0.1
                )
                m.running_var.copy_(
                    torch.rand(m.running_var.shape, generator=gen) + 0.5
                )
    return model.eval()


def linear_model(w: torch.Tensor) -> nn.Module:
    """Two classes, logits (w . x, 0): class 0's probability is sigmoid(w . x)."""

    class Linear2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(w.clone(), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = (x * self.w).flatten(1).sum(1)
            return torch.stack([z, torch.zeros_like(z)], dim=1)

    return Linear2().eval()
