#!/usr/bin/env python
"""The line scans of chapters 03, 04 and 07, before and after two changes that do not touch gradient passes.

Chapter 03 (ReLU Boundaries) scans the cat photo along a line at 129 points in
float32, counting the units of EfficientNet-Lite0 that change state between
neighbouring points, and zooms in on 11 points in float64. This script times
both scans two ways, in interleaved rounds:

* counting the changed units by summing the whole (points x units) comparison
  at once (torch first widens it to int64) against
  :func:`gradsal.analysis.pattern_changes`, which counts in blocks of units;
* a float64 copy made by ``copy.deepcopy(model).double()`` (torch's CPU
  convolution then runs each depthwise layer one channel at a time) against
  :func:`gradsal.models.float64_copy` (depthwise layers as sums of shifted
  products).

It checks that both ways give the same counts and, in float64, logits that
agree to 1e-12, and writes ``<out>/exact_scans.md`` for the appendix on
performance. Run from the repository root (about a minute on two CPU cores):

    python bench/exact_scans.py --out bench/results
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the chapters set it

import torch  # noqa: E402

import gradsal  # noqa: E402
import gradsal.engine  # noqa: E402
from gradsal.analysis import regions  # noqa: E402

LINE_NOISE, SEED = 0.02, 0  # chapter 03's direction: 0.02 * N(0, 1), seed 0
N_POINTS, N_ZOOM, ZOOM_STEP = 129, 11, 2e-6


def whole_comparison(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The count as it was: one sum over the whole comparison."""
    return (a != b).sum(dim=-1)


def timed(compute):
    start = time.perf_counter()
    out = compute()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    gradsal.engine.reuse_freed_memory()
    model = gradsal.load_model()
    x = gradsal.load_image("cat")
    target = int(model(x[None]).argmax())
    d = LINE_NOISE * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(SEED)
    )
    ts = torch.linspace(0, 1, N_POINTS, dtype=torch.float64)
    ts_zoom = 0.5 + ZOOM_STEP * torch.arange(N_ZOOM, dtype=torch.float64)
    regions.line_scan(model, x, d, ts[:6], target)  # warm-up

    blocked = regions.pattern_changes
    counters = {"whole comparison": whole_comparison, "in blocks": blocked}
    copies = {
        "copy.deepcopy(model).double()": lambda: copy.deepcopy(model).double(),
        "gradsal.models.float64_copy(model)": lambda: (
            gradsal.models.float64_copy(model)
        ),
    }
    times: dict[str, list[float]] = {}
    counts, logits = {}, {}
    try:
        for _ in range(args.rounds):
            for name, count in counters.items():
                regions.pattern_changes = count
                dt, scan = timed(
                    lambda: regions.line_scan(model, x, d, ts, target)
                )
                times.setdefault(name, []).append(dt)
                counts[name] = scan.changes
            regions.pattern_changes = blocked
            for name, make in copies.items():
                dt, scan = timed(
                    lambda make=make: regions.line_scan(
                        make(), x.double(), d.double(), ts_zoom, target
                    )
                )
                times.setdefault(name, []).append(dt)
                counts[name], logits[name] = scan.changes, scan.logit
    finally:
        regions.pattern_changes = blocked
    same_counts = all(
        torch.equal(counts[p], counts[q])
        for p, q in [tuple(counters), tuple(copies)]
    )
    l0, l1 = logits.values()
    logit_gap = float((l0 - l1).abs().max() / l1.abs().max())
    assert same_counts and logit_gap < 1e-12, (same_counts, logit_gap)

    def row(label, name):
        ts_ = times[name]
        return f"| {label} | {name} | {min(ts_):.2f} | {max(ts_):.2f} |"

    lines = [
        "| scan | how | fastest (s) | slowest (s) |",
        "|---|---|---:|---:|",
        *(row(f"{N_POINTS} points, float32", name) for name in counters),
        *(row(f"{N_ZOOM} points, float64", name) for name in copies),
        "",
        f"The scans of chapter 03 on the cat photo ({args.rounds} interleaved "
        f"rounds, {torch.get_num_threads()} threads, "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}); both ways "
        "count the same changes, and the float64 logits agree to "
        f"{logit_gap:.0e} (relative). Produced by `python bench/exact_scans.py`.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "exact_scans.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
