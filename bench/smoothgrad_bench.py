#!/usr/bin/env python
"""Time SmoothGrad implementations side by side (the book's appendix on performance).

One command runs everything and writes the tables the appendix includes::

    python bench/smoothgrad_bench.py --out bench/results

Setting: EfficientNet-Lite0 (``gradsal.load_model()``), the cat photo at 224 x 224,
N = 50 noisy copies, noise level 0.15, target = the predicted class. Rows:

* the starting material's loop (``../shared/seeds/001_*``), written again here: one
  copy per pass, model parameters requiring grad, ``model.zero_grad()`` and
  ``loss.backward()``;
* Captum ``NoiseTunnel(Saliency)`` with ``nt_samples=50``, at its default
  ``nt_samples_batch_size=None`` (all 50 copies in one batch) and at the best
  batch size of a sweep;
* ``gradsal.smoothgrad`` at its defaults, at its best setting from a sweep, and
  with ``precision="float32"`` (the model run exactly as given);
* the cost floor: the best time per copy of a bare forward pass plus input
  gradient (inputs drawn beforehand, nothing else), over batch sizes and thread
  arrangements, for the model as given and for gradsal's rewritten graph.

Timings: each configuration is warmed up once, then all configurations are run in
interleaved rounds (every round runs each configuration once, in a rotated
order), so slow drifts of a shared machine hit all of them alike; the table
reports medians. Peak memory is measured in a fresh subprocess per configuration:
on the CPU the process's peak resident set size (VmHWM) and its increase
over the resident size after the model was loaded; on a GPU
``torch.cuda.max_memory_allocated``. The device is chosen automatically (CUDA if
available) and the tables are written to ``<out>/<device>.md``,
``<out>/<device>_sweep.md``, ``<out>/<device>_ablation.md`` (CPU),
``<out>/<device>_profile.md`` and ``<out>/<device>.json``; then ``bench/alternatives.py``
writes ``<out>/<device>_alternatives.md`` (bfloat16 autocast, ``torch.compile``).

Options: ``--repeats R`` rounds for the final rows (default 5), ``--quick`` for a
short smoke run (fewer rounds and sweep points), ``--device cpu|cuda``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import gradsal
from gradsal import fastpath
from gradsal.gradients import _chunk_sizes

N_SAMPLES = 50
NOISE_LEVEL = 0.15
PHOTO = "cat"
SEED = 0

TARGETS = {"vs_seed": 3.0, "vs_captum_best": 1.8, "floor_ratio": 1.15, "peak_mb": 1200.0}


# ---------------------------------------------------------------------------
# context: model, photo, target


class Context:
    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.model = gradsal.load_model().to(self.device)
        self.x = gradsal.load_image(PHOTO).to(self.device)
        with torch.no_grad():
            self.target = int(self.model(self.x[None]).argmax(1))
        self.sigma = NOISE_LEVEL * float(self.x.max() - self.x.min())
        self._seed_model = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def seed_model(self) -> torch.nn.Module:
        # The starting material used a model whose parameters require grad (as
        # torchvision hands them out), so its backward also computes weight gradients.
        if self._seed_model is None:
            m = gradsal.load_model().to(self.device)
            for p in m.parameters():
                p.requires_grad_(True)
            self._seed_model = m
        return self._seed_model


# ---------------------------------------------------------------------------
# the methods; each factory returns a zero-argument callable doing one full run


def make_seed_loop(ctx: Context):
    model = ctx.seed_model()
    x = ctx.x[None]

    def run():
        model.eval()
        total = torch.zeros_like(x)
        for _ in range(N_SAMPLES):
            noisy = (x + torch.randn_like(x) * ctx.sigma).requires_grad_(True)
            out = model(noisy)
            model.zero_grad()
            out[0, ctx.target].backward()
            total += noisy.grad.abs()
        result = total / N_SAMPLES
        ctx.sync()
        return result[0]

    return run


def make_captum(ctx: Context, batch: int | None):
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(ctx.model))
    x = ctx.x[None]

    def run():
        result = nt.attribute(
            x, nt_type="smoothgrad", nt_samples=N_SAMPLES, nt_samples_batch_size=batch, stdevs=ctx.sigma,
            target=ctx.target,
        )
        ctx.sync()
        return result[0]

    return run


def make_gradsal(ctx: Context, batch: int | None, precision: str | None):
    kw = {} if precision is None else {"precision": precision}
    if batch is not None:
        kw["batch_size"] = batch

    def run():
        result = gradsal.smoothgrad(ctx.model, ctx.x, n_samples=N_SAMPLES, noise_level=NOISE_LEVEL, generator=SEED, **kw)
        ctx.sync()
        return result

    return run


def make_floor(ctx: Context, graph: str, arrangement: str, batch: int):
    """Forward + input gradient only, on inputs drawn beforehand."""
    cpu = ctx.device.type == "cpu"
    if graph == "folded":  # gradsal's graph: batch norms and paddings folded, channels-last on the CPU
        folded = fastpath.fold_for_gradients(ctx.model)
        model = folded.module(channels_last=cpu)
        fmt = torch.channels_last if cpu else torch.contiguous_format
    elif graph == "foldednchw":  # ablation: folded, default layout
        model = copy.deepcopy(fastpath.fold_for_gradients(ctx.model).module(channels_last=False))
        fmt = torch.contiguous_format
    elif graph == "cl":  # ablation: the model as given, channels-last
        model = copy.deepcopy(ctx.model).to(memory_format=torch.channels_last)
        fmt = torch.channels_last
    else:
        model, fmt = ctx.model, torch.contiguous_format
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    # The same chunks as gradsal (with workers: an even number, so neither idles at the end).
    sizes = _chunk_sizes(N_SAMPLES, batch, 2 if arrangement == "workers" else 1)
    chunks = [
        (ctx.x[None] + ctx.sigma * torch.randn((n, *ctx.x.shape), generator=gen).to(ctx.device)).contiguous(memory_format=fmt)
        for n in sizes
    ]
    targets = [torch.full((n,), ctx.target, device=ctx.device) for n in sizes]

    def grad(xb, t):
        xb = xb.detach().requires_grad_(True)
        logits = model(xb)
        (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xb)
        return g

    if arrangement == "intra":
        def run():
            out = [grad(c, t) for c, t in zip(chunks, targets)]
            ctx.sync()
            return out

        return run

    workers = min(2, torch.get_num_threads())
    per_worker = max(1, torch.get_num_threads() // workers)
    pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(per_worker,))

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(per_worker)
        try:
            return list(pool.map(grad, chunks, targets))
        finally:
            torch.set_num_threads(before)

    return run


def factory(ctx: Context, key: str):
    """``key`` names a configuration: seed | captum:<bs|None> | gradsal:<precision|default>:<bs|default>
    | floor:<plain|folded>:<intra|workers>:<bs>."""
    parts = key.split(":")
    if parts[0] == "seed":
        return make_seed_loop(ctx)
    if parts[0] == "captum":
        return make_captum(ctx, None if parts[1] == "None" else int(parts[1]))
    if parts[0] == "gradsal":
        precision = None if parts[1] == "default" else parts[1]
        batch = None if parts[2] == "default" else int(parts[2])
        return make_gradsal(ctx, batch, precision)
    if parts[0] == "floor":
        return make_floor(ctx, parts[1], parts[2], int(parts[3]))
    raise ValueError(f"unknown configuration {key!r}")


GRAPHS = {"plain": "model as given", "cl": "model as given, channels-last",
          "foldednchw": "BN and pads folded, default layout", "folded": "gradsal's rewritten graph"}


def describe(key: str) -> tuple[str, str]:
    """(method, setting) of a configuration key, short enough for a table. "batch" is
    Captum's ``nt_samples_batch_size`` and gradsal's ``batch_size``."""
    parts = key.split(":")
    if parts[0] == "seed":
        return "(a) starting material's loop", "batch 1, weight gradients"
    if parts[0] == "captum":
        batch = "None (all 50 at once)" if parts[1] == "None" else parts[1]
        return "(b) Captum NoiseTunnel(Saliency)", f"batch {batch}"
    if parts[0] == "gradsal":
        prec = parts[1] if parts[1] != "default" else "auto"
        bs = parts[2] if parts[2] != "default" else str(gradsal.DEFAULT_BATCH_SIZE)
        default = " (defaults)" if parts[1] == parts[2] == "default" else ""
        return "(c) gradsal.smoothgrad", f"{prec}, batch {bs}{default}"
    threads = "all threads" if parts[2] == "intra" else "2 workers"
    return f"floor: {GRAPHS[parts[1]]}", f"batch {parts[3]}, {threads}"


# ---------------------------------------------------------------------------
# timing and memory


def _others_running(samples: int = 10) -> float:
    """Runnable tasks on the machine besides this one (median of a few samples of /proc/loadavg)."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0.0
        time.sleep(0.2)
    return statistics.median(counts)


