"""SmoothGrad over any attribution method (chapter 02, SmoothGrad; chapter 04, What SmoothGrad Estimates).

SmoothGrad (Smilkov et al., 2017) averages a method's attributions over noisy
copies ``x + eps``, ``eps ~ N(0, sigma^2 I)``, with ``sigma = noise_level *
(x.max() - x.min())`` per example: :func:`noise_sigma` is that rule and
:func:`gaussian_noise` the one noise draw of the package. Any method
``f(model, x_batch, target)`` can be smoothed, as with Captum's ``NoiseTunnel``
and PAIR's ``GetSmoothedMask``; the vanilla gradient is the default. The modes
(:data:`SMOOTHGRAD_MODES`) reduce the noisy attributions elementwise:

* ``"abs"``: mean of |a_i| (SmoothGrad as most code uses it);
* ``"signed"``: mean of a_i (for the gradient, an unbiased estimate of the
  gradient of the Gaussian-smoothed logit, chapter 04);
* ``"square"``: mean of a_i^2 (SmoothGrad-squared, named by Hooker et al., 2019);
* ``"var"``: population variance of a_i (VarGrad, Adebayo et al., 2018).

:func:`smoothgrad` keeps running sums only (memory bounded by the batch);
:func:`noisy_attributions` returns the individual a_i, and :class:`SamplePool`
keeps a growing pool of them, so that one set of passes serves many figures.
:func:`smoothgrad_to_tolerance` draws copies until the map's estimated Monte
Carlo error is small enough, and says how many it took.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core import (
    Target,
    as_generator,
    check_number,
    check_positive_int,
    frozen,
    prepare,
)
from ..engine import DEFAULT_BATCH_SIZE, Engine, check_precision, open_engine
from .base import method_spec
from .gradient import vanilla_gradient

__all__ = [
    "SMOOTHGRAD_MODES",
    "ConvergedSmoothGrad",
    "SamplePool",
    "gaussian_noise",
    "noise_sigma",
    "noisy_attributions",
    "relative_standard_error",
    "smoothgrad",
    "smoothgrad_from_samples",
    "smoothgrad_to_tolerance",
]

SMOOTHGRAD_MODES = ("abs", "signed", "square", "var")

Method = Callable[..., torch.Tensor] | None
# one seed or generator for a whole batch, or a sequence of one per example
Generators = torch.Generator | int | Sequence[torch.Generator | int] | None


def noise_sigma(x: torch.Tensor, noise_level: float) -> float:
    """SmoothGrad's noise scale for one example: ``noise_level * (x.max() - x.min())``.

    The noise level is a fraction of the example's dynamic range (Smilkov et
    al., 2017, section 3), here in pixel space [0, 1]. Chapter 02, SmoothGrad.
    """
    return float(noise_level) * float(x.max() - x.min())


def gaussian_noise(
    shape: torch.Size | tuple[int, ...],
    count: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``count`` standard-normal draws of ``shape``, stacked: (count, *shape).

    Drawn one example at a time, on the generator's device (the CPU for torch's
    global generator), so the draws do not depend on how they are batched: the
    first n draws of any sequence of calls are the same as those of one call.
    Chapter 02, SmoothGrad.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.stack(
        [
            torch.randn(shape, generator=generator, device=device)
            for _ in range(count)
        ]
    )


def _averaged(a: torch.Tensor, mode: str) -> torch.Tensor:
    """What SmoothGrad's ``mode`` takes the mean of: |a|, a^2, or a itself
    ("signed", and "var", which also averages a^2)."""
    if mode == "abs":
        return a.abs()
    return a.square() if mode == "square" else a


def _check_args(
    n_samples: object, noise_level: object, batch_size: object
) -> None:
    check_positive_int(n_samples, "n_samples")
    check_number(
        noise_level,
        "noise_level",
        minimum=0.0,
        meaning="a fraction of the image's range",
    )
    check_positive_int(batch_size, "batch_size", allow_none=True)


def _noisy_batches(
    engine: Engine,
    xb: torch.Tensor,
    targets: torch.Tensor,
    n_samples: int,
    noise_level: float,
    batch_size: int,
    generators: list[torch.Generator | None],
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(example index, a chunk of noisy copies, their targets)`` in one fixed order.

    All draws happen here, in the calling thread, one copy at a time, so the
    result depends neither on ``batch_size`` nor on the number of workers.
    Example ``b`` draws from ``generators[b]`` (one object may serve all).
    """
    for b in range(xb.shape[0]):
        image = xb[b]
        sigma = noise_sigma(image, noise_level)
        for count in engine.chunk_sizes(n_samples, batch_size):
            noise = gaussian_noise(image.shape, count, generators[b])
            noisy = image.unsqueeze(0) + sigma * noise.to(
                device=image.device, dtype=image.dtype
            )
            yield b, noisy, targets[b].expand(count)


