#!/usr/bin/env python
"""Time the wider family and SmoothGrad to a tolerance against Captum (the appendix on performance).

One command measures everything and writes the tables the appendix includes::

    python bench/family_bench.py --out bench/results

The setting is that of ``bench/smoothgrad_bench.py`` (EfficientNet-Lite0, the
cat photo at 224 x 224, noise level 0.15, the predicted class). Four parts, each
short enough to run on its own (``--only PART``, repeatable; the others keep
their saved results):

* ``single``: one gradient pass of the family, ``gradsal.vanilla_gradient``,
  ``guided_backprop`` and ``grad_cam``, and Captum's ``Saliency``,
  ``GuidedBackprop`` and ``LayerGradCam``, on the cat and on the book's seven
  photos as one batch;
* ``ig``: ``gradsal.integrated_gradients`` (n_steps = 50) against Captum's
  ``IntegratedGradients`` at every ``internal_batch_size`` of a sweep, both with
  Gauss-Legendre nodes, and how far their maps differ;
* ``sgig``: SmoothGrad of IG (10 noisy copies of 10 path points each, 100
  passes) against Captum's ``NoiseTunnel(IntegratedGradients)`` at equal passes;
* ``converged``: ``gradsal.smoothgrad_to_tolerance`` at a 5 % tolerance on three
  photos against Captum's ``NoiseTunnel(Saliency)`` with ``nt_samples`` set to
  the N gradsal needed (and to the guesses 50 and 100).

All configurations of a part are timed in interleaved rounds (medians reported,
:func:`bench.timing.interleaved`); peak memory of the IG rows is measured in fresh
processes. Writes ``<out>/<device>_family.md``, ``<out>/<device>_converged.md``
and ``<out>/<device>_family.json``; ``--render-only`` writes the tables again
from the JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/family_bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import gradsal
from bench import timing
from bench.configurations import NOISE_LEVEL, PHOTO, SEED, Floor
from bench.report import med, memory_cell
from gradsal.engine import DEFAULT_BATCH_SIZE
from gradsal.maps import rank_correlation
from gradsal.methods import default_cam_layer, noise_sigma

PARTS = ("single", "ig", "sgig", "converged")
IG_STEPS = 50
CAPTUM_IG_BATCHES = (1, 5, 10, 25, 50, None)
# SmoothGrad of IG: copies x path points = gradient passes.
SGIG_COPIES, SGIG_STEPS = 10, 10
# Captum's (nt_samples_batch_size, internal_batch_size): its IG splits each batch of
# noisy copies into passes of internal_batch_size // copies path points per copy.
CAPTUM_SGIG_BATCHES = ((1, 5), (1, 10), (2, 10), (5, 25))
TOLERANCE = 0.05
CONVERGED_PHOTOS = ("cat", "coffee", "rocket")
CAPTUM_GUESSES = (50, 100)
CAPTUM_NT_BATCHES = (5, 10, 25)
ROUNDS = {"single": 15, "ig": 5, "sgig": 4, "converged": 3}

Runner = Callable[[], object]


class Setting(timing.Context):
    """:class:`bench.timing.Context` plus the book's seven photos as one batch and their classes."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.names = gradsal.photo_names()
        self.batch = torch.stack(
            [gradsal.load_image(p) for p in self.names]
        ).to(self.device)
        with torch.no_grad():
            self.targets = self.model(self.batch).argmax(1)
        self.layer = default_cam_layer(self.model)

    def photo(self, name: str) -> tuple[torch.Tensor, int]:
        i = self.names.index(name)
        return self.batch[i], int(self.targets[i])


# ---------------------------------------------------------------------------
# the runs, by key


