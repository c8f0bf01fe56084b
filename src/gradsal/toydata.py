"""Data with a known answer, tiny models and a training loop (chapter 06, Beyond Images).

Chapter 06, Beyond Images, applies the book's gradient methods, unchanged, to
two kinds of data where the right explanation is known by construction, as
Ismail et al. (2020) do for time series:

- time series whose label is decided by a short pattern planted at a random
  position (:func:`planted_window_series`), classified by a small 1D CNN
  (:class:`SeriesCNN`);
- tables whose label follows a known rule on a few informative features
  (:func:`tabular_rule_data`), classified by a small MLP (:func:`tabular_mlp`)
  that standardises its own input (:class:`Standardize`), as the image models
  normalise their pixels.

The scores that compare an attribution with the known answer are
:mod:`gradsal.metrics.localization`. Everything is seeded (by default with seed
0, by the package's one rule :func:`gradsal.core.as_generator`), runs on a CPU
in seconds, and needs no download.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .core import as_generator, check_positive_int, eval_mode

__all__ = [
    "SeriesCNN",
    "Standardize",
    "accuracy",
    "planted_window_series",
    "tabular_mlp",
    "tabular_rule_data",
    "train_classifier",
]


# ---------------------------------------------------------------------------
# time series with a planted window


def planted_window_series(
    n: int,
    *,
    length: int = 100,
    width: int = 12,
    amplitude: float = 1.5,
    noise: float = 1.0,
    trend: float = 0.0,
    generator: torch.Generator | int | None = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy series with one bump (label 1) or one dip (label 0) planted at a random place.

    Each series is white Gaussian noise of standard deviation ``noise``, plus,
    when ``trend > 0``, a slow sinusoid of amplitude ``trend`` with a random
    period and phase that carries no information about the label. A smooth
    pattern (a Hann window of ``width`` steps and height ``amplitude``) is added
    with sign +1 for label 1 and -1 for label 0, starting at a uniformly random
    step. Returns ``(x, y, start)``: x of shape (n, length), float32; y of shape
    (n,), int64 with balanced classes in random order; start of shape (n,),
    the first step of each planted window (:func:`gradsal.metrics.window_mask`
    turns it into the answer). ``generator`` is a seed, a ``torch.Generator`` or
    None for torch's global generator. Chapter 06, Beyond Images.
    """
    check_positive_int(n, "n")
    check_positive_int(width, "width")
    if length < width:
        raise ValueError(
            f"need 1 <= width <= length; got width={width}, length={length}"
        )
    g = as_generator(generator)
    y = torch.randperm(n, generator=g) % 2
    start = torch.randint(0, length - width + 1, (n,), generator=g)
    x = noise * torch.randn(n, length, generator=g)
    if trend > 0:
        period = length * (1.0 + 2.0 * torch.rand(n, 1, generator=g))
        phase = 2 * math.pi * torch.rand(n, 1, generator=g)
        t = torch.arange(length, dtype=torch.float32).reshape(1, -1)
        x = x + trend * torch.sin(2 * math.pi * t / period + phase)
    shape = torch.hann_window(width + 2, periodic=False)[
        1:-1
    ]  # strictly positive on all `width` steps
    sign = 2.0 * y.float() - 1.0
    rows = torch.arange(n).reshape(-1, 1)
    cols = start.reshape(-1, 1) + torch.arange(width).reshape(1, -1)
    x[rows, cols] += amplitude * sign.reshape(-1, 1) * shape.reshape(1, -1)
    return x.float(), y.long(), start