@contextlib.contextmanager
def _noisy_run(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    method: Method,
    *,
    n_samples: int,
    noise_level: float,
    batch_size: int | None,
    generator: Generators,
    batched: bool | None,
    progress: bool,
    precision: str,
) -> Iterator[tuple[torch.Tensor, bool, Iterator[tuple[int, torch.Tensor]]]]:
    """Yield ``(clean batch, batch axis added, iterator of (example, attributions of a chunk))``.

    Shared by :func:`smoothgrad` and :func:`noisy_attributions`, so that both
    give the same attributions for the same seed. The model is frozen and the
    engine open for the duration; on an error or an interrupt the workers
    finish before the model is restored.
    """
    _check_args(n_samples, noise_level, batch_size)
    check_precision(precision)
    spec = method_spec(method, vanilla_gradient)
    # type errors before any pass; a sequence has one per example
    per_example = isinstance(generator, Sequence)
    gens = (
        [as_generator(g) for g in generator]
        if per_example
        else as_generator(generator)
    )
    bs = batch_size or DEFAULT_BATCH_SIZE
    bar = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen(model))
        xb, added, targets = prepare(
            model, x, target, batched, checked_later=spec.resolves_targets
        )
        if not per_example:
            gens = [gens] * xb.shape[0]
        elif len(gens) != xb.shape[0]:
            raise ValueError(
                "generator as a sequence needs one seed or generator per example; "
                f"got {len(gens)} for a batch of {xb.shape[0]}"
            )
        engine = stack.enter_context(
            open_engine(
                model,
                xb,
                items_per_example=n_samples,
                batch_size=bs,
                precision=precision,
                fast_path=spec.fast_path,
                options=spec.options,
            )
        )
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=xb.shape[0] * n_samples,
                desc=f"SmoothGrad ({spec.name})",
                unit="sample",
            )
            stack.callback(bar.close)
        batches = _noisy_batches(
            engine, xb, targets, n_samples, noise_level, bs, gens
        )
        chunks = stack.enter_context(
            contextlib.closing(engine.map(spec.kernel, batches, progress=bar))
        )
        yield xb, added, chunks


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: Method = None,
    n_samples: int = 50,
    noise_level: float = 0.15,
    mode: str = "abs",
    batch_size: int | None = None,
    generator: Generators = None,
    batched: bool | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> torch.Tensor:
    """SmoothGrad: a method's attributions averaged over noisy copies of ``x``.

    Each copy is ``x + eps`` with ``eps ~ N(0, sigma^2 I)`` and ``sigma =
    noise_level * (x.max() - x.min())`` per example (Smilkov et al., 2017).
    ``method`` is any attribution function ``f(model, x_batch, target)``
    (options through ``functools.partial``), applied to each noisy copy as
    Captum's ``NoiseTunnel`` does; None is :func:`gradsal.vanilla_gradient`.
    ``mode`` picks the average (see :data:`SMOOTHGRAD_MODES`): ``"abs"`` mean
    |a_i|, ``"signed"`` mean a_i, ``"square"`` mean a_i^2, ``"var"`` the
    population variance of a_i (VarGrad). The target defaults to the class
    predicted for the clean input, and every copy explains that class.

    Copies go through the model ``batch_size`` at a time (None:
    :data:`gradsal.engine.DEFAULT_BATCH_SIZE`), so memory is bounded by the
    batch, not by ``n_samples``; for a given ``generator`` seed the result does
    not depend on ``batch_size`` (sums are taken in float64, in one fixed
    order). ``generator`` may also be a sequence with one seed or generator
    per example of a batch: each example then gets the copies that a call on
    it alone with its own seed draws. ``precision`` chooses how the passes run and never changes the
    noise: ``"float32"`` runs the model exactly as given; ``"auto"`` (the
    default) runs an equivalent folded graph of a convolutional network for
    gradsal's own methods that allow it (:mod:`gradsal.engine.fastpath`; maps
    equal to ``"float32"``'s up to float rounding, rank correlation above 0.99
    on every photo of the book), and the model as given otherwise;
    ``"bfloat16"`` adds bfloat16 autocast to whichever runs (opt-in only: maps
    approximate, and emulated, so many times slower, on CPUs without native
    bfloat16). On the CPU up to :data:`gradsal.engine.MAX_CPU_WORKERS` chunks
    run at once. Chapter 02, SmoothGrad, and chapter 04, What SmoothGrad
    Estimates; the appendix on performance measures each choice.
    """
    if mode not in SMOOTHGRAD_MODES:
        raise ValueError(
            f"mode must be one of {SMOOTHGRAD_MODES}; got {mode!r}"
        )
    run = _noisy_run(
        model,
        x,
        target,
        method,
        n_samples=n_samples,
        noise_level=noise_level,
        batch_size=batch_size,
        generator=generator,
        batched=batched,
        progress=progress,
        precision=precision,
    )
    total = total_sq = None
    with run as (xb, added, chunks):
        # Running sums in float64: VarGrad subtracts two close numbers, and exact sums
        # of float32 attributions make the result independent of how copies are chunked.
        acc = torch.float64 if xb.device.type != "mps" else torch.float32
        for b, a in chunks:
            if total is None:
                total = torch.zeros(
                    (xb.shape[0], *a.shape[1:]), dtype=acc, device=xb.device
                )
                total_sq = torch.zeros_like(total) if mode == "var" else None
            a = a.to(acc)
            total[b] += _averaged(a, mode).sum(0)
            if total_sq is not None:
                total_sq[b] += a.square().sum(0)
    mean = total / n_samples
    if mode == "var":
        mean = (total_sq / n_samples - mean.square()).clamp_min(0.0)
    result = mean.to(device=x.device, dtype=x.dtype)
    return result[0] if added else result


