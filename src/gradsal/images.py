"""Photos as (3, H, W) tensors in [0, 1] (chapter 00, Setup).

The bundled photos come from files that scikit-image and scikit-learn ship, so
nothing is downloaded. A path, raw bytes or a PIL image a reader supplies goes
through the same preprocessing as the model's training data: short side resized
(bicubic) to 256/224 of the crop, then a centre crop.
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["PHOTOS", "load_image", "photo_names", "to_numpy_image"]


def _bundled(package: str, *parts: str) -> Callable[[], np.ndarray]:
    """A loader of a photo file that ``package`` ships, found without importing
    the package (importing scikit-learn alone takes about 2 s): (H, W, 3)
    uint8, the pixels ``skimage.data`` and ``sklearn.datasets.load_sample_image``
    return (both decode with PIL; a test keeps them equal)."""

    def load() -> np.ndarray:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"the bundled photos need the package {package!r}; pip install it"
            )
        path = Path(spec.submodule_search_locations[0], *parts)
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))

    return load


_SKIMAGE = ("skimage", "data")
_SKLEARN = ("sklearn", "datasets", "images")

# short name -> (loader, what the photo shows)
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    name: (_bundled(*where, file), about)
    for name, where, file, about in [
        ("cat", _SKIMAGE, "chelsea.png", "Chelsea the cat (scikit-image)"),
        ("coffee", _SKIMAGE, "coffee.png", "a cup of coffee (scikit-image)"),
        (
            "rocket",
            _SKIMAGE,
            "rocket.jpg",
            "a rocket on its launch pad (scikit-image)",
        ),
        (
            "astronaut",
            _SKIMAGE,
            "astronaut.png",
            "astronaut Eileen Collins (scikit-image)",
        ),
        (
            "motorcycle",
            _SKIMAGE,
            "motorcycle_left.png",
            "a motorcycle, left stereo view (scikit-image)",
        ),
        ("china", _SKLEARN, "china.jpg", "a Chinese temple (scikit-learn)"),
        ("flower", _SKLEARN, "flower.jpg", "a flower (scikit-learn)"),
    ]
}


def photo_names() -> list[str]:
    """Short names of the bundled photos, in the book's order."""
    return list(PHOTOS)


def load_image(
    source: str | os.PathLike | bytes | Image.Image, size: int = 224
) -> torch.Tensor:
    """Load a photo as a (3, size, size) float32 tensor with values in [0, 1].

    ``source`` is a bundled photo's short name (see :func:`photo_names`), a path
    to an image file, the bytes of one, or a PIL image (never modified). The short
    side is resized with a bicubic filter to ``round(size * 256 / 224)`` and the
    centre ``size x size`` square is kept, as in the model's evaluation. Greyscale,
    palette, transparent (composited on white), 16-bit and EXIF-rotated images are
    handled. See chapter 00, Setup.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(
            f"size must be an integer of at least 8 pixels; got {size!r}"
        )
    if isinstance(source, Image.Image):
        pixels = _pil_to_float(source)
    elif isinstance(source, (bytes, bytearray)):
        pixels = _pil_to_float(
            _open(io.BytesIO(bytes(source)), "the given bytes")
        )
    elif isinstance(source, (str, os.PathLike)):
        key = str(source)
        if key in PHOTOS:
            pixels = _array_to_float(PHOTOS[key][0]())
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise FileNotFoundError(
                    f"no image file at {str(path)!r}, and {key!r} is not a bundled photo "
                    f"(bundled: {', '.join(PHOTOS)})"
                )
            if not path.is_file():
                raise IsADirectoryError(
                    f"{str(path)!r} is a directory, expected an image file"
                )
            pixels = _pil_to_float(_open(path, repr(str(path))))
    else:
        raise TypeError(
            "expected a bundled photo's name, a file path, image bytes or a PIL image; "
            f"got {type(source).__name__}"
        )
    return _resize_and_crop(pixels, size)


def _open(fp, what: str) -> Image.Image:
    """Open and fully decode an image, turning PIL's failures into clear errors."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            img.load()
    except (
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        raise ValueError(
            f"{what} is too large to be a photo (decompression bomb guard: {err}); "
            "expected at most PIL.Image.MAX_IMAGE_PIXELS pixels"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(
            f"{what} is not an image file PIL can read (expected JPEG, PNG, ...)"
        ) from None
    except (OSError, SyntaxError) as err:
        raise ValueError(
            f"{what} could not be decoded; the file is truncated or corrupt ({err})"
        ) from None
    return img


def _pil_to_float(img: Image.Image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) float32 array in [0, 1], upright."""
    img = ImageOps.exif_transpose(
        img
    )  # returns a copy; the caller's image is untouched
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float64)
        peak = (
            65535.0
            if grey.max(initial=0) > 255 or img.mode.startswith("I;16")
            else 255.0
        )
        grey = np.clip(grey / peak, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _array_to_float(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype == np.uint8:
        return arr[..., :3].astype(np.float32) / 255.0
    return np.clip(arr[..., :3].astype(np.float32), 0.0, 1.0)


def _resize_and_crop(pixels: np.ndarray, size: int) -> torch.Tensor:
    h, w = pixels.shape[:2]
    if min(h, w) < 1:
        raise ValueError(f"the image is empty ({w} x {h} pixels)")
    short = round(size * 256 / 224)
    scale = short / min(h, w)
    new_h, new_w = max(short, round(h * scale)), max(short, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    x = F.interpolate(
        x,
        size=(new_h, new_w),
        mode="bicubic",
        align_corners=False,
        antialias=True,
    )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[0, :, top : top + size, left : left + size]
    # Bicubic filters overshoot at sharp edges; pixels stay in [0, 1].
    return x.clamp(0.0, 1.0).contiguous()


def to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """A (3, H, W) tensor in [0, 1] -> an (H, W, 3) numpy array for ``imshow``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(
            f"expected a (C, H, W) tensor; got {getattr(x, 'shape', type(x).__name__)}"
        )
    return x.detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