def wait_for_quiet(max_wait_s: float, log) -> None:
    """On a shared machine, wait (up to max_wait_s) until no other task is running."""
    if max_wait_s <= 0:
        return
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        if _others_running() < 1:
            return
    log(f"  machine still busy after waiting {max_wait_s:.0f}s; timing anyway")


def timed(ctx: Context, runners: dict, rounds: int, log, quiet_wait_s: float = 0.0) -> dict[str, list[float]]:
    """Warm up each runner, then time all of them in interleaved, rotated rounds."""
    keys = list(runners)
    for k in keys:
        runners[k]()
    times: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        wait_for_quiet(quiet_wait_s, log)
        order = keys[r % len(keys):] + keys[: r % len(keys)]
        for k in order:
            ctx.sync()
            c0, t0 = time.process_time(), time.perf_counter()
            runners[k]()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k}={times[k][-1]:.2f}s" for k in keys))
    return {k: {"wall_s": times[k], "cpu_s": cpu[k]} for k in keys}


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux: VmHWM, the high-water mark of
    this process's own address space (``ru_maxrss`` would report the parent's size
    too: the kernel carries it over fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def memory_child(key: str, device: str) -> dict:
    """Run one configuration once in this (fresh) process and report its memory."""
    ctx = Context(device)
    run = factory(ctx, key)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - before) / 2**20, "kind": "cuda_max_allocated"}
    baseline = _rss_mb()
    run()
    peak = _peak_rss_mb()
    return {"peak_mb": peak, "increase_mb": peak - baseline, "baseline_mb": baseline, "kind": "peak_rss"}


