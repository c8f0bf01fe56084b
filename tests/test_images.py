"""Photos: bundled names, files of every common kind, and clear errors for bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import gradsal


@pytest.mark.parametrize("name", gradsal.photo_names())
def test_bundled_photos(name):
    x = gradsal.load_image(name)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.std()) > 0.05  # a photo, not a blank


def _library_photo(name):
    """The photo as its own package's loader returns it."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    loaders = {
        "cat": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "astronaut": data.astronaut,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "china": lambda: load_sample_image("china.jpg"),
        "flower": lambda: load_sample_image("flower.jpg"),
    }
    return loaders[name]()


@pytest.mark.parametrize("name", gradsal.photo_names())
def test_bundled_photos_are_the_packages_own_pixels(name):
    # gradsal reads the files without importing the packages (seconds saved
    # per chapter); the pixels must be those the packages' loaders return
    ours = gradsal.PHOTOS[name][0]()
    theirs = _library_photo(name)
    assert ours.dtype == theirs.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs)


def test_bundled_photos_import_neither_package():
    import subprocess
    import sys

    code = (
        "import sys, gradsal\n"
        "[gradsal.load_image(n) for n in gradsal.photo_names()]\n"
        "print(sorted(m for m in ('sklearn', 'skimage') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_size_and_centre_crop_geometry():
    # A wide image whose left third is black, middle white and right third black:
    # the short side goes to 256/224 * size, and the centre crop keeps the middle.
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, 100:200] = 255
    x = gradsal.load_image(Image.fromarray(arr), size=112)
    assert x.shape == (3, 112, 112)
    # Scaled to 128 x 384, the white band spans columns 128..256, the crop 136..248.
    assert float(x[:, :, 5:-5].min()) > 0.99


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_path_bytes_and_pil_give_the_same_tensor(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8))
    path = tmp_path / "photo.png"
    img.save(path)
    from_pil = gradsal.load_image(img, size=32)
    torch.testing.assert_close(gradsal.load_image(path, size=32), from_pil)
    torch.testing.assert_close(
        gradsal.load_image(str(path), size=32), from_pil
    )
    torch.testing.assert_close(
        gradsal.load_image(path.read_bytes(), size=32), from_pil
    )


def test_caller_image_is_not_modified():
    img = Image.new("RGBA", (40, 30), (10, 20, 30, 0))
    before = img.tobytes()
    gradsal.load_image(img, size=16)
    assert (
        img.mode == "RGBA" and img.size == (40, 30) and img.tobytes() == before
    )


def test_greyscale_becomes_three_equal_channels():
    x = gradsal.load_image(Image.new("L", (50, 50), 128), size=16)
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x[0], x[1])
    assert abs(float(x.mean()) - 128 / 255) < 1e-3


def test_transparent_pixels_are_composited_on_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    for i in range(16):
        for j in range(32):
            img.putpixel((j, i), (0, 0, 0, 0))  # top half fully transparent
    x = gradsal.load_image(img, size=32)
    assert float(x[:, 2:6].min()) > 0.99  # white
    torch.testing.assert_close(
        x[:, -6:-2],
        torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 4, 32),
        atol=1e-3,
        rtol=0,
    )


def test_palette_image_with_and_without_transparency():
    pal = Image.new("P", (20, 20))
    pal.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    x = gradsal.load_image(pal, size=16)
    torch.testing.assert_close(
        x.mean((1, 2)), torch.tensor([0.0, 0.0, 1.0]), atol=1e-3, rtol=0
    )
    pal.info["transparency"] = 0
    x = gradsal.load_image(pal, size=16)
    assert float(x.min()) > 0.99


def test_sixteen_bit_greyscale_uses_the_full_range(tmp_path):
    arr = np.full((40, 40), 32768, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    x = gradsal.load_image(path, size=16)
    assert abs(float(x.mean()) - 32768 / 65535) < 1e-3


def test_exif_rotation_is_applied():
    # A tall image stored sideways: orientation 6 means "rotate 90 degrees clockwise to view".
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, :40] = 255  # left half white as stored
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    data = _save(img, "JPEG", exif=exif.tobytes(), quality=95)
    x = gradsal.load_image(data, size=32)
    # Viewed upright (rotated clockwise), the stored left half becomes the top half.
    assert float(x[:, :12].mean()) > 0.9 and float(x[:, -12:].mean()) < 0.1


def test_missing_file():
    with pytest.raises(
        FileNotFoundError, match="no image file at .*not a bundled photo"
    ):
        gradsal.load_image("/nonexistent/cat.jpg")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="expected an image file"):
        gradsal.load_image(tmp_path)


def test_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels")
    with pytest.raises(ValueError, match="not an image file"):
        gradsal.load_image(path)


def test_truncated_image(tmp_path):
    rng = np.random.default_rng(1)
    data = _save(
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)),
        "JPEG",
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        gradsal.load_image(path)


def test_decompression_bomb(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 300 * 300 // 3
    )  # warning zone (between 1x and 2x)
    with pytest.raises(ValueError, match="decompression bomb"):
        gradsal.load_image(path)
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 1000
    )  # error zone (over 2x)
    with pytest.raises(ValueError, match="decompression bomb"):
        gradsal.load_image(path)


@pytest.mark.parametrize("bad", [3.5, None, np.zeros((4, 4, 3))])
def test_unsupported_sources(bad):
    with pytest.raises(TypeError, match="expected a bundled photo's name"):
        gradsal.load_image(bad)


@pytest.mark.parametrize("size", [0, 4, 2.5, True])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size must be an integer"):
        gradsal.load_image("cat", size=size)


def test_to_numpy_image_round_trip():
    x = gradsal.load_image("coffee", size=32)
    arr = gradsal.to_numpy_image(x)
    assert arr.shape == (32, 32, 3)
    np.testing.assert_allclose(arr, x.permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        gradsal.to_numpy_image(x[0])
