"""Synthetic data with a known answer, tiny models and a training loop (chapter 06).

Chapter 06-BeyondImages applies the book's gradient methods, unchanged, to two
kinds of data where the right explanation is known by construction:

- time series whose label is decided by a short pattern planted at a random
  position (:func:`planted_window_series`), classified by a small 1D CNN
  (:class:`SeriesCNN`);
- tables whose label follows a known rule on a few informative features
  (:func:`tabular_rule_data`), classified by a small MLP (:func:`tabular_mlp`)
  that standardises its own input (:class:`Standardize`), as the image models
  normalise their pixels.

It also holds the scores that compare an attribution with the known answer:
:func:`top_k_hits`, :func:`mass_inside` and :func:`pointing_game`. Everything is
seeded, runs on a CPU in seconds, and needs no download.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "SeriesCNN",
    "Standardize",
    "accuracy",
    "aligned_profile",
    "mass_inside",
    "planted_window_series",
    "pointing_game",
    "tabular_mlp",
    "tabular_rule_data",
    "top_k_hits",
    "train_classifier",
    "window_mask",
]


def _gen(seed: torch.Generator | int | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool)):
        return torch.Generator().manual_seed(0 if seed is None else seed)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None; got {type(seed).__name__}")


# ---------------------------------------------------------------------------
# time series with a planted window


def window_mask(start: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """Boolean (B, T) mask that is True on ``start[b] <= t < start[b] + width``.

    The ground truth of chapter 06's localisation scores: the time steps where the
    pattern that decides the label was planted.
    """
    start = torch.as_tensor(start).long().reshape(-1, 1)
    t = torch.arange(length).reshape(1, -1)
    return (t >= start) & (t < start + width)


def planted_window_series(
    n: int,
    *,
    length: int = 100,
    width: int = 12,
    amplitude: float = 1.5,
    noise: float = 1.0,
    trend: float = 0.0,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy series with one bump (label 1) or one dip (label 0) planted at a random place.

    Each series is white Gaussian noise of standard deviation ``noise``, plus,
    when ``trend > 0``, a slow sinusoid of amplitude ``trend`` with a random
    period and phase that carries no information about the label. A smooth
    pattern (a Hann window of ``width`` steps and height ``amplitude``) is added
    with sign +1 for label 1 and -1 for label 0, starting at a uniformly random
    step. Returns ``(x, y, start)``: x of shape (n, length), float32; y of shape
    (n,), int64 with balanced classes in random order; start of shape (n,),
    the first step of each planted window. Chapter 06-BeyondImages.
    """
    if n < 1 or width < 1 or length < width:
        raise ValueError(f"need n >= 1 and 1 <= width <= length; got n={n}, width={width}, length={length}")
    g = _gen(generator)
    y = torch.randperm(n, generator=g) % 2
    start = torch.randint(0, length - width + 1, (n,), generator=g)
    x = noise * torch.randn(n, length, generator=g)
    if trend > 0:
        period = length * (1.0 + 2.0 * torch.rand(n, 1, generator=g))
        phase = 2 * math.pi * torch.rand(n, 1, generator=g)
        t = torch.arange(length, dtype=torch.float32).reshape(1, -1)
        x = x + trend * torch.sin(2 * math.pi * t / period + phase)
    shape = torch.hann_window(width + 2, periodic=False)[1:-1]  # strictly positive on all `width` steps
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
    Weights are initialised from ``seed``. Chapter 06-BeyondImages.
    """

    def __init__(
        self, in_channels: int = 1, channels: int = 16, kernel_size: int = 7, n_classes: int = 2, *, seed: int = 0
    ):
        super().__init__()
        pad = kernel_size // 2
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
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
    Chapter 06-BeyondImages.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        std = torch.as_tensor(std, dtype=torch.float32)
        if (std <= 0).any():
            raise ValueError("std must be positive for every feature")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", std.clone())

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardize:
        """Statistics of a training set: per-column mean and standard deviation."""
        return cls(x.mean(0), x.std(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def tabular_mlp(n_features: int, hidden: Sequence[int] = (32, 32), n_classes: int = 2, *, seed: int = 0) -> nn.Sequential:
    """A ReLU multilayer perceptron mapping (B, n_features) to (B, n_classes) logits.

    With ``n_classes=1`` the single output is read as the log-odds of class 1
    (see :func:`train_classifier`). Weights are initialised from ``seed``. Prepend a :class:`Standardize` layer
    to feed it raw features. Chapter 06-BeyondImages.
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
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal features and labels drawn from a known logistic rule.

    Features z ~ N(0, I) with ``len(coef)`` columns; optionally ``correlated``
    maps a column j to ``(i, rho)``, replacing z_j by a copy of z_i with
    correlation rho (``rho * z_i + sqrt(1 - rho^2) * noise``). The label is
    Bernoulli(sigmoid(s)) with score
    ``s = bias + sum_j coef[j] z_j + sum_j quadratic[j] (z_j^2 - 1)``:
    linear features act through their coefficient, quadratic ones through their
    size whatever their sign. Returns (z of shape (n, d) float32, y of shape (n,)
    int64). Chapter 06-BeyondImages.
    """
    g = _gen(generator)
    coef_t = torch.as_tensor(coef, dtype=torch.float32)
    d = coef_t.numel()
    z = torch.randn(n, d, generator=g)
    for j, (i, rho) in (correlated or {}).items():
        if not (0 <= i < d and 0 <= j < d and i != j and -1 <= rho <= 1):
            raise ValueError(f"correlated entry {j}: ({i}, {rho}) is not a valid (column, correlation)")
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
    generator: torch.Generator | int | None = None,
) -> list[float]:
    """Fit ``model`` to (x, y) with Adam and cross-entropy; return the mean loss per epoch.

    A model with a single output column is read as a binary classifier whose
    logit is the log-odds of class 1 (binary cross-entropy); otherwise the
    columns are class logits (softmax cross-entropy). Mini-batches are drawn in
    an order fixed by ``generator``, so with a seeded model the result is
    reproducible. The model is left in eval mode with its parameters trainable.
    Tiny models train fastest with ``torch.set_num_threads(1)``.
    Chapter 06-BeyondImages.
    """
    g = _gen(generator)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
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
    where the log-odds is positive. Chapter 06-BeyondImages.
    """
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        return float((pred == y).float().mean())
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------
# scoring an attribution against a known answer


