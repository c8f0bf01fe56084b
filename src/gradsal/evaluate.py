"""Sanity checks for saliency maps (chapter 05-SanityChecks).

Three questions a careful reader asks of a map before trusting it, each with the
measure the literature uses:

* **Does the map depend on the model?** Cascading parameter randomisation
  (Adebayo et al., 2018): re-initialise the network from the top down, one stage
  at a time, and compare each map with the original by Spearman rank correlation
  (with and without absolute values) and SSIM.
* **Is it faithful?** Deletion and insertion curves (Petsiuk et al., 2018):
  remove (or reveal) pixels in the map's order and follow the target class's
  probability; summarise each curve by its area on [0, 1].
* **Is it robust?** Max-sensitivity (Yeh et al., 2019): the largest relative
  change of the map under small perturbations of the input.

Two baselines that know nothing about the model, a seeded random map and a Sobel
edge map, tell whether a method beats chance and an edge detector. Nothing here
modifies what the caller passes (models are copied before they are changed, input
tensors are only read), except :func:`reinitialize_`, which works in place by design.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .gradients import _device_of, _eval_mode, _forward, _generator, _resolve_targets
from .maps import normalize, rank_correlation

__all__ = [
    "CURVE_KINDS",
    "Curve",
    "MaxSensitivity",
    "auc",
    "baseline_image",
    "cascading_randomization",
    "deletion_curve",
    "efficientnet_stages",
    "insertion_curve",
    "map_similarity",
    "max_sensitivity",
    "perturbation_curve",
    "perturbation_curves",
    "random_map",
    "reinitialize_",
    "sobel_map",
    "spearman",
    "ssim",
]

CURVE_KINDS = ("deletion", "insertion")

Stage = tuple[str, Sequence[str]]


# ---------------------------------------------------------------------------
# small checks


def _as_numpy_map(s: object, name: str) -> np.ndarray:
    if isinstance(s, torch.Tensor):
        if not s.is_floating_point():
            raise TypeError(f"{name} must be a floating-point map; got dtype {s.dtype}")
        arr = s.detach().cpu().double().numpy()
    elif isinstance(s, np.ndarray):
        if not np.issubdtype(s.dtype, np.floating):
            raise TypeError(f"{name} must be a floating-point map; got dtype {s.dtype}")
        arr = s.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (H, W); got {type(s).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map of shape (H, W) (reduce the channels first); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_image(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of shape (C, H, W)")
    if x.ndim != 3:
        raise ValueError(f"x must be one image of shape (C, H, W); got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("x is empty")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    return x


# ---------------------------------------------------------------------------
# 1. cascading parameter randomisation


def _efficientnet_prefix(model: nn.Module) -> tuple[str, nn.Module]:
    for name, module in model.named_modules():
        if all(hasattr(module, a) for a in ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_fc")):
            return (name + "." if name else ""), module
    raise ValueError(
        "no EfficientNet found inside the model (a module with _conv_stem, _blocks, _conv_head and _fc); "
        "for other architectures, pass cascading_randomization a list of (label, [submodule names]) stages"
    )


def efficientnet_stages(model: nn.Module, *, by: str = "stage") -> list[tuple[str, tuple[str, ...]]]:
    """The randomisation steps of an EfficientNet, from the top of the network down.

    Returns ``(label, submodule names)`` pairs, in the order in which cascading
    randomisation re-initialises them: the classifier ``_fc``, the head
    (``_conv_head`` and ``_bn1``), the MBConv blocks from last to first, and the
    stem (``_conv_stem`` and ``_bn0``). With ``by="block"`` every block is its own
    step; with ``by="stage"`` consecutive blocks with the same output width (the
    architecture's stages; 7 for EfficientNet-Lite0) form one step. Names are
    those of ``model.named_modules()``, so the EfficientNet may sit inside a
    wrapper such as ``gradsal.load_model()``'s ``Sequential``. Chapter 05-SanityChecks.
    """
    if by not in ("stage", "block"):
        raise ValueError(f"by must be 'stage' or 'block'; got {by!r}")
    prefix, net = _efficientnet_prefix(model)
    n = len(net._blocks)
    if by == "block":
        groups = [[i] for i in range(n)]
    else:
        groups = []
        width = None
        for i, block in enumerate(net._blocks):
            out = block._project_conv.out_channels
            if out != width:
                groups.append([])
                width = out
            groups[-1].append(i)
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("fc", (f"{prefix}_fc",)),
        ("head", (f"{prefix}_conv_head", f"{prefix}_bn1")),
    ]
    for group in reversed(groups):
        label = f"block {group[0]}" if len(group) == 1 else f"blocks {group[0]}-{group[-1]}"
        steps.append((label, tuple(f"{prefix}_blocks.{i}" for i in reversed(group))))
    steps.append(("stem", (f"{prefix}_conv_stem", f"{prefix}_bn0")))
    return steps


@torch.no_grad()
def reinitialize_(module: nn.Module, generator: torch.Generator | int | None = 0) -> nn.Module:
    """Re-initialise ``module`` and all its submodules *in place*; returns it.

    Weights with two or more axes (convolutions, linear layers) are drawn from
    He et al.'s normal N(0, 2 / fan_in), which keeps the scale of activations
    through ReLU-like layers; biases become 0; batch-norm layers return to the
    identity they start training from (weight 1, bias 0, running mean 0,
    running variance 1). The draws come from ``generator`` (a seed, a
    ``torch.Generator``, or None for torch's global generator), so a seed gives
    the same weights every time. :func:`cascading_randomization` applies it to
    copies of a model (chapter 05-SanityChecks).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    gen = _generator(generator)  # None: torch's global generator
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            if m.weight is not None:
                m.weight.fill_(1.0)
            if m.bias is not None:
                m.bias.zero_()
            continue
        for p in m.parameters(recurse=False):
            if p.ndim >= 2:
                fan_in = p[0].numel()  # in_channels / groups * kernel area, or in_features
                w = torch.randn(p.shape, generator=gen, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
                p.copy_(w.to(device=p.device, dtype=p.dtype))
            else:
                p.zero_()
    return module


def _check_stages(model: nn.Module, stages: Sequence[Stage]) -> list[tuple[str, tuple[str, ...]]]:
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or len(stages) == 0:
        raise ValueError("stages must be a non-empty list of (label, [submodule names]) pairs")
    checked = []
    for item in stages:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"each stage must be a (label, [submodule names]) pair; got {item!r}")
        label, names = item
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names:
            raise ValueError(f"stage {label!r} names no submodule")
        for name in names:
            try:
                sub = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"stage {label!r}: the model has no submodule {name!r}") from None
            if next(sub.parameters(), None) is None and next(sub.buffers(), None) is None:
                raise ValueError(f"stage {label!r}: submodule {name!r} has no parameters to randomise")
        checked.append((label, names))
    return checked


def cascading_randomization(
    model: nn.Module,
    stages: Sequence[Stage] | None = None,
    *,
    generator: torch.Generator | int | None = 0,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(label, model copy)`` with ever more of the network re-initialised.

    The k-th model yielded has the first k ``stages`` re-initialised by
    :func:`reinitialize_`, the rest trained: the cascade of Adebayo et al. (2018),
    from the top of the network down. ``stages`` is a list of ``(label,
    [submodule names])``; ``None`` means :func:`efficientnet_stages` of the model.
    Each yielded model is an independent deep copy (train/eval mode and
    ``requires_grad`` flags as in ``model``), and ``model`` itself is never
    modified. The stages are checked before anything is yielded.
    Chapter 05-SanityChecks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    checked = _check_stages(model, efficientnet_stages(model) if stages is None else stages)
    gen = _generator(generator)

    def steps() -> Iterator[tuple[str, nn.Module]]:
        work = copy.deepcopy(model)
        for label, names in checked:
            for name in names:
                reinitialize_(work.get_submodule(name), gen)
            yield label, copy.deepcopy(work)

    return steps()


# ---------------------------------------------------------------------------
# similarity between maps


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *, absolute: bool = False) -> float:
    """Spearman rank correlation between two maps of one shape, optionally of |a| and |b|.

    With ``absolute=True`` both maps lose their sign first, so a map and its
    negative correlate perfectly: the comparison Adebayo et al. (2018) make for
    absolute-value visualisations. A constant map has no ranking and raises.
    Chapter 05-SanityChecks.
    """
    a_np = _as_numpy_map(a, "a")
    b_np = _as_numpy_map(b, "b")
    if absolute:
        a_np, b_np = np.abs(a_np), np.abs(b_np)
    return rank_correlation(a_np, b_np)


def ssim(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *, win_size: int = 7) -> float:
    """Structural similarity (SSIM) of two (H, W) maps after min-max scaling each to [0, 1].

    Scaling first makes the score independent of each map's units, as in the
    sanity-check literature; SSIM itself is :func:`skimage.metrics.structural_similarity`
    with ``data_range=1``. Identical maps score 1. Chapter 05-SanityChecks.
    """
    from skimage.metrics import structural_similarity

    a_np = _as_numpy_map(a, "a")
    b_np = _as_numpy_map(b, "b")
    if a_np.shape != b_np.shape:
        raise ValueError(f"maps must have the same shape; got {a_np.shape} and {b_np.shape}")
    if min(a_np.shape) < win_size:
        raise ValueError(f"maps of shape {a_np.shape} are smaller than the SSIM window ({win_size})")
    a01 = normalize(torch.from_numpy(a_np)).numpy()
    b01 = normalize(torch.from_numpy(b_np)).numpy()
    return float(structural_similarity(a01, b01, data_range=1.0, win_size=win_size))


def map_similarity(
    signed_a: torch.Tensor | np.ndarray,
    signed_b: torch.Tensor | np.ndarray,
    magnitude_a: torch.Tensor | np.ndarray | None = None,
    magnitude_b: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """The three similarities of the randomisation test, as a dict.

    ``"spearman"``: rank correlation of the signed maps (no absolute value);
    ``"spearman_abs"`` and ``"ssim"``: of the magnitude maps, which default to
    ``|signed_a|`` and ``|signed_b|`` (pass e.g. a channel max of |g| instead).
    Chapter 05-SanityChecks.
    """
    if magnitude_a is None:
        magnitude_a = np.abs(_as_numpy_map(signed_a, "signed_a"))
    if magnitude_b is None:
        magnitude_b = np.abs(_as_numpy_map(signed_b, "signed_b"))
    return {
        "spearman": spearman(signed_a, signed_b),
        "spearman_abs": spearman(magnitude_a, magnitude_b, absolute=True),
        "ssim": ssim(magnitude_a, magnitude_b),
    }


# ---------------------------------------------------------------------------
# baselines that know nothing about the model


def random_map(shape: tuple[int, int], *, generator: torch.Generator | int | None = 0) -> torch.Tensor:
    """A map of independent Uniform(0, 1) values: the chance-level baseline.

    ``shape`` is (H, W); the values come from ``generator`` (a seed or a
    ``torch.Generator``), so a seed gives the same map. Chapter 05-SanityChecks.
    """
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    ):
        raise ValueError(f"shape must be (H, W) with two positive integers; got {shape!r}")
    return torch.rand(tuple(shape), generator=_generator(generator))


def sobel_map(x: torch.Tensor) -> torch.Tensor:
    """Edge strength of an image: the channel max of the Sobel gradient magnitude, (H, W).

    :func:`skimage.filters.sobel` on each channel of a (C, H, W) image, then
    the maximum over channels, the same reduction as the book's saliency maps.
    It depends on the image only, never on the model: the edge-detector
    baseline of chapter 05-SanityChecks.
    """
    from skimage.filters import sobel

    x = _check_image(x)
    arr = x.detach().cpu().double().numpy()
    edges = np.stack([sobel(channel) for channel in arr]).max(axis=0)
    return torch.from_numpy(edges).to(device=x.device, dtype=torch.float32)


# ---------------------------------------------------------------------------
# 2. deletion and insertion curves


def baseline_image(x: torch.Tensor, kind: str = "blur", *, blur_sigma: float = 10.0) -> torch.Tensor:
    """The image that deleted pixels are replaced by (and insertion starts from).

    ``"blur"``: a Gaussian blur of ``x`` with standard deviation ``blur_sigma``
    pixels: colours kept, object detail gone, no new edges (at the default 10,
    the book's photos keep under 5% probability for their class). ``"zero"``:
    black. ``"mean"``: each channel's mean colour. Returns a new (C, H, W)
    tensor. Chapter 05-SanityChecks.
    """
    x = _check_image(x)
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.detach().mean(dim=(1, 2), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        if not (isinstance(blur_sigma, (int, float)) and math.isfinite(blur_sigma) and blur_sigma > 0):
            raise ValueError(f"blur_sigma must be a positive number of pixels; got {blur_sigma!r}")
        from skimage.filters import gaussian

        arr = x.detach().cpu().double().numpy()
        out = gaussian(arr, sigma=float(blur_sigma), channel_axis=0, mode="reflect", preserve_range=True)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
    raise ValueError(f"baseline kind must be 'blur', 'zero' or 'mean'; got {kind!r}")


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


def auc(fractions: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Area under a curve sampled at ``fractions`` of [0, 1], by the trapezoid rule.

    ``fractions`` must increase strictly from 0 to 1, so the area of a constant
    curve c is c, and areas of curves sampled on different grids are comparable.
    Chapter 05-SanityChecks.
    """
    f = np.asarray(fractions, dtype=float)
    v = np.asarray(values, dtype=float)
    if f.ndim != 1 or v.shape != f.shape or f.size < 2:
        raise ValueError(f"fractions and values must be 1-D of one length >= 2; got shapes {f.shape} and {v.shape}")
    if not (np.isfinite(f).all() and np.isfinite(v).all()):
        raise ValueError("fractions and values must be finite")
    if not (np.all(np.diff(f) > 0) and abs(f[0]) < 1e-9 and abs(f[-1] - 1) < 1e-9):
        raise ValueError("fractions must increase strictly from 0 to 1")
    return float(np.sum(np.diff(f) * (v[1:] + v[:-1]) / 2))


def _fraction_grid(fractions: Sequence[float] | np.ndarray | None, steps: int) -> np.ndarray:
    if fractions is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
        return np.linspace(0.0, 1.0, steps + 1)
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or f.size < 2 or not np.isfinite(f).all():
        raise ValueError("fractions must be a 1-D sequence of at least two finite numbers")
    if not (np.all(np.diff(f) > 0) and abs(f[0]) < 1e-9 and abs(f[-1] - 1) < 1e-9):
        raise ValueError(f"fractions must increase strictly from 0 to 1; got {f.tolist()}")
    return f


def _resolve_baseline(x: torch.Tensor, baseline: str | torch.Tensor, blur_sigma: float) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != x.shape or not baseline.is_floating_point():
            raise ValueError(
                f"a baseline tensor must be a float tensor of x's shape {tuple(x.shape)}; got {tuple(baseline.shape)}"
            )
        if not torch.isfinite(baseline).all():
            raise ValueError("the baseline tensor contains NaN or infinite values")
        return baseline.detach().to(device=x.device, dtype=x.dtype)
    if isinstance(baseline, str):
        return baseline_image(x, baseline, blur_sigma=blur_sigma)
    raise TypeError(f"baseline must be 'blur', 'zero', 'mean' or a tensor; got {type(baseline).__name__}")


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: Mapping[str, torch.Tensor | np.ndarray],
    target: int | None = None,
    *,
    kinds: Sequence[str] = CURVE_KINDS,
    fractions: Sequence[float] | np.ndarray | None = None,
    steps: int = 16,
    baseline: str | torch.Tensor = "blur",
    blur_sigma: float = 10.0,
    score: str = "probability",
    batch_size: int = 16,
) -> dict[tuple[str, str], Curve]:
    """Deletion and/or insertion curves of several (H, W) maps of one image at once.

    Returns ``{(map name, kind): Curve}``. The same as calling
    :func:`perturbation_curve` for each map and kind, but the two images every
    curve shares (``x`` itself and the baseline) go through the model once, and
    the rest are batched across maps. Chapter 05-SanityChecks.
    """
    for kind in kinds:
        if kind not in CURVE_KINDS:
            raise ValueError(f"kinds must be taken from {CURVE_KINDS}; got {kind!r}")
    if not kinds:
        raise ValueError(f"kinds must name at least one of {CURVE_KINDS}")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit'; got {score!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError("maps must be a non-empty dict of name -> (H, W) saliency map")
    x = _check_image(x)
    h, w = x.shape[1:]
    ranks = {}
    for name, saliency in maps.items():
        s = _as_numpy_map(saliency, f"saliency map {name!r}")
        if s.shape != (h, w):
            raise ValueError(f"saliency map {name!r} has shape {s.shape} but the image is {(h, w)} pixels")
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
        return img * (1 - mask) + base * mask if kind == "deletion" else base * (1 - mask) + img * mask

    with _eval_mode(model), torch.no_grad():
        device = _device_of(model, x.device)

        def scores_of(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
            out = logits.softmax(dim=1) if score == "probability" else logits
            return out[:, cls].detach().cpu().double()

        ends = _forward(model, torch.stack([img, base]).to(device))
        cls = _resolve_targets(target, ends[:1])[0]
        end_scores = scores_of(ends, cls)
        done: list[torch.Tensor] = []
        for start in range(0, len(jobs), batch_size):
            batch = torch.stack([build(j) for j in jobs[start : start + batch_size]])
            done.append(scores_of(_forward(model, batch.to(device)), cls))
    flat = torch.cat(done).numpy() if done else np.zeros(0)
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
                    values.append(base_score if removed_all == (kind == "deletion") else x_score)
            curves[(name, kind)] = Curve(kind=kind, fractions=grid.copy(), scores=np.asarray(values, dtype=float))
    return curves


def perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    target: int | None = None,
    *,
    kind: str = "deletion",
    fractions: Sequence[float] | np.ndarray | None = None,
    steps: int = 16,
    baseline: str | torch.Tensor = "blur",
    blur_sigma: float = 10.0,
    score: str = "probability",
    batch_size: int = 16,
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
    ``x``'s shape. The images go through the model ``batch_size`` at a time, in
    eval mode, without gradients; ``target`` defaults to the class predicted for
    ``x``. For several maps of one image use :func:`perturbation_curves`.
    Chapter 05-SanityChecks.
    """
    if kind not in CURVE_KINDS:
        raise ValueError(f"kind must be one of {CURVE_KINDS}; got {kind!r}")
    curves = perturbation_curves(
        model, x, {"map": saliency}, target, kinds=(kind,), fractions=fractions, steps=steps,
        baseline=baseline, blur_sigma=blur_sigma, score=score, batch_size=batch_size,
    )
    return curves[("map", kind)]


def deletion_curve(
    model: nn.Module, x: torch.Tensor, saliency: torch.Tensor | np.ndarray, target: int | None = None, **kwargs
) -> Curve:
    """Deletion curve: :func:`perturbation_curve` with ``kind="deletion"`` (chapter 05-SanityChecks)."""
    return perturbation_curve(model, x, saliency, target, kind="deletion", **kwargs)


def insertion_curve(
    model: nn.Module, x: torch.Tensor, saliency: torch.Tensor | np.ndarray, target: int | None = None, **kwargs
) -> Curve:
    """Insertion curve: :func:`perturbation_curve` with ``kind="insertion"`` (chapter 05-SanityChecks)."""
    return perturbation_curve(model, x, saliency, target, kind="insertion", **kwargs)


# ---------------------------------------------------------------------------
# 3. max-sensitivity


@dataclass(frozen=True)
class MaxSensitivity:
    """Result of :func:`max_sensitivity`: the maximum and every perturbation's ratio."""

    value: float
    ratios: np.ndarray
    radius: float


Explanation = torch.Tensor | dict[str, torch.Tensor]


def _explanations(e: object, what: str) -> dict[str, torch.Tensor]:
    items = e.items() if isinstance(e, dict) else [("", e)]
    out = {}
    for key, value in items:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(
                f"explain must return a float tensor or a dict of them; got {type(value).__name__} for {what}"
            )
        out[key] = value.detach().double().cpu()
    if not out:
        raise ValueError(f"explain returned an empty dict for {what}")
    return out


def max_sensitivity(
    explain: Callable[[torch.Tensor], Explanation],
    x: torch.Tensor,
    *,
    radius: float = 0.02,
    n_perturbations: int = 8,
    generator: torch.Generator | int | None = 0,
    reference: Explanation | None = None,
) -> MaxSensitivity | dict[str, MaxSensitivity]:
    """Max-sensitivity of an explanation (Yeh et al., 2019), relative to the map's size.

    Estimates max over ||delta||_inf <= radius of ||E(x + delta) - E(x)|| / ||E(x)||
    (Frobenius norms) by drawing ``n_perturbations`` deltas uniformly from the
    L-infinity ball, with ``generator`` (a seed gives the same deltas, so methods
    can be compared on identical perturbations). Perturbed inputs are not clipped
    to [0, 1], so every delta stays exactly within the radius. ``explain`` maps
    an input to its explanation, or to a dict of named explanations that then
    share the perturbations (and the cost of computing them); the result is then
    a dict too. Fix the target class inside ``explain``, and for a randomised
    method such as SmoothGrad its seed, or the estimate measures the method's own
    sampling noise as well. ``reference`` is E(x) if already computed. Neither
    ``x`` nor ``reference`` is modified. Chapter 05-SanityChecks.
    """
    if not callable(explain):
        raise TypeError(
            f"explain must be a callable mapping an input tensor to its explanation; got {type(explain).__name__}"
        )
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0 or not torch.isfinite(x).all():
        raise ValueError("x must be a non-empty, finite floating-point tensor")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a positive number; got {radius!r}")
    if isinstance(n_perturbations, bool) or not isinstance(n_perturbations, int) or n_perturbations < 1:
        raise ValueError(f"n_perturbations must be an integer >= 1; got {n_perturbations!r}")
    gen = _generator(generator)
    clean = x.detach().clone()
    raw = explain(clean.clone()) if reference is None else reference
    base = _explanations(raw, "x")
    norms = {}
    for key, value in base.items():
        norms[key] = float(value.norm())
        if not math.isfinite(norms[key]) or norms[key] == 0:
            name = f" {key!r}" if key else ""
            raise ValueError(f"the explanation{name} of x is zero (or not finite); a relative sensitivity is undefined")
    ratios: dict[str, list[float]] = {key: [] for key in base}
    for _ in range(n_perturbations):
        delta = (torch.rand(clean.shape, generator=gen, dtype=torch.float32) * 2 - 1) * float(radius)
        got = _explanations(explain(clean + delta.to(device=clean.device, dtype=clean.dtype)), "a perturbed input")
        if got.keys() != base.keys():
            raise ValueError(f"explain returned keys {sorted(got)} for a perturbed input, {sorted(base)} for x")
        for key, value in got.items():
            if value.shape != base[key].shape:
                raise ValueError(
                    f"explain returned shape {tuple(value.shape)} for a perturbed input, "
                    f"{tuple(base[key].shape)} for x"
                )
            ratios[key].append(float((value - base[key]).norm()) / norms[key])
    results = {
        key: MaxSensitivity(value=float(max(r)), ratios=np.asarray(r), radius=float(radius))
        for key, r in ratios.items()
    }
    return results if isinstance(raw, dict) else results[""]