def memory(keys: list[str], device: str, log) -> dict[str, dict]:
    out = {}
    for k in keys:
        cmd = [sys.executable, __file__, "--memory-child", k, "--device", device, "--n-samples", str(N_SAMPLES)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log(f"  memory of {k} failed: {proc.stderr.strip().splitlines()[-1:]}")
            out[k] = {"peak_mb": float("nan")}
            continue
        out[k] = json.loads(proc.stdout.strip().splitlines()[-1])
        log(f"  memory {k}: {out[k]}")
    return out


def profile_table(ctx: Context, rows: int = 12) -> str:
    """Where the time of one copy goes: torch.profiler over gradsal's rewritten graph,
    one thread (as each worker runs), batch 3, forward + input gradient of N copies."""
    from torch.profiler import ProfilerActivity, profile

    before = torch.get_num_threads()
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        run = make_floor(ctx, "folded", "intra", gradsal.DEFAULT_BATCH_SIZE)
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    finally:
        torch.set_num_threads(before)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = ["| operator | share of time | calls per copy |", "|---|---:|---:|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / total:.1%} | {e.count / N_SAMPLES:.1f} |")
    rest = sum(e.self_cpu_time_total for e in events[rows:])
    lines.append(f"| everything else | {rest / total:.1%} | |")
    note = (f"\n\ntorch.profiler, self time per operator, one thread, batch {gradsal.DEFAULT_BATCH_SIZE}, forward and "
            "input gradient of gradsal's rewritten graph (`python bench/smoothgrad_bench.py`).")
    if ctx.device.type == "cpu":
        note += " " + _pointwise_efficiency(ctx, {e.key: e.self_cpu_time_total for e in events})
    return "\n".join(lines) + note + "\n"


def _pointwise_efficiency(ctx: Context, self_us: dict[str, float]) -> str:
    """How close the 1 x 1 convolutions come to the processor's matrix-product speed.

    With one thread and small batches torch runs 1 x 1 convolutions as plain matrix
    products (``_slow_conv2d_forward``/``_backward``); their FLOPs are counted from
    the layer shapes (forward plus input gradient: twice 2 Cin Cout H W per copy)
    and compared with a large single-thread ``torch.mm``.
    """
    graph = fastpath.fold_for_gradients(ctx.model).module(channels_last=True)
    flops = 0.0

    def count(mod, inp, out):
        nonlocal flops
        if mod.kernel_size == (1, 1) and mod.groups == 1:
            flops += 2 * 2 * mod.in_channels * mod.out_channels * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(count) for m in graph.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        graph(ctx.x[None].contiguous(memory_format=torch.channels_last))
    for h in handles:
        h.remove()
    seconds = (self_us.get("aten::_slow_conv2d_forward", 0.0) + self_us.get("aten::_slow_conv2d_backward", 0.0)) / 1e6
    if not seconds:
        return ""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        torch.mm(a, b)
        t0 = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        mm_gflops = 5 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9
    finally:
        torch.set_num_threads(before)
    pw_gflops = flops * N_SAMPLES / seconds / 1e9
    return (f"The 1 x 1 convolutions ({flops / 1e9:.2f} GFLOP per copy, forward and input gradient) ran at "
            f"{pw_gflops:.0f} GFLOP/s, {pw_gflops / mm_gflops:.0%} of a 1024 x 1024 single-thread matrix product "
            f"on this processor ({mm_gflops:.0f} GFLOP/s).")


# ---------------------------------------------------------------------------
# reporting


def environment(device: str) -> dict:
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gradsal": gradsal.__version__,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "native_bfloat16": fastpath.native_bfloat16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import captum

        env["captum"] = captum.__version__
    except ImportError:
        env["captum"] = None
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        env["cpu"] = platform.processor()
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    try:
        env["load_average_start"] = os.getloadavg()
    except OSError:
        pass
    return env


def med(v: list[float]) -> float:
    return statistics.median(v)


def sweep_table(sweep: dict, title: str) -> str:
    lines = [f"| {title} | setting | median, N = {N_SAMPLES} (s) | fastest (s) | per copy (ms) |",
             "|---|---|---:|---:|---:|"]
    for k, v in sweep.items():
        name, setting = describe(k)
        name = name.split(") ", 1)[-1]  # the sweep tables group one method each: no (a)/(b)/(c)
        per = med(v["wall_s"]) / N_SAMPLES * 1000
        lines.append(f"| {name} | {setting} | {med(v['wall_s']):.2f} | {min(v['wall_s']):.2f} | {per:.1f} |")
    return "\n".join(lines)


def main_table(rows: list[tuple[str, str]], final: dict, mem: dict, ref_key: str, device: str) -> str:
    ref = med(final[ref_key]["wall_s"])
    mem_head = "peak GPU memory (MB)" if device == "cuda" else "peak RSS (MB)"
    lines = [
        f"| method | setting | median (s) | range (s) | time / gradsal | {mem_head} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for _, k in rows:
        v = final[k]["wall_s"]
        m = mem.get(k, {})
        peak = m.get("peak_mb", float("nan"))
        extra = f" (+{m['increase_mb']:.0f})" if "increase_mb" in m else ""
        name, setting = describe(k)
        lines.append(f"| {name} | {setting} | {med(v):.2f} | {min(v):.2f}-{max(v):.2f} | {med(v) / ref:.2f} | "
                     f"{peak:.0f}{extra} |")
    return "\n".join(lines)


def render(out: Path, name: str, data: dict) -> str:
    """Write <name>.md, <name>_sweep.md, <name>_ablation.md and <name>.json from the
    measurements in ``data``; returns the main table. ``--render-only`` calls it on
    the saved JSON, so the tables can be re-laid out without timing again."""
    global N_SAMPLES
    N_SAMPLES = data["n_samples"]
    env, final, sweep, mem = data["environment"], data["final"], data["sweep"], data["memory"]
    unique_rows = [tuple(r) for r in data["rows"]]
    best = data["best"]
    captum_best, floor_plain, floor_folded = best["captum"], best["floor_plain"], best["floor_folded"]
    gpu = env["device"] == "cuda"
    rounds = len(final["gradsal:default:default"]["wall_s"])
    sweep_rounds = min(len(v["wall_s"]) for v in sweep.values())
    ref = "gradsal:default:default"
    t = {k: med(v["wall_s"]) for k, v in final.items()}
    floor_best = min(t[floor_plain], t[floor_folded])
    summary = {
        "speedup_vs_seed": t["seed"] / t[ref],
        "speedup_vs_captum_default": t["captum:None"] / t[ref],
        "speedup_vs_captum_best": t[captum_best] / t[ref],
        "ratio_to_floor": t[ref] / floor_best,
        "ratio_to_floor_model_as_given": t[ref] / t[floor_plain],
        "floor_per_copy_ms": floor_best / N_SAMPLES * 1000,
        "gradsal_peak_mb": mem.get(ref, {}).get("peak_mb"),
        "captum_best": captum_best,
        "gradsal_best": best["gradsal"],
    }
    data["summary"] = summary

    title = env.get("gpu") if gpu else env.get("cpu")
    load = ""
    if "load_average_start" in env:
        load = (f" Load average (1 min) at start {env['load_average_start'][0]:.1f}, at end "
                f"{env.get('load_average_end', [float('nan')])[0]:.1f}.")
    header = (
        f"EfficientNet-Lite0, {PHOTO} photo at 224 x 224, N = {N_SAMPLES}, noise level {NOISE_LEVEL}; "
        f"{title}, {env['cpu_count']} logical CPUs, torch {env['torch']} ({env['torch_threads']} threads), "
        f"captum {env['captum']}; medians of {rounds} interleaved rounds; {env['date']}.{load}"
    )
    mem_note = (
        "Peak memory: `torch.cuda.max_memory_allocated` during one run, in a fresh process."
        if gpu
        else "Peak RSS: the whole process's peak resident memory (VmHWM) during one run in a fresh process, "
        "model and libraries included; in brackets its increase over the resident size after loading the model. "
        "Batch: copies per pass (Captum's `nt_samples_batch_size`, gradsal's `batch_size`); the loop also "
        "computes weight gradients, as the starting material did. Floor: forward pass and input gradient only, "
        "on noisy copies drawn beforehand. Time / gradsal: each row's median over that of gradsal's defaults."
    )

    def ok(flag: bool) -> str:
        return "met" if flag else "**not met**"

    peak = summary["gradsal_peak_mb"]
    checks = [
        f"- gradsal default vs the starting material's loop: **{summary['speedup_vs_seed']:.2f}x** faster "
        f"(target >= {TARGETS['vs_seed']}x: {ok(summary['speedup_vs_seed'] >= TARGETS['vs_seed'])}).",
        f"- vs Captum at its default batch: **{summary['speedup_vs_captum_default']:.2f}x**; vs Captum at its best "
        f"batch ({describe(captum_best)[1]}): **{summary['speedup_vs_captum_best']:.2f}x** "
        f"(target >= {TARGETS['vs_captum_best']}x: {ok(summary['speedup_vs_captum_best'] >= TARGETS['vs_captum_best'])}).",
        f"- time per copy over the cost floor ({summary['floor_per_copy_ms']:.1f} ms per copy): "
        f"**{summary['ratio_to_floor']:.2f}** (target <= {TARGETS['floor_ratio']}: "
        f"{ok(summary['ratio_to_floor'] <= TARGETS['floor_ratio'])}); over the floor of the model as given: "
        f"{summary['ratio_to_floor_model_as_given']:.2f}.",
    ]
    if peak is not None:
        checks.append(f"- gradsal default peak memory: **{peak:.0f} MB** (target < {TARGETS['peak_mb']:.0f} MB: "
                      f"{ok(peak < TARGETS['peak_mb'])}).")
    md = "\n\n".join([
        header,
        main_table(unique_rows, final, mem, ref, env["device"]),
        mem_note + " Range: fastest to slowest round. Produced by `python bench/smoothgrad_bench.py`.",
        "\n".join(checks),
    ]) + "\n"
    (out / f"{name}.md").write_text(md)

    ablation = [f"floor:{g}:workers:3" for g in ("plain", "cl", "foldednchw", "folded")]
    ablation_md = ""
    if all(k in sweep for k in ablation):
        base = med(sweep[ablation[0]]["wall_s"])
        rows_md = ["| graph (2 workers, batch 3) | per copy (ms) | speed-up over the model as given |", "|---|---:|---:|"]
        for k in ablation:
            t_k = med(sweep[k]["wall_s"])
            rows_md.append(f"| {GRAPHS[k.split(':')[1]]} | {t_k / N_SAMPLES * 1000:.1f} | {base / t_k:.2f}x |")
        ablation_md = "\n".join(rows_md)
    if ablation_md:
        (out / f"{name}_ablation.md").write_text(
            ablation_md + f"\n\nForward + input gradient only, {sweep_rounds} interleaved round(s); from the sweep of "
            "`python bench/smoothgrad_bench.py`.\n")
    sweep_md = "\n\n".join([
        f"Sweep ({sweep_rounds} interleaved round(s) each; same setting as the main table). The best setting of "
        "each method is the one with the fastest round.",
        sweep_table({k: v for k, v in sweep.items() if k.startswith("captum")}, "Captum"),
        sweep_table({k: v for k, v in sweep.items() if k.startswith("gradsal")}, "gradsal"),
        sweep_table({k: v for k, v in sweep.items() if k.startswith("floor")}, "floor"),
    ]) + "\n"
    (out / f"{name}_sweep.md").write_text(sweep_md)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    global N_SAMPLES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results", help="folder for <device>.md, <device>_sweep.md, <device>.json")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds for the final rows")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, small sweeps")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                    help="on a shared machine, wait up to S seconds before each round until no other task runs")
    ap.add_argument("--profile-only", action="store_true", help="only write <out>/<device>_profile.md")
    ap.add_argument("--n-samples", type=int, default=N_SAMPLES, help="noisy copies (50; fewer only for smoke tests)")
    ap.add_argument("--render-only", action="store_true",
                    help="write the tables again from <out>/<device>.json, without timing anything")
    ap.add_argument("--no-alternatives", action="store_true", help="skip bench/alternatives.py (bfloat16, torch.compile)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    N_SAMPLES = args.n_samples

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, device)))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if args.render_only:
        data = json.loads((out / f"{device}.json").read_text())
        if "best" not in data:  # saved before the best settings were stored: they are in rows and summary
            floors = [k for role, k in data["rows"] if role == "floor"]
            data["best"] = {"captum": data["summary"]["captum_best"], "gradsal": data["summary"]["gradsal_best"],
                            "floor_plain": floors[0], "floor_folded": floors[-1]}
        print(render(out, device, data))
        return 0

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    env = environment(device)
    log(f"environment: {env}")
    ctx = Context(device)
    if args.profile_only:
        (out / f"{device}_profile.md").write_text(profile_table(ctx))
        log(f"wrote {out / (device + '_profile.md')}")
        return 0
    gpu = device == "cuda"
    rounds = 2 if args.quick else args.repeats
    sweep_rounds = 1 if args.quick else max(2, rounds // 2)

    # Phase 1: sweeps, to find each method's best setting.
    precisions = ["auto", "float32"]
    if gpu or fastpath.native_bfloat16():
        precisions.append("bfloat16")  # emulated bfloat16 is ~15x slower: not worth timing
    if gpu:
        captum_bs = ["10", "25", "None"]
        gradsal_bs = {p: [5, 10, 25, 50] for p in precisions}
        floor_bs = {("plain", "intra"): [5, 10, 25, 50], ("folded", "intra"): [5, 10, 25, 50]}
    elif args.quick:
        captum_bs = ["5", "None"]
        gradsal_bs = {"auto": [3, 5], "float32": [5]}
        floor_bs = {("plain", "intra"): [5], ("folded", "workers"): [3, 5]}
    else:
        captum_bs = ["1", "5", "10", "25", "None"]
        gradsal_bs = {p: [2, 3, 4, 5, 8] if p == "auto" else [3, 5] for p in precisions}
        floor_bs = {
            ("plain", "intra"): [3, 5, 10],
            ("plain", "workers"): [3],
            ("folded", "intra"): [5],
            ("folded", "workers"): [2, 3, 4, 5],
            ("cl", "workers"): [3],  # ablation: what layout and folding each give
            ("foldednchw", "workers"): [3],
        }
    sweep_keys = [f"captum:{b}" for b in captum_bs]
    sweep_keys += [f"gradsal:{p}:{b}" for p, bs in gradsal_bs.items() for b in bs]
    sweep_keys += [f"floor:{g}:{a}:{b}" for (g, a), bs in floor_bs.items() for b in bs]
    log(f"sweep: {len(sweep_keys)} configurations x {sweep_rounds} rounds")
    sweep = timed(ctx, {k: factory(ctx, k) for k in sweep_keys}, sweep_rounds, log, args.quiet_wait)

    def best(prefix: str) -> str:
        # The fastest round, not the median, picks the best setting: with few sweep
        # rounds a burst of load on a shared machine would otherwise decide.
        cands = [k for k in sweep if k.startswith(prefix)]
        if not cands:
            raise SystemExit(f"no sweep configuration starts with {prefix!r}")
        return min(cands, key=lambda k: min(sweep[k]["wall_s"]))

    captum_best = best("captum:")
    gradsal_best = best("gradsal:")
    floor_plain, floor_folded = best("floor:plain:"), best("floor:folded:")

    # Phase 2: the final rows, interleaved, more rounds.
    rows = [
        ("a", "seed"),
        ("b", "captum:None"),
        ("b", captum_best),
        ("c", "gradsal:default:default"),
        ("c", gradsal_best),
        ("c", f"gradsal:float32:default"),
        ("floor", floor_plain),
        ("floor", floor_folded),
    ]
    seen, unique_rows = set(), []
    for role, k in rows:
        if k not in seen:
            seen.add(k)
            unique_rows.append((role, k))
    final_keys = [k for _, k in unique_rows]
    log(f"final: {final_keys} x {rounds} rounds")
    final = timed(ctx, {k: factory(ctx, k) for k in final_keys}, rounds, log, args.quiet_wait)
    mem = {} if args.no_memory else memory(final_keys, device, log)
    if not args.quick:
        log("profile")
        (out / f"{device}_profile.md").write_text(profile_table(ctx))

    try:
        env["load_average_end"] = os.getloadavg()
    except OSError:
        pass
    env["total_s"] = round(time.perf_counter() - t_start, 1)

    data = {"environment": env, "n_samples": N_SAMPLES, "noise_level": NOISE_LEVEL, "photo": PHOTO,
            "rows": unique_rows, "final": final, "sweep": sweep, "memory": mem,
            "best": {"captum": captum_best, "gradsal": gradsal_best, "floor_plain": floor_plain,
                     "floor_folded": floor_folded}}
    md = render(out, device, data)
    log(f"wrote {out / (device + '.md')}, {out / (device + '_sweep.md')}, {out / (device + '.json')}")
    print(md)
    if not (args.quick or args.no_alternatives):
        # What was tried and left out, in a fresh process (torch.compile changes global state).
        script = Path(__file__).with_name("alternatives.py")
        return subprocess.call([sys.executable, str(script), "--out", str(out), "--device", device])
    return 0


if __name__ == "__main__":
    sys.exit(main())