@dataclass(frozen=True)
class ConvergedSmoothGrad:
    """What :func:`smoothgrad_to_tolerance` returns.

    ``attribution`` is the SmoothGrad of the ``n_samples`` copies drawn (equal
    to :func:`smoothgrad` with that ``n_samples`` and the same seed, up to float
    rounding); ``relative_error`` the estimated error reached; ``converged``
    whether it met the tolerance before ``max_samples``; ``history`` the
    ``(n, estimated error)`` of every check.
    """

    attribution: torch.Tensor
    n_samples: int
    relative_error: float
    tolerance: float
    converged: bool
    history: tuple[tuple[int, float], ...]


def _relative_error(
    total: torch.Tensor, total_sq: torch.Tensor, n: int
) -> float:
    """Estimated standard error of the displayed map, relative to its colour scale.

    ``total`` and ``total_sq`` are the running sums of the averaged values and
    of their squares. Each entry's standard error is ``s / sqrt(n)`` (``s`` the
    sample standard deviation); the displayed map is the channel maximum of the
    mean for a (C, H, W) attribution (the mean itself otherwise), and a pixel's
    error is that of the channel shown there. The result is the root mean
    square of the pixel errors divided by the map's 99th percentile, the top of
    the book's colour scales: 0.02 means a typical pixel is uncertain by 2 % of
    the colour bar.
    """
    mean = total / n
    var = ((total_sq - n * mean.square()) / (n - 1)).clamp_min(0.0)
    se = (var / n).sqrt()
    if mean.ndim == 3:
        channel = mean.abs().argmax(dim=0, keepdim=True)
        shown = mean.abs().gather(0, channel)[0]
        se = se.gather(0, channel)[0]
    else:
        shown = mean.abs()
    rms = float(se.square().mean().sqrt())
    if rms == 0.0:
        return 0.0
    scale = float(torch.quantile(shown.flatten().float(), 0.99))
    return rms / scale if scale > 0 else math.inf