def _single(s: Setting, method: str, size: int) -> Runner:
    from captum.attr import (
        GuidedBackprop,
        LayerAttribution,
        LayerGradCam,
        Saliency,
    )

    x = s.x[None] if size == 1 else s.batch
    t = torch.tensor([s.target], device=s.device) if size == 1 else s.targets
    if method.startswith("gradsal-"):
        f = {
            "gradsal-vg": gradsal.vanilla_gradient,
            "gradsal-gb": gradsal.guided_backprop,
            "gradsal-gc": gradsal.grad_cam,
        }[method]
        return lambda: f(s.model, x, t)
    if method == "captum-gc":
        lgc = LayerGradCam(s.model, s.layer)

        def run():
            raw = lgc.attribute(x, target=t, relu_attributions=True)
            return LayerAttribution.interpolate(raw, x.shape[-2:], "bilinear")

        return run
    if method == "captum-vg":
        sal = Saliency(s.model)
        return lambda: sal.attribute(x, target=t, abs=False)
    gb = GuidedBackprop(s.model)
    return lambda: gb.attribute(x, target=t)


def _ig(s: Setting, which: str) -> Runner:
    if which == "floor":
        # forward + input gradient of 50 inputs, as the engine runs them
        return timing.floor(s, Floor("folded", "workers", DEFAULT_BATCH_SIZE))
    if which in ("auto", "float32"):
        return lambda: gradsal.integrated_gradients(
            s.model, s.x, s.target, n_steps=IG_STEPS, precision=which
        )
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(s.model)
    batch = None if which == "None" else int(which)
    return lambda: ig.attribute(
        s.x[None], target=s.target, n_steps=IG_STEPS, internal_batch_size=batch
    )[0]


def _sgig(s: Setting, which: str) -> Runner:
    if which == "gradsal":
        method = functools.partial(
            gradsal.integrated_gradients, n_steps=SGIG_STEPS
        )
        # mode "signed": Captum's smoothgrad averages the signed attributions
        return lambda: gradsal.smoothgrad(
            s.model,
            s.x,
            s.target,
            method=method,
            n_samples=SGIG_COPIES,
            noise_level=NOISE_LEVEL,
            mode="signed",
            generator=SEED,
        )
    from captum.attr import IntegratedGradients, NoiseTunnel

    nt = NoiseTunnel(IntegratedGradients(s.model))
    nt_batch, internal = (int(v) for v in which.split("x"))
    return lambda: nt.attribute(
        s.x[None],
        nt_type="smoothgrad",
        nt_samples=SGIG_COPIES,
        nt_samples_batch_size=nt_batch,
        stdevs=s.sigma,
        target=s.target,
        n_steps=SGIG_STEPS,
        internal_batch_size=internal,
    )[0]


def _converged(s: Setting, how: str, photo: str, n: int, batch: int) -> Runner:
    x, t = s.photo(photo)
    if how == "tolerance":
        return lambda: gradsal.smoothgrad_to_tolerance(
            s.model,
            x,
            t,
            tolerance=TOLERANCE,
            noise_level=NOISE_LEVEL,
            generator=SEED,
        )
    if how == "fixed":
        return lambda: gradsal.smoothgrad(
            s.model, x, t, n_samples=n, noise_level=NOISE_LEVEL, generator=SEED
        )
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(s.model))
    sigma = noise_sigma(x, NOISE_LEVEL)
    return lambda: nt.attribute(
        x[None],
        nt_type="smoothgrad",
        nt_samples=n,
        nt_samples_batch_size=batch,
        stdevs=sigma,
        target=t,
    )[0]


def runner(s: Setting, key: str) -> Runner:
    """A zero-argument callable that does the run ``key`` names (see :func:`describe`)."""
    part, *args = key.split(":")
    if part == "single":
        return _single(s, args[0], int(args[1]))
    if part == "ig":
        return _ig(s, args[0])
    if part == "sgig":
        return _sgig(s, args[0])
    if part == "converged":
        how, photo, n, batch = args
        return _converged(s, how, photo, int(n), int(batch))
    raise ValueError(f"unknown configuration {key!r}")


