"""Shared fixtures: tiny models with answers known in closed form, and the real model."""

from __future__ import annotations

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning, as in the
# chapters' first cells (on two cores spinning threads slow the work down).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

import gradsal.engine

# As the chapters do: freed memory stays with the allocator for the next pass.
gradsal.engine.reuse_freed_memory()


class TinyCNN(nn.Module):
    """A small ReLU convnet with batch norm and dropout, (B, 3, 8, 8) -> (B, 5) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(24, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Cubic(nn.Module):
    """f_c(x) = sum_i a_ci x_i^3 over all input entries, for K classes."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)  # (K, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).pow(3) @ self.a.T


class SingleReLU(nn.Module):
    """f(x) = relu(w x_0 + b) on inputs (B, 2); x_1 only sets the dynamic range."""

    def __init__(self, w: float, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.w * x[:, :1] + self.b)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of tests on tiny models, where synchronising
    threads costs more than the work (and several threads spin on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    # Give batch norm non-trivial running statistics, as a trained model has.
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def image_batch() -> torch.Tensor:
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def linear_model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


@pytest.fixture
def cubic_model() -> nn.Module:
    a = torch.randn(
        2,
        3 * 4 * 4,
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float64,
    )
    return Cubic(a)


@pytest.fixture
def single_relu():
    return SingleReLU


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    import gradsal

    return gradsal.load_model()
