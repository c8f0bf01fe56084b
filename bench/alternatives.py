#!/usr/bin/env python
"""Measure the speed-ups that gradsal tried and left out (appendix on performance).

    python bench/alternatives.py --out bench/results

writes ``<out>/<device>_alternatives.md``: bfloat16 autocast (time per copy and how
far its maps move from float32 ones) and ``torch.compile`` (compile time, time per
copy, agreement), both applied to gradsal's rewritten graph, EfficientNet-Lite0 at
224 x 224. ``bench/smoothgrad_bench.py`` runs this script at its end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import gradsal
from gradsal.engine import fold_for_gradients, native_bfloat16

if (
    __package__ in (None, "")
):  # run as `python bench/alternatives.py`: make the package `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.configurations import SEED
from bench.timing import Context

BATCH = 3  # copies per pass, gradsal's default
ROUNDS = 5


def _per_copy_ms(step, rounds: int = ROUNDS) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        out.append(1000 * (time.perf_counter() - t0) / BATCH)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (default: cuda if available)",
    )
    ap.add_argument(
        "--no-compile",
        action="store_true",
        help="skip torch.compile (its compilation takes minutes)",
    )
    args = ap.parse_args(argv)
    device = torch.device(
        args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    cpu = device.type == "cpu"
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(
            f"[alternatives {time.perf_counter() - t_start:6.1f}s] {msg}",
            flush=True,
        )

    # The benchmark's setting: the model, the cat photo, its predicted class, noise level 0.15.
    ctx = Context(str(device))
    model, x, target, sigma, sync = (
        ctx.model,
        ctx.x,
        ctx.target,
        ctx.sigma,
        ctx.sync,
    )
    fmt = torch.channels_last if cpu else torch.contiguous_format
    graph = fold_for_gradients(model).module(channels_last=cpu)
    gen = torch.Generator().manual_seed(SEED)
    xb = (
        x[None]
        + sigma * torch.randn((BATCH, *x.shape), generator=gen).to(device)
    ).contiguous(memory_format=fmt)
    # One thread per pass, as each of gradsal's two CPU workers runs it.
    threads = torch.get_num_threads()
    if cpu:
        torch.set_num_threads(max(1, threads // 2))

    def gradient(module, dtype=None):
        xr = xb.detach().clone().requires_grad_(True)
        with torch.autocast(
            device.type,
            dtype=dtype or torch.bfloat16,
            enabled=dtype is not None,
        ):
            logit = module(xr)[:, target].sum()
        (g,) = torch.autograd.grad(logit, xr)
        sync()
        return g.float()

    rows = []
    reference = gradient(graph)

    # What SmoothGrad adds to the floor: drawing the noise, copy by copy, from one generator.
    draw = torch.Generator().manual_seed(1)
    noise_ms = statistics.median(
        _per_copy_ms(
            lambda: [
                torch.randn(x.shape, generator=draw) for _ in range(BATCH)
            ],
            20,
        )
    )
    log(f"noise: {noise_ms:.2f} ms per copy")

    # bfloat16 autocast
    log(f"bfloat16 autocast (native bfloat16: {native_bfloat16()})")
    gradient(graph, torch.bfloat16)
    times = {"float32": [], "bfloat16": []}
    for _ in range(3):
        times["float32"] += _per_copy_ms(lambda: gradient(graph), 1)
        times["bfloat16"] += _per_copy_ms(
            lambda: gradient(graph, torch.bfloat16), 1
        )
    g16 = gradient(graph, torch.bfloat16)
    rel = float((g16 - reference).norm() / reference.norm())
    f32, b16 = (
        statistics.median(times["float32"]),
        statistics.median(times["bfloat16"]),
    )
    rows.append(
        (
            "bfloat16 autocast",
            f"{f32:.1f}",
            f"{b16:.1f}",
            f"{b16 / f32:.2f}x",
            f"per-copy gradient off by {100 * rel:.0f}% (relative L2)",
        )
    )

    torch.set_num_threads(threads)
    corr = []
    for i, name in enumerate(gradsal.photo_names()):
        img = gradsal.load_image(name).to(device)
        ref = gradsal.smoothgrad(
            model, img, n_samples=8, generator=i, precision="float32"
        )
        approx = gradsal.smoothgrad(
            model, img, n_samples=8, generator=i, precision="bfloat16"
        )
        corr.append((name, gradsal.rank_correlation(approx, ref)))
        log(
            f"  bfloat16 vs float32 SmoothGrad, N = 8, {name}: rank correlation {corr[-1][1]:.3f}"
        )
    ref32 = gradsal.smoothgrad(
        model, x, n_samples=32, generator=0, precision="float32"
    )
    rho32 = gradsal.rank_correlation(
        gradsal.smoothgrad(
            model, x, n_samples=32, generator=0, precision="bfloat16"
        ),
        ref32,
    )
    log(f"  N = 32, cat: {rho32:.3f}")
    if cpu:
        torch.set_num_threads(max(1, threads // 2))

    # torch.compile
    compile_note = "not run (--no-compile)"
    if not args.no_compile:
        log(
            "torch.compile (default mode, inductor), with an empty compilation cache"
        )
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(
            prefix="gradsal-inductor-"
        )
        compiled = torch.compile(graph)
        t0 = time.perf_counter()
        gc = gradient(compiled)
        compile_s = time.perf_counter() - t0
        diff = float((gc - reference).norm() / reference.norm())
        times = {"eager": [], "compiled": []}
        for _ in range(ROUNDS):
            times["eager"] += _per_copy_ms(lambda: gradient(graph), 1)
            times["compiled"] += _per_copy_ms(lambda: gradient(compiled), 1)
        eager, comp = (
            statistics.median(times["eager"]),
            statistics.median(times["compiled"]),
        )
        rows.append(
            (
                "`torch.compile`",
                f"{eager:.1f}",
                f"{comp:.1f}",
                f"{comp / eager:.2f}x",
                f"compilation {compile_s:.0f} s; gradient off by {diff:.1e} (relative L2)",
            )
        )
        compile_note = f"{compile_s:.0f} s"
    torch.set_num_threads(threads)

    lines = [
        "| tried | float32 eager (ms per copy) | with it (ms per copy) | time ratio | accuracy |",
        "|---|---:|---:|---:|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Rank correlation of bfloat16 SmoothGrad with float32 SmoothGrad (same noise), N = 8: "
        + ", ".join(f"{n} {r:.3f}" for n, r in corr)
        + f"; N = 32, cat: {rho32:.3f}.",
        "",
        f"Forward + input gradient of gradsal's rewritten graph, batch {BATCH}, "
        f"{torch.get_num_threads() // 2 if cpu else 'all'} thread(s) per pass, medians of interleaved runs; "
        f"{device.type}, torch {torch.__version__}, native bfloat16: {native_bfloat16()}, "
        f"compilation: {compile_note}. Drawing one copy's noise (3 x 224 x 224 Gaussian numbers from a "
        f"`torch.Generator`, as gradsal does) took {noise_ms:.2f} ms, {noise_ms / f32:.1%} of a float32 eager "
        "copy. Produced by `python bench/alternatives.py`.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{device.type}_alternatives.md"
    path.write_text("\n".join(lines) + "\n")
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
