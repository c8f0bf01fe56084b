"""An ipywidgets explorer of SmoothGrad for Jupyter and Colab (chapter 02, SmoothGrad).

The explorer is a view: sliders for the noise level and the number of samples
N, a mode selector, a photo selector and a file upload, drawn over one
:class:`gradsal.SamplePool` per (photo, noise level). Building it computes
nothing; moving the N slider or changing the mode only re-reduces samples the
pool already holds, and a larger N continues the pool's own generator, so the
map for N samples equals ``smoothgrad(model, x, n_samples=N, noise_level=...,
mode=..., generator=seed)`` up to float rounding. The pools, and so every
number the explorer shows, work without ipywidgets; only the controls need it.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .images import load_image, photo_names
from .maps import normalize, reduce_channels
from .methods import SMOOTHGRAD_MODES, SamplePool

__all__ = ["MODE_LABELS", "SmoothGradExplorer", "explorer"]

# What each mode shows, as the selector lists it.
MODE_LABELS = {
    "abs": "mean |g|  (SmoothGrad)",
    "signed": "|mean g|  (signed SmoothGrad)",
    "square": "mean g\u00b2  (SmoothGrad-squared)",
    "var": "var g  (VarGrad)",
}


def _widgets():
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the SmoothGrad explorer needs ipywidgets (pip install ipywidgets); "
            "it runs in Jupyter and Colab"
        ) from err
    return ipywidgets


def _uploaded_files(value) -> list[tuple[str, bytes]]:
    """(name, bytes) of the files in a FileUpload value, for ipywidgets 7 and 8.

    ipywidgets 8 gives a tuple of dicts with ``name`` and ``content`` (a
    memoryview); ipywidgets 7 (still Colab's) a dict from name to a dict with
    ``content``.
    """
    if not value:
        return []
    if isinstance(value, Mapping):
        return [
            (str(name), bytes(item["content"])) for name, item in value.items()
        ]
    return [(str(item["name"]), bytes(item["content"])) for item in value]


class SmoothGradExplorer:
    """Interactive SmoothGrad map of one photo: noise level, N, mode, photo, upload.

    ``model`` (default: :func:`gradsal.load_model`, loaded on first use) maps
    (B, 3, H, W) pixels in [0, 1] to logits. ``photos`` is a list of bundled
    photo names, or a mapping from a name to a (3, H, W) tensor, a path or image
    bytes (default: every bundled photo). ``max_samples`` bounds the N slider
    and so the cost of one pool (the appendix on performance gives the cost of
    one sample). ``seed`` seeds every pool; at most ``max_pools`` pools are
    kept. ``class_names`` labels the target class. Display the object (or its
    ``widget``) in a notebook; :meth:`update` computes and draws the map of the
    current controls, and :attr:`map` holds it.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        photos: Sequence[str] | Mapping[str, object] | None = None,
        *,
        noise_level: float = 0.15,
        n_samples: int = 20,
        mode: str = "abs",
        max_samples: int = 100,
        max_noise: float = 0.5,
        image_size: int = 224,
        seed: int = 0,
        batch_size: int | None = None,
        class_names: Sequence[str] | None = None,
        max_pools: int = 4,
    ) -> None:
        if mode not in SMOOTHGRAD_MODES:
            raise ValueError(
                f"mode must be one of {SMOOTHGRAD_MODES}; got {mode!r}"
            )
        if (
            isinstance(max_samples, bool)
            or not isinstance(max_samples, int)
            or max_samples < 1
        ):
            raise ValueError(
                f"max_samples must be an integer >= 1; got {max_samples!r}"
            )
        if not 1 <= n_samples <= max_samples:
            raise ValueError(
                f"n_samples must be between 1 and max_samples={max_samples}; got {n_samples}"
            )
        if not 0 <= noise_level <= max_noise:
            raise ValueError(
                f"noise_level must be between 0 and max_noise={max_noise}; got {noise_level}"
            )
        self._model = model
        self._class_names = (
            list(class_names) if class_names is not None else None
        )
        self._image_size = image_size
        self._seed = seed
        self._batch_size = batch_size
        self._max_pools = max_pools
        if photos is None:
            photos = photo_names()
        # photo name -> a source (name, path, bytes) until first use, then a tensor
        self._sources: dict[str, object] = (
            dict(photos)
            if isinstance(photos, Mapping)
            else {str(p): str(p) for p in photos}
        )
        if not self._sources:
            raise ValueError("photos is empty; give at least one photo")
        self._images: dict[str, torch.Tensor] = {}
        self._targets: dict[str, int] = {}
        self.pools: OrderedDict[tuple[str, float], SamplePool] = OrderedDict()
        self._dropped_computations = 0
        self.map: torch.Tensor | None = None  # last (H, W) map drawn
        self.saliency: torch.Tensor | None = (
            None  # last (C, H, W) reduction of the pool
        )
        self._quiet = False
        self._build_controls(
            noise_level, n_samples, mode, max_samples, max_noise
        )

    def _build_controls(
        self,
        noise_level: float,
        n_samples: int,
        mode: str,
        max_samples: int,
        max_noise: float,
    ):
        w = _widgets()
        style = {"description_width": "110px"}
        layout = w.Layout(width="420px")
        self.photo = w.Dropdown(
            options=list(self._sources),
            description="photo",
            style=style,
            layout=layout,
        )
        self.upload = w.FileUpload(
            accept="image/*", multiple=False, description="your photo"
        )
        self.noise = w.FloatSlider(
            value=noise_level,
            min=0.0,
            max=max_noise,
            step=0.025,
            description="noise level \u03b1",
            readout_format=".1%",
            continuous_update=False,
            style=style,
            layout=layout,
        )
        self.n = w.IntSlider(
            value=n_samples,
            min=1,
            max=max_samples,
            step=1,
            description="samples N",
            continuous_update=False,
            style=style,
            layout=layout,
        )
        self.mode = w.Dropdown(
            options=[(MODE_LABELS[m], m) for m in SMOOTHGRAD_MODES],
            value=mode,
            description="mode",
            style=style,
            layout=layout,
        )
        self.button = w.Button(
            description="compute", button_style="primary", icon="refresh"
        )
        self.status = w.HTML(
            "Move a control or press <b>compute</b>: the first map of a photo and noise level "
            "takes N forward and backward passes."
        )
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        controls = w.VBox(
            [
                self.photo,
                self.noise,
                self.n,
                self.mode,
                w.HBox([self.button, self.upload]),
            ]
        )
        self.widget = w.VBox([controls, self.status, self.image])
        for control in (self.photo, self.noise, self.n, self.mode):
            control.observe(self._on_change, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.button.on_click(lambda _button: self.update())

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ data

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            from .models import load_model

            self._model = load_model()
        return self._model

    @property
    def computations(self) -> int:
        """How many times a pool ran the model (pools drawn or grown): the expensive work."""
        return self._dropped_computations + sum(
            p.computations for p in self.pools.values()
        )

    def add_photo(self, name: str, source: object) -> None:
        """Add a photo (path, image bytes, PIL image or (3, H, W) tensor) and select it.

        This is what the upload button does; call it directly where the upload
        widget does not work (e.g. after ``google.colab.files.upload()``).
        """
        image = (
            source
            if isinstance(source, torch.Tensor)
            else load_image(source, size=self._image_size)
        )
        name = str(name)
        self._sources[name] = image
        self._images[name] = image
        self._targets.pop(name, None)
        for key in [k for k in self.pools if k[0] == name]:
            self._drop(key)
        # Replacing the options resets the selection; draw once, for the new photo.
        self._quiet = True
        try:
            self.photo.options = list(self._sources)
            self.photo.value = name
        finally:
            self._quiet = False
        self.update()

    def image_of(self, name: str) -> torch.Tensor:
        """The (3, H, W) tensor of a photo, loaded on first use."""
        if name not in self._images:
            source = self._sources[name]
            if isinstance(source, torch.Tensor):
                self._images[name] = source.detach()
            else:
                self._images[name] = load_image(source, size=self._image_size)
        return self._images[name]

    def pool(self, name: str, noise_level: float) -> SamplePool:
        """The pool of noisy gradients of a photo at a noise level (kept for the last few)."""
        key = (name, round(float(noise_level), 6))
        if key not in self.pools:
            self.pools[key] = SamplePool(
                self.model,
                self.image_of(name),
                self._targets.get(name),
                noise_level=key[1],
                seed=self._seed,
                batch_size=self._batch_size,
            )
            while len(self.pools) > self._max_pools:
                self._drop(next(iter(self.pools)))
        self.pools.move_to_end(key)
        return self.pools[key]

    def target_of(self, name: str) -> int:
        """The class the model predicts for the clean photo (every map explains it)."""
        if name not in self._targets:
            self._targets[name] = self.pool(
                name, float(self.noise.value)
            ).target
        return self._targets[name]

    def samples(self, name: str, noise_level: float, n: int) -> torch.Tensor:
        """The first ``n`` noisy gradients of a photo at a noise level (see :class:`gradsal.SamplePool`)."""
        pool = self.pool(name, noise_level)
        self._targets[name] = pool.target
        return pool.draw(n)

    def _drop(self, key: tuple[str, float]) -> None:
        self._dropped_computations += self.pools.pop(key).computations

    # ------------------------------------------------------------------ callbacks

    def _on_change(self, _change) -> None:
        if not self._quiet:
            self.update()

    def _on_upload(self, change) -> None:
        files = _uploaded_files(change["new"])
        if not files:
            return
        name, content = files[-1]
        label = f"upload: {os.path.basename(name)}"
        try:
            self.add_photo(label, content)
        except (ValueError, TypeError) as err:
            self.status.value = f"<span style='color:#b00'>Could not use {name!r}: {err}</span>"

    def update(self) -> torch.Tensor:
        """Compute the map for the current controls, draw it, and return it (H, W)."""
        name, alpha, n, mode = (
            self.photo.value,
            float(self.noise.value),
            int(self.n.value),
            self.mode.value,
        )
        self.status.value = (
            f"computing {name}, \u03b1 = {alpha:.1%} of the range, N = {n} ..."
        )
        reduced = self.pool(name, alpha).smoothgrad(n, mode)
        if mode == "signed":
            reduced = reduced.abs()
        self.saliency = reduced
        self.map = reduce_channels(reduced, "max")
        self.image.value = self._render(name, alpha, n, mode)
        target = self.target_of(name)
        label = self._class_names[target] if self._class_names else None
        if label is None:
            from .models import categories

            names = categories()
            label = names[target] if target < len(names) else f"class {target}"
        self.status.value = (
            f"<b>{name}</b>: map of the logit of <b>{label}</b>; noise \u03b1 = {alpha:.1%} of the image's range, "
            f"N = {n}, {MODE_LABELS[mode].split('  ')[0]}; channels reduced by max over RGB; "
            "the map is scaled to [0, 1] after clipping at its 99th percentile."
        )
        return self.map

    def _render(self, name: str, alpha: float, n: int, mode: str) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from . import plots

        shown = normalize(self.map, clip_percentile=99)
        fig = Figure(figsize=(9.0, 3.3), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        plots.show_image(axes[0], self.image_of(name), name)
        plots.show_map(
            axes[1],
            shown,
            vmin=0,
            vmax=1,
            title=f"{MODE_LABELS[mode].split('  ')[0]}",
            colorbar=True,
        )
        plots.show_overlay(
            axes[2], self.image_of(name), shown, title="overlay"
        )
        fig.suptitle(
            f"noise level \u03b1 = {alpha:.1%} of the range, N = {n}",
            fontsize=11,
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()


def explorer(
    model: nn.Module | None = None,
    photos: Sequence[str] | Mapping[str, object] | None = None,
    **kwargs,
) -> SmoothGradExplorer:
    """Build the SmoothGrad explorer of chapter 02, SmoothGrad; display the result.

    Nothing is computed until a control moves or *compute* is pressed. See
    :class:`SmoothGradExplorer` for the arguments.
    """
    return SmoothGradExplorer(model, photos, **kwargs)