SINGLE_NAMES = {
    "gradsal-vg": "gradsal.vanilla_gradient",
    "gradsal-gb": "gradsal.guided_backprop",
    "gradsal-gc": "gradsal.grad_cam",
    "captum-vg": "Captum Saliency (abs=False)",
    "captum-gb": "Captum GuidedBackprop",
    "captum-gc": "Captum LayerGradCam (+ interpolate)",
}


def describe(key: str) -> tuple[str, str]:
    """(method, setting) of a key, for the tables."""
    part, *args = key.split(":")
    if part == "single":
        images = "cat" if args[1] == "1" else f"{args[1]} photos, one batch"
        return SINGLE_NAMES[args[0]], images
    if part == "ig":
        if args[0] == "floor":
            return (
                "floor: gradsal's rewritten graph",
                "forward + input gradient only, batch 3, 2 workers",
            )
        if args[0] in ("auto", "float32"):
            default = " (default)" if args[0] == "auto" else ""
            return (
                "gradsal.integrated_gradients",
                f"precision {args[0]}{default}, batch 3",
            )
        size = "None (all 50 at once)" if args[0] == "None" else args[0]
        return "Captum IntegratedGradients", f"internal_batch_size {size}"
    if part == "sgig":
        if args[0] == "gradsal":
            return (
                "gradsal.smoothgrad(method=partial(integrated_gradients))",
                "defaults, batch 3",
            )
        nt_batch, internal = args[0].split("x")
        return (
            "Captum NoiseTunnel(IntegratedGradients)",
            f"nt_samples_batch_size {nt_batch}, internal_batch_size {internal}",
        )
    raise ValueError(f"unknown configuration {key!r}")


# ---------------------------------------------------------------------------
# the parts


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """How far two maps of the same thing differ: largest and root-mean-square
    difference over Captum's largest value and RMS, and the rank correlation of
    the displayed maps (channel maximum of |map|)."""
    a, b = ours.detach().double().cpu(), theirs.detach().double().cpu()
    d = a - b
    return {
        "max": float(d.abs().max() / b.abs().max()),
        "rms": float(d.norm() / b.norm()),
        "spearman": float(rank_correlation(a.abs().amax(0), b.abs().amax(0))),
    }


def measure_single(s: Setting, log, rounds: int) -> dict:
    keys = [
        f"single:{m}:{size}"
        for size in (1, len(s.names))
        for m in SINGLE_NAMES
    ]
    times = timing.interleaved(
        {k: runner(s, k) for k in keys}, rounds, log, sync=s.sync
    )
    return {"keys": keys, "times": times, "batch": len(s.names)}


def measure_ig(s: Setting, log, rounds: int, memory: bool) -> dict:
    captum = [f"ig:{b}" for b in CAPTUM_IG_BATCHES]
    keys = ["ig:auto", "ig:float32", *captum, "ig:floor"]
    theirs = runner(s, "ig:10")()
    agree = {
        p: agreement(runner(s, f"ig:{p}")(), theirs)
        for p in ("auto", "float32")
    }
    times = timing.interleaved(
        {k: runner(s, k) for k in keys}, rounds, log, sync=s.sync
    )
    best = min(captum, key=lambda k: _med(times, k))
    mem = {}
    if memory:
        mem = timing.memory(
            dict.fromkeys(["ig:auto", best, "ig:None"]),
            s.device.type,
            1,
            log,
            command=Path(__file__),
        )
    return {
        "keys": keys,
        "times": times,
        "best_captum": best,
        "memory": mem,
        "agreement": agree,
    }


def measure_sgig(s: Setting, log, rounds: int) -> dict:
    keys = ["sgig:gradsal"] + [f"sgig:{a}x{b}" for a, b in CAPTUM_SGIG_BATCHES]
    times = timing.interleaved(
        {k: runner(s, k) for k in keys}, rounds, log, sync=s.sync
    )
    best = min(keys[1:], key=lambda k: _med(times, k))
    return {"keys": keys, "times": times, "best_captum": best}


