"""Is a saliency map faithful? Deletion and insertion curves (chapter 05, Sanity Checks).

Deletion and insertion (Petsiuk et al., 2018, RISE): remove (or reveal) the
pixels of an image in the order of a saliency map and follow the target class's
probability; a faithful map makes the deletion curve fall fast (small area) and
the insertion curve rise fast (large area). Each curve is summarised by its area
on [0, 1] (:func:`auc`). Removed pixels take the values of a
:func:`baseline_image` (by default a strong blur, which keeps colours and adds no
edges). The model is run in eval mode, without gradients; the caller's image and
maps are only read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core import (
    check_number,
    check_positive_int,
    device_of,
    forward,
    frozen,
    resolve_targets,
    to_numpy,
)
from ..engine import DEFAULT_BATCH_SIZE, open_engine
from .checks import ArrayLike, as_map, check_image

__all__ = [
    "CURVE_KINDS",
    "Curve",
    "auc",
    "baseline_image",
    "deletion_curve",
    "insertion_curve",
    "perturbation_curve",
    "perturbation_curves",
]

CURVE_KINDS = ("deletion", "insertion")


def baseline_image(
    x: torch.Tensor,
    kind: str = "blur",
    *,
    blur_sigma: float = 10.0,
    taps: int | None = None,
) -> torch.Tensor:
    """The image that deleted pixels are replaced by (and insertion starts from).

    ``"blur"``: a Gaussian blur of ``x`` with standard deviation ``blur_sigma``
    pixels: colours kept, object detail gone, no new edges (at the default 10,
    the book's photos keep under 5% probability for their class). With
    ``taps=k`` the blur is the one of Petsiuk et al.'s reference code (RISE):
    a k x k kernel (``scipy.ndimage.gaussian_filter`` of a centred impulse)
    applied as a convolution with zero padding, so the borders darken; their
    insertion curves start from ``taps=11, blur_sigma=5``. ``"zero"``: black.
    ``"mean"``: each channel's mean colour. Returns a new (C, H, W) tensor.
    Chapter 05, Sanity Checks; chapter 07, The Wider Family.
    """
    x = check_image(x)
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.detach().mean(dim=(1, 2), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        sigma = check_number(
            blur_sigma,
            "blur_sigma",
            minimum=0.0,
            strict=True,
            meaning="in pixels",
        )
        if taps is not None:
            return _kernel_blur(x, sigma, check_positive_int(taps, "taps"))
        from skimage.filters import gaussian

        out = gaussian(
            to_numpy(x, "x"),
            sigma=sigma,
            channel_axis=0,
            mode="reflect",
            preserve_range=True,
        )
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
    raise ValueError(
        f"baseline kind must be 'blur', 'zero' or 'mean'; got {kind!r}"
    )


def _kernel_blur(x: torch.Tensor, sigma: float, taps: int) -> torch.Tensor:
    """RISE's blur: a taps x taps Gaussian kernel, convolved with zero padding."""
    from scipy.ndimage import gaussian_filter

    if taps % 2 == 0:
        raise ValueError(
            f"taps must be odd (the kernel has a centre); got {taps}"
        )
    impulse = np.zeros((taps, taps))
    impulse[taps // 2, taps // 2] = 1.0
    kernel = torch.from_numpy(gaussian_filter(impulse, sigma)).to(
        device=x.device, dtype=x.dtype
    )
    weight = kernel.expand(x.shape[0], 1, taps, taps)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(
            x.detach()[None], weight, padding=taps // 2, groups=x.shape[0]
        )
    return out[0]


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: ``scores[i]`` after revealing or removing ``fractions[i]`` of the pixels."""

    kind: str
    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve on [0, 1] by the trapezoid rule (see :func:`auc`)."""
        return auc(self.fractions, self.scores)


def auc(
    fractions: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
) -> float:
    """Area under a curve sampled at ``fractions`` of [0, 1], by the trapezoid rule.

    ``fractions`` must increase strictly from 0 to 1, so the area of a constant
    curve c is c, and areas of curves sampled on different grids are comparable.
    Chapter 05, Sanity Checks.
    """
    f = np.asarray(fractions, dtype=float)
    v = np.asarray(values, dtype=float)
    if f.ndim != 1 or v.shape != f.shape or f.size < 2:
        raise ValueError(
            f"fractions and values must be 1-D of one length >= 2; got shapes {f.shape} and {v.shape}"
        )
    if not (np.isfinite(f).all() and np.isfinite(v).all()):
        raise ValueError("fractions and values must be finite")
    _check_grid(f)
    return float(np.sum(np.diff(f) * (v[1:] + v[:-1]) / 2))


def _check_grid(f: np.ndarray) -> np.ndarray:
    """``f`` if it increases strictly from 0 to 1 (up to 1e-9 at the ends)."""
    if not (
        np.all(np.diff(f) > 0) and abs(f[0]) < 1e-9 and abs(f[-1] - 1) < 1e-9
    ):
        raise ValueError(
            f"fractions must increase strictly from 0 to 1; got {f.tolist()}"
        )
    return f


def _fraction_grid(
    fractions: Sequence[float] | np.ndarray | None, steps: int
) -> np.ndarray:
    if fractions is None:
        return np.linspace(0.0, 1.0, check_positive_int(steps, "steps") + 1)
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or f.size < 2 or not np.isfinite(f).all():
        raise ValueError(
            "fractions must be a 1-D sequence of at least two finite numbers"
        )
    return _check_grid(f)


def _resolve_baseline(
    x: torch.Tensor, baseline: str | torch.Tensor, blur_sigma: float
) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != x.shape or not baseline.is_floating_point():
            raise ValueError(
                f"a baseline tensor must be a float tensor of x's shape {tuple(x.shape)}; got {tuple(baseline.shape)}"
            )
        if not torch.isfinite(baseline).all():
            raise ValueError(
                "the baseline tensor contains NaN or infinite values"
            )
        return baseline.detach().to(device=x.device, dtype=x.dtype)
    if isinstance(baseline, str):
        return baseline_image(x, baseline, blur_sigma=blur_sigma)
    raise TypeError(
        f"baseline must be 'blur', 'zero', 'mean' or a tensor; got {type(baseline).__name__}"
    )


def _logits(
    model: nn.Module, xb: torch.Tensor, _targets: object
) -> torch.Tensor:
    """The engine kernel of a forward pass: the model's (B, K) logits, no graph."""
    with torch.no_grad():  # grad mode is per thread: set it in the worker
        return forward(model, xb)


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: Mapping[str, ArrayLike],
    target: int | None = None,
    *,
    kinds: Sequence[str] = CURVE_KINDS,
    fractions: Sequence[float] | np.ndarray | None = None,
    steps: int = 16,
    baseline: str | torch.Tensor = "blur",
    blur_sigma: float = 10.0,
    score: str = "probability",
    batch_size: int | None = None,
) -> dict[tuple[str, str], Curve]:
    """Deletion and/or insertion curves of several (H, W) maps of one image at once.

    Returns ``{(map name, kind): Curve}``. The same as calling
    :func:`perturbation_curve` for each map and kind, but the two images every
    curve shares (``x`` itself and the baseline) go through the model once, and
    the rest are batched across maps. Chapter 05, Sanity Checks.
    """
    for kind in kinds:
        if kind not in CURVE_KINDS:
            raise ValueError(
                f"kinds must be taken from {CURVE_KINDS}; got {kind!r}"
            )
    if not kinds:
        raise ValueError(f"kinds must name at least one of {CURVE_KINDS}")
    if score not in ("probability", "logit"):
        raise ValueError(
            f"score must be 'probability' or 'logit'; got {score!r}"
        )
    batch_size = (
        check_positive_int(batch_size, "batch_size", allow_none=True)
        or DEFAULT_BATCH_SIZE
    )
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError(
            "maps must be a non-empty dict of name -> (H, W) saliency map"
        )
    x = check_image(x)
    h, w = x.shape[1:]
    ranks = {}
    for name, saliency in maps.items():
        s = as_map(saliency, f"saliency map {name!r}")
        if s.shape != (h, w):
            raise ValueError(
                f"saliency map {name!r} has shape {s.shape} but the image is {(h, w)} pixels"
            )
        order = np.argsort(-s.ravel(), kind="stable")  # ties keep pixel order
        rank = np.empty(h * w, dtype=np.int64)
        rank[order] = np.arange(h * w)
        ranks[name] = torch.from_numpy(rank.reshape(h, w)).to(x.device)
    grid = _fraction_grid(fractions, steps)
    base = _resolve_baseline(x, baseline, blur_sigma)
    img = x.detach()
    counts = [int(round(f * h * w)) for f in grid]

    # Every image to score, as (map name or None, kind, count); the all-x and
    # all-baseline images are shared by every curve and listed once.
    jobs: list[tuple[str, str, int]] = []
    for name in ranks:
        for kind in kinds:
            jobs += [(name, kind, k) for k in counts if 0 < k < h * w]

    def build(job: tuple[str, str, int]) -> torch.Tensor:
        name, kind, k = job
        mask = (ranks[name] < k).to(img.dtype).unsqueeze(0)
        return (
            img * (1 - mask) + base * mask
            if kind == "deletion"
            else base * (1 - mask) + img * mask
        )

    with frozen(model), torch.no_grad():
        device = device_of(model, x.device)

        def scores_of(logits: torch.Tensor, cls: torch.Tensor) -> np.ndarray:
            out = logits.softmax(dim=1) if score == "probability" else logits
            return to_numpy(out[:, cls], "scores")

        ends = forward(model, torch.stack([img, base]).to(device))
        cls = resolve_targets(target, ends[:1])[0]
        end_scores = scores_of(ends, cls)
        done: list[np.ndarray] = []
        # The perturbed images run through the engine like gradient passes
        # (folded graph, worker threads): forward passes are all the cost.
        with open_engine(
            model,
            img[None].to(device),
            items_per_example=max(len(jobs), 1),
            batch_size=batch_size,
        ) as engine:
            sizes = engine.chunk_sizes(len(jobs), batch_size) if jobs else []
            starts = np.cumsum([0] + sizes).tolist()
            batches = (
                (
                    None,
                    torch.stack([build(j) for j in jobs[lo:hi]]).to(device),
                    cls,
                )
                for lo, hi in zip(starts, starts[1:])
            )
            for _, logits in engine.map(_logits, batches):
                done.append(scores_of(logits, cls))
    flat = np.concatenate(done) if done else np.zeros(0)
    looked_up = dict(zip(jobs, flat))
    x_score, base_score = float(end_scores[0]), float(end_scores[1])

    curves = {}
    for name in ranks:
        for kind in kinds:
            values = []
            for k in counts:
                if 0 < k < h * w:
                    values.append(looked_up[(name, kind, k)])
                else:
                    removed_all = k >= h * w
                    # deletion: 0 pixels removed is x, all removed is the baseline; insertion the reverse
                    values.append(
                        base_score
                        if removed_all == (kind == "deletion")
                        else x_score
                    )
            curves[(name, kind)] = Curve(
                kind=kind,
                fractions=grid.copy(),
                scores=np.asarray(values, dtype=float),
            )
    return curves


def perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: ArrayLike,
    target: int | None = None,
    *,
    kind: str = "deletion",
    fractions: Sequence[float] | np.ndarray | None = None,
    steps: int = 16,
    baseline: str | torch.Tensor = "blur",
    blur_sigma: float = 10.0,
    score: str = "probability",
    batch_size: int | None = None,
) -> Curve:
    """Deletion or insertion curve of one (H, W) saliency map (Petsiuk et al., 2018).

    Pixels are ranked by decreasing saliency (ties in pixel order). At each
    fraction f the first round(f H W) of them are, for ``"deletion"``, replaced
    in all channels by the ``baseline`` image, and for ``"insertion"`` copied
    from ``x`` into the baseline; the curve is the target class's softmax
    probability (``score="logit"``: its logit) on each such image. A faithful map
    makes the deletion curve fall fast (small area) and the insertion curve rise
    fast (large area). ``fractions`` (from 0 to 1) overrides the uniform grid of
    ``steps`` steps; ``baseline`` is a :func:`baseline_image` kind or a tensor of
    ``x``'s shape. The images go through the model ``batch_size`` at a time
    (None: :data:`gradsal.engine.DEFAULT_BATCH_SIZE`, the fastest per image on
    two CPU cores), in eval mode, without gradients; ``target`` defaults to the class predicted for
    ``x``. For several maps of one image use :func:`perturbation_curves`.
    Chapter 05, Sanity Checks.
    """
    if kind not in CURVE_KINDS:
        raise ValueError(f"kind must be one of {CURVE_KINDS}; got {kind!r}")
    curves = perturbation_curves(
        model,
        x,
        {"map": saliency},
        target,
        kinds=(kind,),
        fractions=fractions,
        steps=steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        score=score,
        batch_size=batch_size,
    )
    return curves[("map", kind)]


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: ArrayLike,
    target: int | None = None,
    **kwargs,
) -> Curve:
    """Deletion curve: :func:`perturbation_curve` with ``kind="deletion"`` (chapter 05, Sanity Checks)."""
    return perturbation_curve(
        model, x, saliency, target, kind="deletion", **kwargs
    )


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: ArrayLike,
    target: int | None = None,
    **kwargs,
) -> Curve:
    """Insertion curve: :func:`perturbation_curve` with ``kind="insertion"`` (chapter 05, Sanity Checks)."""
    return perturbation_curve(
        model, x, saliency, target, kind="insertion", **kwargs
    )