def _check_pair(attr: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    attr = torch.as_tensor(attr).detach().float()
    mask = torch.as_tensor(mask).bool()
    if mask.ndim == 1:
        mask = mask.expand_as(attr)
    if attr.shape != mask.shape or attr.ndim != 2:
        raise ValueError(f"attr and mask must both have shape (B, T); got {tuple(attr.shape)} and {tuple(mask.shape)}")
    return attr, mask


def top_k_hits(attr: torch.Tensor, mask: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Per example, the fraction of the k highest-scoring positions that lie inside ``mask``.

    ``attr`` and ``mask`` have shape (B, T) (a (T,) mask is shared by all rows);
    ``k`` defaults to the number of True entries of each row's mask, which makes
    the score the precision at k of the ranking. An attribution drawn at random
    scores ``k_true / T`` on average. Ties are broken by position. Chapter 06.
    """
    attr, mask = _check_pair(attr, mask)
    ks = mask.sum(1) if k is None else torch.full((attr.shape[0],), int(k))
    if (ks < 1).any() or (ks > attr.shape[1]).any():
        raise ValueError("k must be between 1 and the number of positions")
    order = attr.argsort(dim=1, descending=True, stable=True)
    inside = mask.gather(1, order).float()
    rank = torch.arange(attr.shape[1]).reshape(1, -1)
    return ((rank < ks.reshape(-1, 1)).float() * inside).sum(1) / ks.float()


def mass_inside(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example, the share of the total |attribution| that falls inside ``mask``.

    Compare with the mask's share of the positions, which a flat attribution
    would score. A row whose attribution is all zero scores 0. Chapter 06.
    """
    attr, mask = _check_pair(attr, mask)
    a = attr.abs()
    total = a.sum(1)
    return torch.where(total > 0, (a * mask).sum(1) / total.clamp_min(1e-30), torch.zeros_like(total))


def pointing_game(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example, 1.0 if the single highest-scoring position lies inside ``mask``, else 0.0."""
    return top_k_hits(attr, mask, k=1)


def aligned_profile(attr: torch.Tensor, start: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Mean attribution at offsets ``-before .. after - 1`` from each example's window start.

    Lines the (B, T) attributions up on their planted windows and averages over
    the examples that have a value at each offset (windows near the ends of a
    series contribute to fewer offsets). Returns a tensor of length
    ``before + after``; entry ``before + d`` is the mean at offset d. Chapter 06.
    """
    attr = torch.as_tensor(attr).detach().float()
    start = torch.as_tensor(start).long().reshape(-1, 1)
    if attr.ndim != 2 or start.shape[0] != attr.shape[0]:
        raise ValueError(f"attr must be (B, T) with one start per row; got {tuple(attr.shape)} and {start.shape[0]} starts")
    offsets = torch.arange(-before, after).reshape(1, -1)
    pos = start + offsets
    valid = (pos >= 0) & (pos < attr.shape[1])
    values = attr.gather(1, pos.clamp(0, attr.shape[1] - 1)) * valid
    return values.sum(0) / valid.sum(0).clamp_min(1)