def relative_standard_error(samples: torch.Tensor, mode: str = "abs") -> float:
    """The estimated relative standard error of the SmoothGrad of a pool of noisy attributions.

    ``samples`` is one example's pool, (N, ...) with N >= 2 (e.g. from
    :func:`noisy_attributions` or :class:`SamplePool`); ``mode`` is ``"abs"``,
    ``"signed"`` or ``"square"``. The error is the one
    :func:`smoothgrad_to_tolerance` stops on: the root mean square of the
    displayed map's per-pixel standard error over the map's 99th percentile.
    It falls like 1/sqrt(N) (chapter 04), so one pool predicts the N a
    tolerance needs. Chapter 02, SmoothGrad ("How many samples?").
    """
    if mode not in ("abs", "signed", "square"):
        raise ValueError(
            f"mode must be 'abs', 'signed' or 'square'; got {mode!r}"
        )
    if (
        not isinstance(samples, torch.Tensor)
        or not samples.is_floating_point()
        or samples.ndim < 2
        or samples.shape[0] < 2
    ):
        raise ValueError(
            "samples must be a floating-point pool (N, ...) of one example's "
            "attributions with N >= 2"
        )
    v = samples.detach().to("cpu", torch.float64)
    v = _averaged(v, mode)
    return _relative_error(v.sum(0), v.square().sum(0), v.shape[0])