class SeriesCNN(nn.Module):
    """A small 1D CNN for (B, T) or (B, C, T) series: two convolutions, global max pooling.

    The max over time makes the network a detector of a pattern anywhere in the
    series, and routes the gradient of a logit to the time steps around each
    channel's strongest response (two layers of kernel k see 2k - 1 steps).
    Weights are initialised from ``seed``. Chapter 06, Beyond Images.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 16,
        kernel_size: int = 7,
        n_classes: int = 2,
        *,
        seed: int = 0,
    ):
        super().__init__()
        pad = kernel_size // 2
        with torch.random.fork_rng(
            devices=[]
        ):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            self.features = nn.Sequential(
                nn.Conv1d(in_channels, channels, kernel_size, padding=pad),
                nn.ReLU(),
                nn.Conv1d(channels, channels, kernel_size, padding=pad),
                nn.ReLU(),
            )
            self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # (B, T): one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).amax(dim=-1))


# ---------------------------------------------------------------------------
# tabular data with a known rule


class Standardize(nn.Module):
    """First layer of a tabular model: ``(x - mean) / std`` with fixed, stored statistics.

    The tabular counterpart of the image models' pixel normalisation: the model
    takes features in their own units, so gradients are taken in those units.
    Chapter 06, Beyond Images.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        std = torch.as_tensor(std, dtype=torch.float32)
        if (std <= 0).any():
            raise ValueError("std must be positive for every feature")
        self.register_buffer(
            "mean", torch.as_tensor(mean, dtype=torch.float32).clone()
        )
        self.register_buffer("std", std.clone())

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardize:
        """Statistics of a training set: per-column mean and standard deviation."""
        return cls(x.mean(0), x.std(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def tabular_mlp(
    n_features: int,
    hidden: Sequence[int] = (32, 32),
    n_classes: int = 2,
    *,
    seed: int = 0,
) -> nn.Sequential:
    """A ReLU multilayer perceptron mapping (B, n_features) to (B, n_classes) logits.

    With ``n_classes=1`` the single output is read as the log-odds of class 1
    (see :func:`train_classifier`). Weights are initialised from ``seed``. Prepend a :class:`Standardize` layer
    to feed it raw features. Chapter 06, Beyond Images.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)


def tabular_rule_data(
    n: int,
    coef: Sequence[float],
    *,
    quadratic: dict[int, float] | None = None,
    bias: float = 0.0,
    correlated: dict[int, tuple[int, float]] | None = None,
    generator: torch.Generator | int | None = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal features and labels drawn from a known logistic rule.

    Features z ~ N(0, I) with ``len(coef)`` columns; optionally ``correlated``
    maps a column j to ``(i, rho)``, replacing z_j by a copy of z_i with
    correlation rho (``rho * z_i + sqrt(1 - rho^2) * noise``). The label is
    Bernoulli(sigmoid(s)) with score
    ``s = bias + sum_j coef[j] z_j + sum_j quadratic[j] (z_j^2 - 1)``:
    linear features act through their coefficient, quadratic ones through their
    size whatever their sign. Returns (z of shape (n, d) float32, y of shape (n,)
    int64). ``generator`` is a seed, a ``torch.Generator`` or None for torch's
    global generator. Chapter 06, Beyond Images.
    """
    g = as_generator(generator)
    coef_t = torch.as_tensor(coef, dtype=torch.float32)
    d = coef_t.numel()
    z = torch.randn(n, d, generator=g)
    for j, (i, rho) in (correlated or {}).items():
        if not (0 <= i < d and 0 <= j < d and i != j and -1 <= rho <= 1):
            raise ValueError(
                f"correlated entry {j}: ({i}, {rho}) is not a valid (column, correlation)"
            )
        z[:, j] = rho * z[:, i] + math.sqrt(1 - rho**2) * z[:, j]
    score = bias + z @ coef_t
    for j, a in (quadratic or {}).items():
        score = score + a * (z[:, j] ** 2 - 1)
    y = (torch.rand(n, generator=g) < torch.sigmoid(score)).long()
    return z, y


# ---------------------------------------------------------------------------
# training


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    generator: torch.Generator | int | None = 0,
) -> list[float]:
    """Fit ``model`` to (x, y) with Adam and cross-entropy; return the mean loss per epoch.

    A model with a single output column is read as a binary classifier whose
    logit is the log-odds of class 1 (binary cross-entropy); otherwise the
    columns are class logits (softmax cross-entropy). Mini-batches are drawn in
    an order fixed by ``generator`` (a seed, a ``torch.Generator`` or None for
    torch's global generator), so with a seeded model the result is
    reproducible. The model is left in eval mode with its parameters trainable.
    Tiny models train fastest with ``torch.set_num_threads(1)``.
    Chapter 06, Beyond Images.
    """
    g = as_generator(generator)
    opt = torch.optim.Adam(
        model.parameters(), lr=lr, weight_decay=weight_decay
    )
    ce = nn.CrossEntropyLoss()
    bce = nn.BCEWithLogitsLoss()

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:  # one logit: the log-odds of class 1
            return bce(logits[:, 0], target.float())
        return ce(logits, target)

    history = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / x.shape[0])
    model.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of examples classified correctly (model in eval mode).

    The prediction is the highest logit, or, for a single-logit model, class 1
    where the log-odds is positive. Chapter 06, Beyond Images.
    """
    with eval_mode(model):
        logits = model(x)
    pred = (
        (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    )
    return float((pred == y).float().mean())
