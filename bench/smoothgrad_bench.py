#!/usr/bin/env python
"""Time SmoothGrad implementations side by side (the book's appendix on performance).

One command runs everything and writes the tables the appendix includes::

    python bench/smoothgrad_bench.py --out bench/results

Setting: EfficientNet-Lite0 (``gradsal.load_model()``), the cat photo at 224 x 224,
N = 50 noisy copies, noise level 0.15, target = the predicted class. Rows: the
starting material's loop (``../shared/seeds/001_*``, written again), Captum
``NoiseTunnel(Saliency)`` at its default batch and at its best, ``gradsal.smoothgrad``
at its defaults, at its best and with ``precision="float32"``, and the cost floor
(forward pass + input gradient only) of the model as given and of gradsal's
rewritten graph. First a sweep finds each method's best setting, then the final
rows are timed in interleaved rounds (medians reported) and their peak memory is
measured in fresh processes.

The device is chosen automatically (CUDA if available); the tables go to
``<out>/<device>.md``, ``<out>/<device>_sweep.md``, ``<out>/<device>_ablation.md``
(CPU), ``<out>/<device>_profile.md`` and ``<out>/<device>.json``; then
``bench/alternatives.py`` writes ``<out>/<device>_alternatives.md`` (bfloat16
autocast, ``torch.compile``) and, on the CPU, ``bench/gradient_pass.py`` writes
``<out>/cpu_gradient_pass.md`` (the parts of the rewritten gradient pass, one at a
time). ``--render-only`` writes the tables again from the saved JSON.

The pieces, in ``bench/``: ``configurations.py`` (what is timed, the options),
``timing.py`` (the runs, rounds, memory, profile), ``report.py`` (summary and tables).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

if (
    __package__ in (None, "")
):  # run as `python bench/smoothgrad_bench.py`: make the package `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import configurations, report, timing
from bench.configurations import Settings


def measure(settings: Settings, log: timing.Log) -> dict:
    """Sweep, pick each method's best setting, time the final rows, measure their memory:
    the data that ``report.render`` lays out (and ``<device>.json`` saves)."""
    t_start = time.perf_counter()
    env = timing.environment(settings.device)
    log(f"environment: {env}")
    ctx = timing.Context(settings.device, settings.n_samples)

    cases = configurations.sweep_cases(
        settings.device, settings.quick, env["native_bfloat16"]
    )
    log(f"sweep: {len(cases)} configurations x {settings.sweep_rounds} rounds")
    sweep = timing.timed(
        ctx, cases, settings.sweep_rounds, log, settings.quiet_wait_s
    )
    best = report.best_settings(sweep)

    rows = configurations.final_rows(best)
    keys = [k for _, k in rows]
    log(f"final: {keys} x {settings.rounds} rounds")
    final = timing.timed(
        ctx,
        map(configurations.parse_case, keys),
        settings.rounds,
        log,
        settings.quiet_wait_s,
    )
    mem = (
        timing.memory(keys, settings.device, settings.n_samples, log)
        if settings.memory
        else {}
    )
    if settings.profile:
        log("profile")
        write_profile(settings, ctx)

    timing.finish_environment(env, time.perf_counter() - t_start)
    return {
        "environment": env,
        "n_samples": settings.n_samples,
        "noise_level": configurations.NOISE_LEVEL,
        "photo": configurations.PHOTO,
        "rows": rows,
        "final": final,
        "sweep": sweep,
        "memory": mem,
        "best": best,
    }


def write_profile(settings: Settings, ctx: timing.Context) -> Path:
    path = settings.out / f"{settings.device}_profile.md"
    path.write_text(report.profile_table(timing.profile(ctx)))
    return path


def main(argv: list[str] | None = None) -> int:
    settings = configurations.parse_args(
        argv, description=__doc__.split("\n\n")[0]
    )
    if settings.memory_child is not None:
        print(
            json.dumps(
                timing.memory_child(
                    settings.memory_child, settings.device, settings.n_samples
                )
            )
        )
        return 0

    settings.out.mkdir(parents=True, exist_ok=True)
    if settings.render_only:
        print(
            report.render(
                settings.out,
                settings.device,
                report.load(settings.out, settings.device),
            )
        )
        return 0

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    if settings.profile_only:
        log(
            f"wrote {write_profile(settings, timing.Context(settings.device, settings.n_samples))}"
        )
        return 0
    md = report.render(settings.out, settings.device, measure(settings, log))
    name = settings.out / settings.device
    log(f"wrote {name}.md, {name}_sweep.md, {name}.json")
    print(md)
    if settings.run_alternatives:
        # What was tried and left out, in a fresh process (torch.compile changes global state).
        script = Path(__file__).with_name("alternatives.py")
        rc = subprocess.call(
            [
                sys.executable,
                str(script),
                "--out",
                str(settings.out),
                "--device",
                settings.device,
            ]
        )
        if rc or settings.device != "cpu":
            return rc
        # The parts of the rewritten gradient pass, one at a time (CPU only).
        script = Path(__file__).with_name("gradient_pass.py")
        return subprocess.call(
            [sys.executable, str(script), "--out", str(settings.out)]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