def measure_converged(s: Setting, log, rounds: int) -> dict:
    found = {}
    for photo in CONVERGED_PHOTOS:
        r = runner(s, f"converged:tolerance:{photo}:0:0")()
        found[photo] = {
            "n_samples": r.n_samples,
            "relative_error": r.relative_error,
        }
        log(f"  {photo}: N = {r.n_samples}, error {r.relative_error:.4f}")
    # Captum's best nt_samples_batch_size, on the cat at N = 50, in the same rounds.
    keys = [f"converged:captum:{PHOTO}:50:{b}" for b in CAPTUM_NT_BATCHES]
    sweep = timing.interleaved(
        {k: runner(s, k) for k in keys}, rounds, log, sync=s.sync
    )
    fastest = min(keys, key=lambda k: _med(sweep, k))
    batch = int(fastest.split(":")[-1])
    keys = []
    for photo in CONVERGED_PHOTOS:
        n = found[photo]["n_samples"]
        keys += [
            f"converged:tolerance:{photo}:0:0",
            f"converged:fixed:{photo}:{n}:0",
            f"converged:captum:{photo}:{n}:{batch}",
        ]
        keys += [
            f"converged:captum:{photo}:{g}:{batch}"
            for g in CAPTUM_GUESSES
            if g != n
        ]
    times = timing.interleaved(
        {k: runner(s, k) for k in dict.fromkeys(keys)},
        rounds,
        log,
        sync=s.sync,
    )
    return {
        "found": found,
        "captum_batch": batch,
        "sweep": sweep,
        "times": times,
        "tolerance": TOLERANCE,
    }


# ---------------------------------------------------------------------------
# the tables


def _med(times: Mapping, key: str) -> float:
    return med(times[key]["wall_s"])


def _header(env: Mapping, what: str) -> str:
    title = env.get("gpu") if env["device"] == "cuda" else env.get("cpu")
    load = ""
    if "load_average_start" in env:
        load = (
            f" Load average (1 min) at start {env['load_average_start'][0]:.1f}, "
            f"at end {env.get('load_average_end', [float('nan')])[0]:.1f}."
        )
    return (
        f"{what}; {title}, {env['cpu_count']} logical CPUs, torch {env['torch']} "
        f"({env['torch_threads']} threads), captum {env['captum']}; {env['date']}.{load}"
    )


def single_table(d: Mapping) -> str:
    t, rounds = d["times"], len(next(iter(d["times"].values()))["wall_s"])
    lines = [
        "| method | images | median (ms) | range (ms) | time / vanilla gradient |",
        "|---|---|---:|---:|---:|",
    ]
    for k in d["keys"]:
        size = k.split(":")[-1]
        ref = _med(t, f"single:gradsal-vg:{size}")
        name, images = describe(k)
        v = t[k]["wall_s"]
        lines.append(
            f"| {name} | {images} | {_med(t, k) * 1e3:.1f} | {min(v) * 1e3:.1f}-{max(v) * 1e3:.1f} "
            f"| {_med(t, k) / ref:.2f} |"
        )
    return (
        "\n".join(lines)
        + f"\n\nOne gradient pass per image (Grad-CAM: a forward pass and the gradient down to "
        f"`_conv_head`); medians of {rounds} interleaved rounds, range fastest to slowest. "
        "Time / vanilla gradient: over gradsal's vanilla gradient of the same images.\n"
    )


def _timing_rows(d: Mapping, ref: float, memory: Mapping | None = None) -> str:
    """The rows of a table of wall times: method, setting, median, range, time over
    ``ref``, and peak memory where ``memory`` is given; Captum's best setting marked."""
    mem_head = " peak RSS (MB) |" if memory is not None else ""
    lines = [
        f"| method | setting | median (s) | range (s) | time / gradsal |{mem_head}",
        "|---|---|---:|---:|---:|" + ("---:|" if memory is not None else ""),
    ]
    for k in d["keys"]:
        name, setting = describe(k)
        if k == d["best_captum"]:
            setting += " (best)"
        v = d["times"][k]["wall_s"]
        row = (
            f"| {name} | {setting} | {med(v):.2f} | {min(v):.2f}-{max(v):.2f} "
            f"| {med(v) / ref:.2f} |"
        )
        if memory is not None:
            row += f" {memory_cell(memory.get(k))} |"
        lines.append(row)
    return "\n".join(lines)