def smoothgrad_to_tolerance(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    tolerance: float = 0.02,
    method: Method = None,
    noise_level: float = 0.15,
    mode: str = "abs",
    check_every: int = 8,
    max_samples: int = 512,
    batch_size: int | None = None,
    generator: torch.Generator | int | None = 0,
    precision: str = "auto",
) -> ConvergedSmoothGrad:
    """SmoothGrad of one example with as many noisy copies as its map needs.

    Copies are drawn as :func:`smoothgrad` draws them; after every
    ``check_every`` copies the map's relative standard error is estimated from
    the running per-entry variance (see :class:`ConvergedSmoothGrad` and
    ``_relative_error``: root mean square error of the displayed map over its
    99th percentile), and drawing stops once it is at most ``tolerance``, or at
    ``max_samples``. ``mode`` is ``"abs"``, ``"signed"`` or ``"square"`` (the
    means; VarGrad's error is not a sample mean's). At most a couple of chunks
    beyond the last check are computed and dropped. Chapter 02, SmoothGrad
    ("How many samples?"); the error estimate is the 1/N law of chapter 04.
    """
    if mode not in ("abs", "signed", "square"):
        raise ValueError(
            f"mode must be 'abs', 'signed' or 'square' (a mean with a standard error); got {mode!r}"
        )
    tolerance = check_number(
        tolerance,
        "tolerance",
        minimum=0.0,
        strict=True,
        meaning="a relative standard error, e.g. 0.02",
    )
    check_every = check_positive_int(check_every, "check_every")
    max_samples = check_positive_int(max_samples, "max_samples")
    if check_every < 2 or max_samples < check_every:
        raise ValueError(
            "check_every must be at least 2 (a variance needs two copies) and at most "
            f"max_samples; got check_every={check_every}, max_samples={max_samples}"
        )
    if not isinstance(x, torch.Tensor) or not 1 <= x.ndim <= 3:
        raise ValueError(
            "x must be one example without a batch axis, e.g. a (C, H, W) image; got "
            + (
                f"shape {tuple(x.shape)}"
                if isinstance(x, torch.Tensor)
                else type(x).__name__
            )
        )
    run = _noisy_run(
        model,
        x,
        target,
        method,
        n_samples=max_samples,
        noise_level=noise_level,
        batch_size=batch_size,
        generator=generator,
        batched=False,
        progress=False,
        precision=precision,
    )
    total = total_sq = None
    n, error, history = 0, math.inf, []
    with run as (xb, _, chunks):
        for _, a in chunks:
            v = _averaged(a.to(torch.float64), mode)
            if total is None:
                total = torch.zeros(v.shape[1:], dtype=torch.float64)
                total_sq = torch.zeros_like(total)
            while v.shape[0]:  # checks fall on multiples of check_every
                take = min(v.shape[0], check_every - n % check_every)
                part, v = v[:take].cpu(), v[take:]
                total += part.sum(0)
                total_sq += part.square().sum(0)
                n += take
                if n % check_every == 0 or n == max_samples:
                    error = _relative_error(total, total_sq, n)
                    history.append((n, error))
                    if error <= tolerance:
                        break
            if error <= tolerance:
                break
    mean = (total / n).to(device=x.device, dtype=x.dtype)
    return ConvergedSmoothGrad(
        attribution=mean,
        n_samples=n,
        relative_error=error,
        tolerance=tolerance,
        converged=error <= tolerance,
        history=tuple(history),
    )


def noisy_attributions(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: Method = None,
    n_samples: int = 50,
    noise_level: float = 0.15,
    batch_size: int | None = None,
    generator: Generators = None,
    batched: bool | None = None,
    progress: bool = False,
    precision: str = "auto",
) -> torch.Tensor:
    """The individual attributions ``a_i = f(x + eps_i)`` that :func:`smoothgrad` averages.

    Returns a new sample axis in front of the example's axes: (N, C, H, W) for
    one image, (B, N, C, H, W) for a batch (for the default method; a method
    whose output has another shape keeps it). Memory grows with ``n_samples``;
    use :func:`smoothgrad` when only the average is needed. The same
    ``generator`` seed (or sequence of seeds, one per example), ``method`` and
    ``precision`` give the same draws and attributions as :func:`smoothgrad`,
    and the first k copies are those of a run with ``n_samples=k``, so one pool
    can serve every figure of a chapter (chapter 02, SmoothGrad; chapter 04, What SmoothGrad Estimates).
    """
    run = _noisy_run(
        model,
        x,
        target,
        method,
        n_samples=n_samples,
        noise_level=noise_level,
        batch_size=batch_size,
        generator=generator,
        batched=batched,
        progress=progress,
        precision=precision,
    )
    out = None
    with run as (xb, added, chunks):
        filled = [0] * xb.shape[0]
        for b, a in chunks:
            if out is None:
                out = torch.empty(
                    (xb.shape[0], n_samples, *a.shape[1:]),
                    dtype=a.dtype,
                    device=xb.device,
                )
            out[b, filled[b] : filled[b] + a.shape[0]] = a
            filled[b] += a.shape[0]
    out = out.to(x.device)
    return out[0] if added else out


