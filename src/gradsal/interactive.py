"""An ipywidgets explorer of SmoothGrad for Jupyter and Colab (chapter 02-SmoothGradIntro).

``explorer()`` builds sliders for the noise level and the number of samples N, a
mode selector, a photo selector and a file upload, and redraws the map when one of
them moves. Building it computes nothing: gradients are computed on the first
interaction and kept, one pool of noisy gradients per (photo, noise level), so
moving the N slider or changing the mode only re-reduces samples already drawn
(the same reuse the chapter's figures make). A pool grows when N does, by
continuing its own random generator, so the map for N samples equals
``smoothgrad(model, x, n_samples=N, noise_level=..., mode=..., generator=seed)``
(up to float rounding).
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .gradients import SMOOTHGRAD_MODES, noisy_gradients, smoothgrad_from_samples, vanilla_gradient
from .images import load_image, photo_names
from .maps import normalize, reduce_channels

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
        return [(str(name), bytes(item["content"])) for name, item in value.items()]
    return [(str(item["name"]), bytes(item["content"])) for item in value]


class SmoothGradExplorer:
    """Interactive SmoothGrad map of one photo: noise level, N, mode, photo, upload.

    ``model`` (default: :func:`gradsal.load_model`, loaded on first use) maps
    (B, 3, H, W) pixels in [0, 1] to logits. ``photos`` is a list of bundled
    photo names, or a mapping from a name to a (3, H, W) tensor, a path or image
    bytes (default: every bundled photo). ``max_samples`` bounds the N slider
    and so the cost of one pool (about 90 ms per sample for the default model on
    a CPU). ``seed`` seeds every pool. ``class_names`` labels the target class.
    Display the object (or its ``widget``) in a notebook; :meth:`update`
    computes and draws the current map, and :attr:`map` holds it.
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
            raise ValueError(f"mode must be one of {SMOOTHGRAD_MODES}; got {mode!r}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be an integer >= 1; got {max_samples!r}")
        if not 1 <= n_samples <= max_samples:
            raise ValueError(f"n_samples must be between 1 and max_samples={max_samples}; got {n_samples}")
        if not 0 <= noise_level <= max_noise:
            raise ValueError(f"noise_level must be between 0 and max_noise={max_noise}; got {noise_level}")
        w = _widgets()
        self._model = model
        self._class_names = list(class_names) if class_names is not None else None
        self._image_size = image_size
        self._seed = seed
        self._batch_size = batch_size
        self._max_pools = max_pools
        # photo name -> a source (name, path, bytes) until first use, then a tensor
        if photos is None:
            photos = photo_names()
        self._sources: dict[str, object] = (
            dict(photos) if isinstance(photos, Mapping) else {str(p): str(p) for p in photos}
        )
        if not self._sources:
            raise ValueError("photos is empty; give at least one photo")
        self._images: dict[str, torch.Tensor] = {}
        self._pools: OrderedDict[tuple[str, float], tuple[torch.Tensor, torch.Generator | None]] = OrderedDict()
        self._targets: dict[str, int] = {}
        self.map: torch.Tensor | None = None  # last (H, W) map drawn
        self.saliency: torch.Tensor | None = None  # last (C, H, W) reduction of the pool
        self.computations = 0  # pools drawn or grown: the expensive work
        self._quiet = False

        style = {"description_width": "110px"}
        layout = w.Layout(width="420px")
        self.photo = w.Dropdown(options=list(self._sources), description="photo", style=style, layout=layout)
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="your photo")
        self.noise = w.FloatSlider(
            value=noise_level, min=0.0, max=max_noise, step=0.025, description="noise level \u03b1",
            readout_format=".1%", continuous_update=False, style=style, layout=layout,
        )
        self.n = w.IntSlider(
            value=n_samples, min=1, max=max_samples, step=1, description="samples N",
            continuous_update=False, style=style, layout=layout,
        )
        self.mode = w.Dropdown(
            options=[(MODE_LABELS[m], m) for m in SMOOTHGRAD_MODES], value=mode, description="mode",
            style=style, layout=layout,
        )
        self.button = w.Button(description="compute", button_style="primary", icon="refresh")
        self.status = w.HTML(
            "Move a control or press <b>compute</b>: the first map of a photo and noise level "
            "takes about 0.1 s per sample on a CPU."
        )
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        controls = w.VBox([self.photo, self.noise, self.n, self.mode, w.HBox([self.button, self.upload])])
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

    def add_photo(self, name: str, source: object) -> None:
        """Add a photo (path, image bytes, PIL image or (3, H, W) tensor) and select it.

        This is what the upload button does; call it directly where the upload
        widget does not work (e.g. after ``google.colab.files.upload()``).
        """
        image = source if isinstance(source, torch.Tensor) else load_image(source, size=self._image_size)
        name = str(name)
        self._sources[name] = image
        self._images[name] = image
        self._targets.pop(name, None)
        for key in [k for k in self._pools if k[0] == name]:
            del self._pools[key]
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

    def target_of(self, name: str) -> int:
        """The class the model predicts for the clean photo (every map explains it)."""
        if name not in self._targets:
            with torch.no_grad():
                logits = self.model(self.image_of(name).unsqueeze(0).to(_device(self.model)))
            self._targets[name] = int(logits.argmax(dim=1))
        return self._targets[name]

    def samples(self, name: str, noise_level: float, n: int) -> torch.Tensor:
        """The first ``n`` noisy gradients of a photo at a noise level, drawing only new ones.

        A pool is kept per (photo, noise level) with its generator; asking for
        more samples continues that generator, so the prefix property holds and
        the result equals a single draw of ``n`` samples with the same seed.
        """
        key = (name, round(float(noise_level), 6))
        x = self.image_of(name)
        target = self.target_of(name)
        if key in self._pools:
            self._pools.move_to_end(key)
            pool, gen = self._pools[key]
        else:
            pool, gen = x.new_zeros((0, *x.shape)), torch.Generator().manual_seed(self._seed)
        if key[1] == 0.0:
            # No noise: every sample is the vanilla gradient; compute it once.
            if pool.shape[0] == 0:
                pool = vanilla_gradient(self.model, x, target).unsqueeze(0)
                self.computations += 1
            self._store(key, pool, gen)
            return pool.expand(n, *pool.shape[1:])
        if pool.shape[0] < n:
            more = noisy_gradients(
                self.model, x, target, n_samples=n - pool.shape[0], noise_level=key[1],
                batch_size=self._batch_size, generator=gen,
            )
            pool = torch.cat([pool, more]) if pool.shape[0] else more
            self.computations += 1
        self._store(key, pool, gen)
        return pool[:n]

    def _store(self, key, pool, gen) -> None:
        self._pools[key] = (pool, gen)
        self._pools.move_to_end(key)
        while len(self._pools) > self._max_pools:
            self._pools.popitem(last=False)

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
        name, alpha, n, mode = self.photo.value, float(self.noise.value), int(self.n.value), self.mode.value
        self.status.value = f"computing {name}, \u03b1 = {alpha:.1%} of the range, N = {n} ..."
        pool = self.samples(name, alpha, n)
        reduced = smoothgrad_from_samples(pool, mode)
        if mode == "signed":
            reduced = reduced.abs()
        self.saliency = reduced
        self.map = reduce_channels(reduced, "max")
        self.image.value = self._render(name, alpha, n, mode)
        target = self.target_of(name)
        label = self._class_names[target] if self._class_names else None
        if label is None:
            try:
                from .models import categories

                label = categories()[target]
            except Exception:  # a model with other classes than ImageNet's
                label = f"class {target}"
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
        plots.show_map(axes[1], shown, vmin=0, vmax=1, title=f"{MODE_LABELS[mode].split('  ')[0]}", colorbar=True)
        plots.show_overlay(axes[2], self.image_of(name), shown, title="overlay")
        fig.suptitle(f"noise level \u03b1 = {alpha:.1%} of the range, N = {n}", fontsize=11)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def explorer(
    model: nn.Module | None = None, photos: Sequence[str] | Mapping[str, object] | None = None, **kwargs
) -> SmoothGradExplorer:
    """Build the SmoothGrad explorer of chapter 02-SmoothGradIntro; display the result.

    Nothing is computed until a control moves or *compute* is pressed. See
    :class:`SmoothGradExplorer` for the arguments.
    """
    return SmoothGradExplorer(model, photos, **kwargs)