def ig_table(d: Mapping) -> str:
    t = d["times"]
    rounds = len(t["ig:auto"]["wall_s"])
    ref = _med(t, "ig:auto")
    best = d["best_captum"]
    return (
        _timing_rows(d, ref, d.get("memory", {}))
        + f"\n\nIntegrated Gradients of the cat, n_steps = {IG_STEPS}, Gauss-Legendre nodes, black "
        f"baseline; medians of {rounds} interleaved rounds. Peak RSS as in the SmoothGrad table, "
        "in a fresh process. Floor: forward pass and input gradient only of 50 inputs made "
        "beforehand, as gradsal's engine runs them. "
        + _agreement_note(d["agreement"])
        + "\n\n"
        f"- Captum's best `internal_batch_size` ({best.split(':')[1]}) over gradsal's defaults: "
        f"**{_med(t, best) / ref:.2f}x**; Captum's default (None) over gradsal's: "
        f"{_med(t, 'ig:None') / ref:.2f}x.\n"
        f"- gradsal per path point: {ref / IG_STEPS * 1e3:.1f} ms; with precision float32 "
        f"(the model as given): {_med(t, 'ig:float32') / IG_STEPS * 1e3:.1f} ms; "
        f"gradsal over its floor: {ref / _med(t, 'ig:floor'):.2f}.\n"
    )


def _agreement_note(agree: Mapping) -> str:
    parts = [
        f"precision {p}: largest difference {a['max']:.1e} and RMS difference "
        f"{a['rms']:.1e} of Captum's, rank correlation of the displayed maps "
        f"{a['spearman']:.5f}"
        for p, a in agree.items()
    ]
    return (
        "gradsal's map against Captum's (internal_batch_size 10), "
        + "; ".join(parts)
        + "."
    )


def sgig_table(d: Mapping) -> str:
    t = d["times"]
    rounds = len(t["sgig:gradsal"]["wall_s"])
    ref = _med(t, "sgig:gradsal")
    passes = SGIG_COPIES * SGIG_STEPS
    return (
        _timing_rows(d, ref)
        + f"\n\nSmoothGrad of Integrated Gradients on the cat: {SGIG_COPIES} noisy copies (noise level "
        f"{NOISE_LEVEL}) of {SGIG_STEPS} Gauss-Legendre path points each, {passes} gradient passes for "
        f'both libraries, signed mean (Captum\'s `nt_type="smoothgrad"`); medians of {rounds} '
        f"interleaved rounds.\n\n- Captum's best setting over gradsal's: "
        f"**{_med(t, d['best_captum']) / ref:.2f}x**; gradsal per pass: {ref / passes * 1e3:.1f} ms.\n"
    )


