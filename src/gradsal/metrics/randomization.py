"""Does the map depend on the model? Cascading parameter randomisation (chapter 05, Sanity Checks).

The model parameter randomisation test of Adebayo et al. (2018): re-initialise
the network from the top down, one stage at a time (:func:`cascading_randomization`,
with :func:`reinitialize_` and, for EfficientNets,
:func:`gradsal.models.efficientnet_stages`), and compare each map with the
original one by Spearman rank correlation, with and without absolute values,
and by SSIM (:func:`randomization_similarity`). A map that stays alike while the
weights it should explain are destroyed does not depend on the model. Models are
copied before they are changed, except by :func:`reinitialize_`, which works in
place by design.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..core import as_generator
from ..models import efficientnet_stages
from .checks import ArrayLike, as_map
from .similarity import spearman, ssim

__all__ = [
    "cascading_randomization",
    "randomization_similarity",
    "reinitialize_",
]

Stage = tuple[str, Sequence[str]]

# Layers that normalise their input and start training as the identity (weight 1, bias 0).
_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # batch norm, sync batch norm and instance norm (with their running statistics)
    nn.GroupNorm,
    nn.LayerNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _is_bias(name: str) -> bool:
    return name == "bias" or name.endswith("_bias")


@torch.no_grad()
def reinitialize_(
    module: nn.Module, generator: torch.Generator | int | None = 0
) -> nn.Module:
    """Re-initialise ``module`` and all its submodules *in place*; returns it.

    * Normalisation layers (batch, instance, group and layer norm, RMS norm)
      return to the identity they start training from: weight 1, bias 0, and
      for those with running statistics, running mean 0 and running variance 1.
    * Biases (parameters named ``bias`` or ``..._bias``) become 0.
    * Other weights with two or more axes (convolutions, linear layers) are
      drawn from He et al.'s normal N(0, 2 / fan_in), which keeps the scale of
      activations through ReLU-like layers.
    * Any other parameter (one axis or none, e.g. the slopes of ``nn.PReLU``)
      gets its module's own initial value: the module's ``reset_parameters()``
      runs first, with torch's random number generator seeded from
      ``generator`` for the duration (so seeded results stay reproducible and
      the global generator is not advanced), and the weights above are drawn
      afterwards. A module without ``reset_parameters()`` keeps such a
      parameter as it is, with a warning, since no initial value is known.

    The draws come from ``generator`` (a seed, a ``torch.Generator``, or None
    for torch's global generator, :func:`gradsal.core.as_generator`), so a seed
    gives the same weights every time. :func:`cascading_randomization` applies
    it to copies of a model (chapter 05, Sanity Checks; Adebayo et al., 2018).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module; got {type(module).__name__}"
        )
    gen = as_generator(generator)  # None: torch's global generator
    for m in module.modules():
        if isinstance(m, _NORM_LAYERS):
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_running_stats()  # does nothing without running statistics
            for name, p in m.named_parameters(recurse=False):
                if _is_bias(name):
                    p.zero_()
                else:
                    p.fill_(1.0)
            continue
        params = list(m.named_parameters(recurse=False))
        if any(p.ndim < 2 and not _is_bias(name) for name, p in params):
            _reset_own_parameters(m, gen)
        for name, p in params:
            if _is_bias(name):
                p.zero_()
            elif p.ndim >= 2:
                fan_in = p[
                    0
                ].numel()  # in_channels / groups * kernel area, or in_features
                w = torch.randn(
                    p.shape, generator=gen, dtype=torch.float32
                ) * math.sqrt(2.0 / fan_in)
                p.copy_(w.to(device=p.device, dtype=p.dtype))
    return module


def _reset_own_parameters(m: nn.Module, gen: torch.Generator | None) -> None:
    """``m.reset_parameters()`` with torch's generator seeded from ``gen`` (None: as it is)."""
    reset = getattr(m, "reset_parameters", None)
    if not callable(reset):
        names = [
            n
            for n, p in m.named_parameters(recurse=False)
            if p.ndim < 2 and not _is_bias(n)
        ]
        warnings.warn(
            f"reinitialize_: {type(m).__name__} has no reset_parameters(), so its parameters {names} "
            "keep their trained values",
            stacklevel=2,
        )
        return
    if gen is None:
        reset()
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset()


def _check_stages(
    model: nn.Module, stages: Sequence[Stage]
) -> list[tuple[str, tuple[str, ...]]]:
    if (
        isinstance(stages, (str, bytes))
        or not isinstance(stages, Sequence)
        or len(stages) == 0
    ):
        raise ValueError(
            "stages must be a non-empty list of (label, [submodule names]) pairs"
        )
    checked = []
    for item in stages:
        if not (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], str)
        ):
            raise ValueError(
                f"each stage must be a (label, [submodule names]) pair; got {item!r}"
            )
        label, names = item
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names:
            raise ValueError(f"stage {label!r} names no submodule")
        for name in names:
            try:
                sub = model.get_submodule(name)
            except AttributeError:
                raise ValueError(
                    f"stage {label!r}: the model has no submodule {name!r}"
                ) from None
            if (
                next(sub.parameters(), None) is None
                and next(sub.buffers(), None) is None
            ):
                raise ValueError(
                    f"stage {label!r}: submodule {name!r} has no parameters to randomise"
                )
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
    [submodule names])``; ``None`` means :func:`gradsal.models.efficientnet_stages`
    of the model. Each yielded model is an independent deep copy (train/eval mode
    and ``requires_grad`` flags as in ``model``), and ``model`` itself is never
    modified. The stages are checked before anything is yielded.
    Chapter 05, Sanity Checks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}"
        )
    checked = _check_stages(
        model, efficientnet_stages(model) if stages is None else stages
    )
    gen = as_generator(generator)

    def steps() -> Iterator[tuple[str, nn.Module]]:
        work = copy.deepcopy(model)
        for label, names in checked:
            for name in names:
                reinitialize_(work.get_submodule(name), gen)
            yield label, copy.deepcopy(work)

    return steps()


def randomization_similarity(
    signed_a: ArrayLike,
    signed_b: ArrayLike,
    magnitude_a: ArrayLike | None = None,
    magnitude_b: ArrayLike | None = None,
) -> dict[str, float]:
    """The three similarities of the randomisation test (Adebayo et al., 2018), as a dict.

    ``"spearman"``: rank correlation of the signed (H, W) maps (no absolute
    value); ``"spearman_abs"`` and ``"ssim"``: of the magnitude maps, which
    default to ``|signed_a|`` and ``|signed_b|`` (pass e.g. a channel max of |g|
    instead). All three are :func:`gradsal.metrics.spearman` and
    :func:`gradsal.metrics.ssim`. Chapter 05, Sanity Checks.
    """
    if magnitude_a is None:
        magnitude_a = np.abs(as_map(signed_a, "signed_a"))
    if magnitude_b is None:
        magnitude_b = np.abs(as_map(signed_b, "signed_b"))
    return {
        "spearman": spearman(signed_a, signed_b),
        "spearman_abs": spearman(magnitude_a, magnitude_b, absolute=True),
        "ssim": ssim(magnitude_a, magnitude_b),
    }
