"""Draw the Vanilla Gradient pipeline diagram of chapter 01-VanillaGradient.

Run from anywhere: ``python images/pipeline_diagram.py`` writes
``images/pipeline.png`` next to this script. The diagram is schematic: the
"photo", gradient and map in it are synthetic pictures made from a seeded
random generator, so the figure is the same on every run and needs no model.
Chapter 01 then runs the same four steps on a real photo.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("pipeline.png")
FORWARD = "#2f5d8c"
BACKWARD = "#b2182b"
GREY = "#444444"


def _synthetic_scene(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A toy RGB photo (sky, ground, a round object) and the object's mask."""
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
    img = np.zeros((n, n, 3))
    img[..., 0] = 0.55 + 0.25 * yy
    img[..., 1] = 0.70 + 0.10 * yy
    img[..., 2] = 0.95 - 0.45 * yy
    ground = yy > 0.72
    img[ground] = [0.45, 0.62, 0.30]
    mask = (xx - 0.48) ** 2 + (yy - 0.52) ** 2 < 0.22**2
    img[mask] = [0.80, 0.45, 0.15]
    return np.clip(img, 0, 1), mask


def _synthetic_gradient(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A signed, speckled (3, n, n) 'gradient', strongest around the object."""
    rng = np.random.default_rng(seed)
    n = mask.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
    envelope = 0.15 + np.exp(
        -((xx - 0.48) ** 2 + (yy - 0.52) ** 2) / (2 * 0.16**2)
    )
    return rng.standard_normal((3, n, n)) * envelope * (0.6 + 0.4 * mask)


def _stack(
    ax: Axes,
    planes: list[np.ndarray],
    x: float,
    y: float,
    size: float,
    cmap=None,
    vlim: float | None = None,
    labels: list[str] | None = None,
) -> None:
    """Image planes drawn as an offset stack (a C x H x W tensor's planes)."""
    step = 0.18 * size
    for k, plane in enumerate(planes):
        x0, y0 = x + k * step, y - k * step
        kwargs = (
            {} if cmap is None else {"cmap": cmap, "vmin": -vlim, "vmax": vlim}
        )
        ax.imshow(
            plane,
            extent=(x0, x0 + size, y0, y0 + size),
            zorder=3 + k,
            interpolation="nearest",
            **kwargs,
        )
        ax.add_patch(
            plt.Rectangle(
                (x0, y0), size, size, fill=False, lw=0.8, ec=GREY, zorder=3 + k
            )
        )
        if labels:
            ax.text(
                x0 - 0.06,
                y0 + size - 0.08,
                labels[k],
                fontsize=8,
                color=GREY,
                ha="right",
                va="top",
                zorder=10,
            )


def _arrow(
    ax: Axes, start, end, color: str, dashed: bool = False, rad: float = 0.0
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=16,
            lw=2,
            color=color,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
            zorder=2,
        )
    )


def _step_label(
    ax: Axes, x: float, y: float, number: int, text: str, color: str
) -> None:
    ax.text(
        x,
        y,
        f"{number}",
        fontsize=10,
        fontweight="bold",
        color="white",
        ha="center",
        va="center",
        bbox={"boxstyle": "circle,pad=0.25", "fc": color, "ec": color},
        zorder=12,
    )
    ax.text(
        x + 0.22,
        y,
        text,
        fontsize=10.5,
        color=color,
        ha="left",
        va="center",
        fontweight="bold",
        zorder=12,
    )


def draw() -> plt.Figure:
    """The figure: forward pass, prediction, backward pass, saliency map."""
    img, mask = _synthetic_scene()
    grad = _synthetic_gradient(mask)
    sal = np.abs(grad).max(axis=0)
    sal = (sal - sal.min()) / (sal.max() - sal.min())
    lim = float(np.abs(grad).max())

    fig, ax = plt.subplots(figsize=(12, 5.6))
    ax.set_xlim(0, 12.4)
    ax.set_ylim(-0.45, 5.9)
    ax.set_aspect("equal")
    ax.axis("off")

    # input photo x
    _stack(ax, [img], 0.3, 3.3, 1.7)
    ax.text(
        1.15,
        2.95,
        "input photo $x$\n$[0,1]^{3\\times H\\times W}$",
        ha="center",
        va="top",
        fontsize=10,
    )

    # the network f as a funnel of layers
    for h, xpos in zip([1.9, 1.6, 1.3, 1.0, 0.7], np.linspace(3.0, 4.9, 5)):
        ax.add_patch(
            FancyBboxPatch(
                (xpos, 4.15 - h / 2),
                0.28,
                h,
                boxstyle="round,pad=0.02",
                fc="#c9d9ea",
                ec=FORWARD,
                lw=1,
                zorder=3,
            )
        )
    ax.text(
        4.1,
        2.95,
        "network $f$\n(EfficientNet-Lite0)",
        ha="center",
        va="top",
        fontsize=10,
    )

    # logits f(x): a small bar chart inset
    bars = fig.add_axes(
        ax.transData.transform_bbox(
            matplotlib.transforms.Bbox([[6.3, 3.3], [8.3, 5.0]])
        ).transformed(fig.transFigure.inverted())
    )
    rng = np.random.default_rng(1)
    logits = rng.normal(2.0, 1.0, 12)
    logits[7] = 6.0
    bars.bar(
        range(12), logits, color=["#8fa9c7"] * 7 + [FORWARD] + ["#8fa9c7"] * 4
    )
    bars.set_xticks([])
    bars.set_yticks([])
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)
    ax.text(
        7.3,
        2.95,
        "logits $f(x)\\in\\mathbb{R}^{1000}$\n(not softmax)",
        ha="center",
        va="top",
        fontsize=10,
    )

    # predicted class c
    ax.add_patch(
        FancyBboxPatch(
            (9.6, 3.65),
            2.5,
            1.0,
            boxstyle="round,pad=0.08",
            fc="#eef3f8",
            ec=FORWARD,
            lw=1.5,
        )
    )
    ax.text(
        10.85,
        4.15,
        "$c = \\arg\\max_k\\, f_k(x)$\ne.g. 'tiger cat'",
        ha="center",
        va="center",
        fontsize=10.5,
    )

    # forward arrows and labels
    _arrow(ax, (2.15, 4.15), (2.9, 4.15), FORWARD)
    _arrow(ax, (5.3, 4.15), (6.15, 4.15), FORWARD)
    _arrow(ax, (8.45, 4.15), (9.5, 4.15), FORWARD)
    _step_label(ax, 2.6, 5.55, 1, "forward pass", FORWARD)
    _step_label(ax, 8.6, 5.55, 2, "class prediction", FORWARD)

    # backward pass: from f_c back through the network to the pixels
    _arrow(ax, (10.85, 3.5), (7.0, 1.1), BACKWARD, dashed=True, rad=-0.15)
    _step_label(ax, 8.6, 0.55, 3, "backward pass", BACKWARD)
    ax.text(
        9.9,
        2.1,
        "backpropagate $f_c$\nthrough $f$",
        color=BACKWARD,
        fontsize=9.5,
        ha="left",
        va="center",
    )

    # gradient G: three signed channel planes
    _stack(
        ax,
        [grad[k] for k in range(3)],
        4.75,
        0.75,
        1.25,
        cmap="RdBu_r",
        vlim=lim,
        labels=["R", "G", "B"],
    )
    ax.text(
        5.35,
        -0.1,
        "$G = \\partial f_c/\\partial x"
        " \\in \\mathbb{R}^{3\\times H\\times W}$",
        ha="center",
        va="center",
        fontsize=10,
    )

    # saliency map S
    ax.imshow(
        sal,
        cmap="magma",
        extent=(0.3, 2.0, 0.3, 2.0),
        zorder=3,
        interpolation="nearest",
    )
    ax.add_patch(
        plt.Rectangle(
            (0.3, 0.3), 1.7, 1.7, fill=False, lw=0.8, ec=GREY, zorder=4
        )
    )
    _arrow(ax, (4.6, 1.15), (2.15, 1.15), BACKWARD)
    _step_label(ax, 0.5, -0.15, 4, "saliency map", BACKWARD)
    ax.text(
        3.35,
        0.95,
        "$S = \\mathrm{normalise}\\,(\\max_k |G_k|)$\n$k \\in \\{R, G, B\\}$",
        ha="center",
        va="top",
        fontsize=9.5,
    )
    return fig


def main() -> None:
    fig = draw()
    fig.savefig(OUT, dpi=150, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