def converged_table(d: Mapping) -> str:
    t, batch = d["times"], d["captum_batch"]
    rounds = len(next(iter(t.values()))["wall_s"])
    guesses = " | ".join(f"Captum, N = {g} (s)" for g in CAPTUM_GUESSES)
    lines = [
        f"| photo | N needed | error reached | gradsal to tolerance (s) | gradsal.smoothgrad at N (s) "
        f"| Captum at N (s) | Captum at N / gradsal | {guesses} |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CAPTUM_GUESSES),
    ]
    for photo, f in d["found"].items():
        n = f["n_samples"]
        tol = _med(t, f"converged:tolerance:{photo}:0:0")
        captum = _med(t, f"converged:captum:{photo}:{n}:{batch}")
        cells = []
        for g in CAPTUM_GUESSES:
            tg = _med(t, f"converged:captum:{photo}:{g}:{batch}")
            # the 1/sqrt(N) law of chapter 04 from the error gradsal reached at n
            err = f["relative_error"] * math.sqrt(n / g)
            cells.append(f"{tg:.2f} ({tg / tol:.2f}x, {err:.1%})")
        lines.append(
            f"| {photo} | {n} | {f['relative_error']:.1%} | {tol:.2f} "
            f"| {_med(t, f'converged:fixed:{photo}:{n}:0'):.2f} | {captum:.2f} | {captum / tol:.2f}x | "
            + " | ".join(cells)
            + " |"
        )
    sweep = ", ".join(
        f"{b}: {_med(d['sweep'], f'converged:captum:{PHOTO}:50:{b}'):.2f} s"
        for b in CAPTUM_NT_BATCHES
    )
    return (
        "\n".join(lines)
        + f"\n\n`gradsal.smoothgrad_to_tolerance(tolerance={d['tolerance']})` (checks every 8 copies, "
        f"noise level {NOISE_LEVEL}, seed {SEED}) against Captum's `NoiseTunnel(Saliency)` with "
        f"`nt_samples` = the N gradsal needed, at its best `nt_samples_batch_size` ({batch}; on the "
        f"cat at N = 50: {sweep}), and at the guesses N = 50 and 100 (in brackets: over gradsal's "
        "time to tolerance, and the error that N reaches by the 1/N law of the variance, "
        "chapter 04). gradsal.smoothgrad at N: the same N without the stopping rule. Error "
        "reached: the estimated relative standard error of the displayed map. Medians of "
        f"{rounds} interleaved rounds.\n"
    )


WHAT = "EfficientNet-Lite0, 224 x 224, predicted class"


def render(out: Path, name: str, data: dict) -> str:
    """Write ``<name>_family.md`` (single, ig, sgig) and ``<name>_converged.md`` from ``data``
    (each table under the machine line of the run that measured it); return the first."""
    env, parts = data["environment"], data["parts"]
    tables = {"single": single_table, "ig": ig_table, "sgig": sgig_table}
    sections = [
        _header(env[p], WHAT) + "\n\n" + table(parts[p])
        for p, table in tables.items()
        if p in parts
    ]
    md = (
        "\n".join(sections) + "\nProduced by `python bench/family_bench.py`.\n"
    )
    (out / f"{name}_family.md").write_text(md)
    if "converged" in parts:
        (out / f"{name}_converged.md").write_text(
            _header(env["converged"], WHAT)
            + "\n\n"
            + converged_table(parts["converged"])
            + "\nProduced by `python bench/family_bench.py`.\n"
        )
    return md


# ---------------------------------------------------------------------------
# the command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="measure only this part (repeatable)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds (default per part)",
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-samples", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # Captum warns on every call that it set requires_grad on the input.
    warnings.filterwarnings("ignore", module="captum")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.memory_child:
        s = Setting(device)
        print(
            json.dumps(
                timing.peak_memory(runner(s, args.memory_child), s.device)
            )
        )
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{device}_family.json"
    data = (
        json.loads(path.read_text())
        if path.exists()
        else {"environment": {}, "parts": {}}
    )
    if not args.render_only:
        t_start = time.perf_counter()

        def log(msg: str) -> None:
            print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

        s = Setting(device)
        for part in args.only or PARTS:
            env = timing.environment(device)
            log(f"{part}: {env}")
            rounds = args.rounds or ROUNDS[part]
            t0 = time.perf_counter()
            if part == "single":
                result = measure_single(s, log, rounds)
            elif part == "ig":
                result = measure_ig(s, log, rounds, not args.no_memory)
            elif part == "sgig":
                result = measure_sgig(s, log, rounds)
            else:
                result = measure_converged(s, log, rounds)
            data["parts"][part] = result
            data["environment"][part] = timing.finish_environment(
                env, time.perf_counter() - t0
            )
            path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(render(args.out, device, data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
