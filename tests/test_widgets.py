"""The SmoothGrad explorer of chapter 02 (SmoothGrad): builds without computing, draws the right map.

A tiny convolutional model on 16 x 16 images stands in for the classifier, so every
test runs in milliseconds and nothing is downloaded.
"""

import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gradsal
from gradsal.widgets import SmoothGradExplorer, _uploaded_files, explorer

ipywidgets = pytest.importorskip("ipywidgets")


class Counting(nn.Module):
    """A small ReLU network that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, 5),
        )
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


CLASSES = [f"class {i}" for i in range(5)]


@pytest.fixture
def setup():
    model = Counting()
    gen = torch.Generator().manual_seed(1)
    photos = {
        "a": torch.rand(3, 16, 16, generator=gen),
        "b": torch.rand(3, 16, 16, generator=gen),
    }
    ex = explorer(
        model,
        photos,
        n_samples=4,
        max_samples=12,
        image_size=16,
        class_names=CLASSES,
        seed=3,
    )
    return model, photos, ex


def expected(model, x, n, sigma, mode, seed=3):
    sg = gradsal.smoothgrad(
        model, x, n_samples=n, noise_level=sigma, mode=mode, generator=seed
    )
    return sg.abs() if mode == "signed" else sg


def test_builds_without_computing(setup):
    model, _, ex = setup
    assert isinstance(ex.widget, ipywidgets.VBox)
    assert model.calls == 0 and ex.computations == 0 and ex.map is None
    assert list(ex.photo.options) == ["a", "b"]
    assert (
        ex.n.max == 12
        and ex.n.value == 4
        and ex.noise.value == pytest.approx(0.15)
    )
    assert {v for _, v in ex.mode.options} == set(gradsal.SMOOTHGRAD_MODES)
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()


def test_update_matches_smoothgrad(setup):
    model, photos, ex = setup
    ex.update()
    assert torch.allclose(
        ex.saliency, expected(model, photos["a"], 4, 0.15, "abs"), atol=1e-6
    )
    assert torch.equal(ex.map, gradsal.reduce_channels(ex.saliency, "max"))
    assert ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "class" in ex.status.value


@pytest.mark.parametrize("mode", gradsal.SMOOTHGRAD_MODES)
def test_controls_redraw_the_right_map(setup, mode):
    model, photos, ex = setup
    ex.noise.value = 0.25  # each control change redraws
    ex.mode.value = mode
    ex.photo.value = "b"
    assert torch.allclose(
        ex.saliency, expected(model, photos["b"], 4, 0.25, mode), atol=1e-6
    )


def test_pool_is_reused_and_grown(setup):
    model, photos, ex = setup
    ex.update()
    assert ex.computations == 1
    ex.mode.value = "square"  # same pool, new reduction
    ex.n.value = 2  # a prefix of the pool
    assert ex.computations == 1
    ex.n.value = 9  # grows the pool by continuing its generator
    assert ex.computations == 2
    assert torch.allclose(
        ex.saliency, expected(model, photos["a"], 9, 0.15, "square"), atol=1e-6
    )
    assert ex.samples("a", 0.15, 9).shape == (9, 3, 16, 16)
    assert ex.computations == 2


def test_zero_noise_is_the_vanilla_gradient(setup):
    model, photos, ex = setup
    ex.noise.value = 0.0
    ex.n.value = 7
    g = gradsal.vanilla_gradient(model, photos["a"])
    assert torch.allclose(ex.saliency, g.abs(), atol=1e-6)
    assert ex.computations == 1  # one gradient, not seven


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(
        (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    ).save(buf, "PNG")
    return buf.getvalue()


def test_upload_adds_and_selects_the_photo(setup):
    model, _, ex = setup
    content = _png_bytes()
    ex.upload.value = (
        {
            "name": "mine.png",
            "type": "image/png",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime(
                2024, 1, 1, tzinfo=datetime.timezone.utc
            ),
        },
    )
    assert ex.photo.value == "upload: mine.png"
    x = gradsal.load_image(content, size=16)
    assert torch.allclose(
        ex.saliency, expected(model, x, 4, 0.15, "abs"), atol=1e-6
    )
    assert ex.computations == 1  # only the new photo was computed


def test_bad_upload_reports_instead_of_raising(setup):
    _, _, ex = setup
    ex._on_upload(
        {
            "new": (
                {"name": "notes.txt", "content": memoryview(b"not an image")},
            )
        }
    )
    assert "Could not use" in ex.status.value
    assert list(ex.photo.options) == ["a", "b"]


def test_uploaded_files_reads_both_ipywidgets_formats():
    v8 = ({"name": "p.png", "content": memoryview(b"abc")},)
    v7 = {"p.png": {"metadata": {"name": "p.png"}, "content": b"abc"}}
    assert _uploaded_files(v8) == _uploaded_files(v7) == [("p.png", b"abc")]
    assert _uploaded_files(()) == []


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        SmoothGradExplorer(Counting(), {"a": torch.rand(3, 8, 8)}, mode="mean")
    with pytest.raises(ValueError, match="n_samples"):
        SmoothGradExplorer(
            Counting(),
            {"a": torch.rand(3, 8, 8)},
            n_samples=50,
            max_samples=10,
        )
    with pytest.raises(ValueError, match="empty"):
        SmoothGradExplorer(Counting(), {})


def test_target_is_the_eval_mode_prediction_and_the_mode_is_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Dropout(0.9), nn.Linear(3 * 16 * 16, 5)
    ).train()
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = int(model.eval()(x[None]).argmax())
    model.train()
    ex = explorer(
        model,
        {"a": x},
        n_samples=2,
        max_samples=4,
        image_size=16,
        class_names=CLASSES,
    )
    for seed in range(
        5
    ):  # a train-mode prediction would follow the dropout draw
        torch.manual_seed(seed)
        ex._targets.clear()
        ex.pools.clear()
        assert ex.target_of("a") == expected
    assert model.training and model[1].training