def smoothgrad_from_samples(
    samples: torch.Tensor, mode: str = "abs", dim: int = 0
) -> torch.Tensor:
    """Reduce a pool of noisy attributions along ``dim`` as SmoothGrad's ``mode`` does.

    ``"abs"``: mean of |a_i|; ``"signed"``: mean of a_i; ``"square"``: mean of
    a_i^2; ``"var"``: population variance of a_i (VarGrad). Use it with the
    output of :func:`noisy_attributions` or :class:`SamplePool`, or a slice of
    it to study smaller N. Chapter 02, SmoothGrad.
    """
    if mode not in SMOOTHGRAD_MODES:
        raise ValueError(
            f"mode must be one of {SMOOTHGRAD_MODES}; got {mode!r}"
        )
    if (
        not isinstance(samples, torch.Tensor)
        or not samples.is_floating_point()
    ):
        raise TypeError(
            "samples must be a floating-point tensor of attributions"
        )
    if samples.numel() == 0 or samples.shape[dim] == 0:
        raise ValueError(
            "samples is empty; expected at least one attribution along dim"
        )
    if mode == "var":
        return samples.var(dim, correction=0)
    return _averaged(samples, mode).mean(dim)


class SamplePool:
    """A growing pool of noisy attributions of one example at one noise level.

    ``pool.draw(n)`` returns the first ``n`` attributions ``f(x + eps_i)``,
    computing only those not drawn yet: the pool continues its own generator,
    seeded with ``seed``, so ``pool.draw(n)`` equals ``noisy_attributions(...,
    n_samples=n, generator=seed)`` whatever sizes were asked for before, and
    ``pool.smoothgrad(n, mode)`` equals :func:`smoothgrad` with that seed (up to
    float rounding in the order of the sums). At ``noise_level = 0`` every
    sample is the attribution of ``x`` itself, computed once. ``x`` is one
    example (no batch axis). ``target`` defaults to the class predicted for
    ``x``, found on first use with the model in eval mode. :attr:`computations`
    counts the calls that ran the model. Chapter 02, SmoothGrad.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: int | None = None,
        *,
        noise_level: float = 0.15,
        method: Method = None,
        seed: int = 0,
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        check_number(
            noise_level,
            "noise_level",
            minimum=0.0,
            meaning="a fraction of the image's range",
        )
        check_positive_int(batch_size, "batch_size", allow_none=True)
        check_precision(precision)
        method_spec(
            method, vanilla_gradient
        )  # fail now on a bad method, not at the first draw
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module; got {type(model).__name__}"
            )
        self.model = model
        self.x = x.detach()
        self.noise_level = float(noise_level)
        self.method = method
        self.seed = seed
        self.batch_size = batch_size
        self.precision = precision
        self.computations = 0
        self._target = target
        self._generator = as_generator(int(seed))
        self._samples: torch.Tensor | None = None

    @property
    def target(self) -> int:
        """The class every sample explains (the prediction for ``x`` unless one was given)."""
        if self._target is None:
            with frozen(self.model):
                _, _, targets = prepare(
                    self.model, self.x, None, batched=False
                )
            self._target = int(targets[0])
        return self._target

    def __len__(self) -> int:
        return 0 if self._samples is None else int(self._samples.shape[0])

    def draw(self, n: int) -> torch.Tensor:
        """The first ``n`` noisy attributions, (n, ...), drawing only the new ones."""
        check_positive_int(n, "n")
        if self.noise_level == 0.0:
            if self._samples is None:
                self._samples = self._attributions(1)
            return self._samples.expand(n, *self._samples.shape[1:])
        if len(self) < n:
            more = self._attributions(n - len(self))
            self._samples = (
                more
                if self._samples is None
                else torch.cat([self._samples, more])
            )
        return self._samples[:n]

    def smoothgrad(self, n: int, mode: str = "abs") -> torch.Tensor:
        """:func:`smoothgrad_from_samples` of the first ``n`` samples."""
        return smoothgrad_from_samples(self.draw(n), mode)

    def _attributions(self, count: int) -> torch.Tensor:
        self.computations += 1
        return noisy_attributions(
            self.model,
            self.x,
            self.target,
            method=self.method,
            n_samples=count,
            noise_level=self.noise_level,
            batch_size=self.batch_size,
            generator=self._generator,
            batched=False,
            precision=self.precision,
        )
