#!/usr/bin/env python
"""Measure each part of gradsal's rewritten gradient pass on its own (appendix on performance).

    python bench/gradient_pass.py --out bench/results

writes ``<out>/cpu_gradient_pass.md``: the time per copy of a forward pass and
input gradient (EfficientNet-Lite0, the cat photo, batch 3, one thread, as each of
gradsal's CPU workers runs it) of the rewritten graph with its parts switched on
one at a time (``gradsal.engine.trace_and_fold``'s keywords), medians of
interleaved rounds. It then runs the first and the last of them again in a fresh
process whose C allocator keeps freed memory (``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` raised), to show what fresh pages cost.
``bench/smoothgrad_bench.py`` runs this script at its end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gradsal.engine import trace_and_fold

if __package__ in (
    None,
    "",
):  # run as a script: make the package `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.configurations import SEED
from bench.timing import Context

BATCH = 3  # copies per pass, gradsal's default
ROUNDS = 21

# (label, trace_and_fold keywords), each adding one part to the row before.
VARIANTS = (
    (
        "batch norms and symmetric paddings folded (the previous graph)",
        dict(asymmetric_pads=False, relu6=False, input_only=False),
    ),
    (
        "+ asymmetric paddings grown into the kernels",
        dict(asymmetric_pads=True, relu6=False, input_only=False),
    ),
    (
        "+ input-only pass (oneDNN forward, 1 x 1 input gradient as a matrix product)",
        dict(asymmetric_pads=True, relu6=False, input_only=True),
    ),
    (
        "+ ReLU6 fused into the convolution (gradsal's graph)",
        dict(asymmetric_pads=True, relu6=True, input_only=True),
    ),
)
# The C allocator's settings of the second process: freed blocks stay in the heap.
KEEP_FREED = {
    "MALLOC_MMAP_THRESHOLD_": str(2**31),
    "MALLOC_TRIM_THRESHOLD_": str(2**31),
}


def measure(indices: list[int], rounds: int) -> dict:
    """Milliseconds per copy, every round, of the variants at ``indices`` (interleaved)."""
    ctx = Context("cpu")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    xb = (
        ctx.x[None]
        + ctx.sigma * torch.randn((BATCH, *ctx.x.shape), generator=gen)
    ).contiguous(memory_format=torch.channels_last)
    graphs = {
        i: trace_and_fold(ctx.model, **VARIANTS[i][1]).module(
            channels_last=True
        )
        for i in indices
    }

    def gradient(graph):
        xr = xb.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(graph(xr)[:, ctx.target].sum(), xr)
        return g

    reference = gradient(graphs[indices[0]])
    diffs = {}
    for i, graph in graphs.items():
        g = gradient(graph)
        diffs[i] = float((g - reference).norm() / reference.norm())
    times: dict[int, list[float]] = {i: [] for i in indices}
    for r in range(rounds):
        order = indices[r % len(indices) :] + indices[: r % len(indices)]
        for i in order:
            t0 = time.perf_counter()
            gradient(graphs[i])
            times[i].append(1000 * (time.perf_counter() - t0) / BATCH)
    return {"times": times, "diffs": diffs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        indices = [int(i) for i in args.child.split(",")]
        print(json.dumps(measure(indices, args.rounds)))
        return 0

    load = os.getloadavg()[0]
    main_run = measure(list(range(len(VARIANTS))), args.rounds)
    last = len(VARIANTS) - 1
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            f"0,{last}",
            "--rounds",
            str(args.rounds),
        ],
        env={**os.environ, **KEEP_FREED},
        capture_output=True,
        text=True,
        check=True,
    )
    kept = json.loads(child.stdout.strip().splitlines()[-1])
    kept = {k: {int(i): v for i, v in kept[k].items()} for k in kept}

    def median(run: dict, i: int) -> float:
        return statistics.median(run["times"][i])

    base = median(main_run, 0)
    lines = [
        "| graph | allocator | ms per copy | range (ms) | time / previous graph | gradient off by (relative L2) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for i, (label, _) in enumerate(VARIANTS):
        t = main_run["times"][i]
        lines.append(
            f"| {label} | default | {median(main_run, i):.1f} | {min(t):.1f}-{max(t):.1f} | "
            f"{median(main_run, i) / base:.2f} | {main_run['diffs'][i]:.1e} |"
        )
    kept_base = median(kept, 0)
    for i in (0, last):
        t = kept["times"][i]
        lines.append(
            f"| {VARIANTS[i][0]} | freed memory kept | {median(kept, i):.1f} | "
            f"{min(t):.1f}-{max(t):.1f} | {median(kept, i) / kept_base:.2f} | "
            f"{kept['diffs'][i]:.1e} |"
        )
    lines += [
        "",
        f"Forward pass + input gradient, EfficientNet-Lite0, cat photo, batch {BATCH}, one thread "
        f"(as each of gradsal's two CPU workers runs it), channels-last, medians of {args.rounds} "
        "interleaved rounds; each row adds one part to the row above. Time / previous graph: "
        "over the first row of the same allocator. The last two rows ran in a second process "
        "whose C allocator keeps freed memory for reuse (`MALLOC_MMAP_THRESHOLD_` and "
        "`MALLOC_TRIM_THRESHOLD_` at 2 GiB) instead of handing it back to the system and "
        "faulting in fresh zeroed pages on the next allocation. "
        f"torch {torch.__version__}; load average (1 min) at start {load:.1f}. "
        "Produced by `python bench/gradient_pass.py`.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cpu_gradient_pass.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
