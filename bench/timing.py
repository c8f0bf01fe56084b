"""The measurements: each configuration run, timed in interleaved rounds, its peak memory, a profile.

:class:`Context` loads the setting (model, photo, predicted class, noise scale) on a
device; :func:`runner` makes, for a configuration of :mod:`bench.configurations`,
a zero-argument callable that does one full run. :func:`timed` warms every runner
up once, then times all of them in rounds, each round running every configuration
once in a rotated order, so slow drifts of a shared machine hit all of them alike.
:func:`memory` measures each configuration in a fresh process (on the CPU the
process's peak resident size, VmHWM, and its increase over the size after the
model was loaded; on a GPU ``torch.cuda.max_memory_allocated``). :func:`profile`
records where the time of one copy goes. What comes back is plain data (lists of
seconds, dicts of numbers), as it is saved in ``<out>/<device>.json``; the tables are
:mod:`bench.report`'s.
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import torch

import gradsal
from gradsal.engine import (
    DEFAULT_BATCH_SIZE,
    chunk_sizes,
    fold_for_gradients,
    native_bfloat16,
)

from .configurations import (
    N_SAMPLES,
    NOISE_LEVEL,
    PHOTO,
    SEED,
    Captum,
    Case,
    Floor,
    Gradsal,
    SeedLoop,
)

Runner = Callable[[], object]
Log = Callable[[str], None]

# The command line; memory() runs it once per configuration (--memory-child).
COMMAND = Path(__file__).with_name("smoothgrad_bench.py")


class Context:
    """The setting of every run on one device: model, photo, its predicted class, the noise scale."""

    def __init__(self, device: str, n_samples: int = N_SAMPLES) -> None:
        self.device = torch.device(device)
        self.n_samples = n_samples
        self.model = gradsal.load_model().to(self.device)
        self.x = gradsal.load_image(PHOTO).to(self.device)
        with torch.no_grad():
            self.target = int(self.model(self.x[None]).argmax(1))
        self.sigma = NOISE_LEVEL * float(self.x.max() - self.x.min())

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @cached_property
    def seed_model(self) -> torch.nn.Module:
        """The model as the starting material used it: its parameters require grad (as
        torchvision hands them out), so its backward also computes weight gradients."""
        model = gradsal.load_model().to(self.device)
        for p in model.parameters():
            p.requires_grad_(True)
        return model


# ---------------------------------------------------------------------------
# the runs; each returns a zero-argument callable doing one full run


def seed_loop(ctx: Context) -> Runner:
    model = ctx.seed_model
    x = ctx.x[None]

    def run():
        model.eval()
        total = torch.zeros_like(x)
        for _ in range(ctx.n_samples):
            noisy = (x + torch.randn_like(x) * ctx.sigma).requires_grad_(True)
            out = model(noisy)
            model.zero_grad()
            out[0, ctx.target].backward()
            total += noisy.grad.abs()
        result = total / ctx.n_samples
        ctx.sync()
        return result[0]

    return run


def captum(ctx: Context, case: Captum) -> Runner:
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(ctx.model))
    x = ctx.x[None]

    def run():
        result = nt.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=ctx.n_samples,
            nt_samples_batch_size=case.batch,
            stdevs=ctx.sigma,
            target=ctx.target,
        )
        ctx.sync()
        return result[0]

    return run


def smoothgrad(ctx: Context, case: Gradsal) -> Runner:
    kw = case.kwargs()

    def run():
        result = gradsal.smoothgrad(
            ctx.model,
            ctx.x,
            n_samples=ctx.n_samples,
            noise_level=NOISE_LEVEL,
            generator=SEED,
            **kw,
        )
        ctx.sync()
        return result

    return run


def _floor_graph(
    ctx: Context, graph: str
) -> tuple[torch.nn.Module, torch.memory_format]:
    """The module a floor runs, and the memory layout of its inputs."""
    cpu = ctx.device.type == "cpu"
    if (
        graph == "folded"
    ):  # gradsal's graph: batch norms and paddings folded, channels-last on the CPU
        model = fold_for_gradients(ctx.model).module(channels_last=cpu)
        return model, torch.channels_last if cpu else torch.contiguous_format
    if graph == "foldednchw":  # ablation: folded, default layout
        return copy.deepcopy(
            fold_for_gradients(ctx.model).module(channels_last=False)
        ), torch.contiguous_format
    if graph == "cl":  # ablation: the model as given, channels-last
        return copy.deepcopy(ctx.model).to(
            memory_format=torch.channels_last
        ), torch.channels_last
    return ctx.model, torch.contiguous_format


def floor(ctx: Context, case: Floor) -> Runner:
    """Forward pass + input gradient only, on inputs drawn beforehand."""
    model, fmt = _floor_graph(ctx, case.graph)
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    # The same chunks as gradsal (with workers: a number they share evenly, so none idles at the end).
    sizes = chunk_sizes(ctx.n_samples, case.batch, case.workers)
    chunks = [
        (
            ctx.x[None]
            + ctx.sigma
            * torch.randn((n, *ctx.x.shape), generator=gen).to(ctx.device)
        ).contiguous(memory_format=fmt)
        for n in sizes
    ]
    targets = [torch.full((n,), ctx.target, device=ctx.device) for n in sizes]

    def grad(xb, t):
        xb = xb.detach().requires_grad_(True)
        logits = model(xb)
        (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xb)
        return g

    if case.arrangement == "intra":

        def run():
            out = [grad(c, t) for c, t in zip(chunks, targets)]
            ctx.sync()
            return out

        return run

    workers = min(case.workers, torch.get_num_threads())
    per_worker = max(1, torch.get_num_threads() // workers)
    pool = ThreadPoolExecutor(
        workers, initializer=torch.set_num_threads, initargs=(per_worker,)
    )

    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(per_worker)
        try:
            return list(pool.map(grad, chunks, targets))
        finally:
            torch.set_num_threads(before)

    return run


def runner(ctx: Context, case: Case) -> Runner:
    """A zero-argument callable that runs ``case`` once, in full."""
    if isinstance(case, SeedLoop):
        return seed_loop(ctx)
    if isinstance(case, Captum):
        return captum(ctx, case)
    if isinstance(case, Gradsal):
        return smoothgrad(ctx, case)
    if isinstance(case, Floor):
        return floor(ctx, case)
    raise TypeError(f"not a configuration: {case!r}")


# ---------------------------------------------------------------------------
# timing


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


def wait_for_quiet(max_wait_s: float, log: Log) -> None:
    """On a shared machine, wait (up to max_wait_s) until no other task is running."""
    if max_wait_s <= 0:
        return
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        if _others_running() < 1:
            return
    log(f"  machine still busy after waiting {max_wait_s:.0f}s; timing anyway")


def timed(
    ctx: Context,
    cases: Iterable[Case],
    rounds: int,
    log: Log,
    quiet_wait_s: float = 0.0,
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each configuration, by key (:func:`interleaved`)."""
    runners = {case.key: runner(ctx, case) for case in cases}
    return interleaved(runners, rounds, log, quiet_wait_s, ctx.sync)


def interleaved(
    runners: dict[str, Runner],
    rounds: int,
    log: Log,
    quiet_wait_s: float = 0.0,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each runner, by key: each warmed up once, then
    all of them run in ``rounds`` interleaved rounds, each in a rotated order."""
    keys = list(runners)
    for k in keys:
        runners[k]()
    times: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        wait_for_quiet(quiet_wait_s, log)
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            sync()
            c0, t0 = time.process_time(), time.perf_counter()
            runners[k]()
            sync()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        log(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k}={times[k][-1]:.2f}s" for k in keys)
        )
    return {k: {"wall_s": times[k], "cpu_s": cpu[k]} for k in keys}


# ---------------------------------------------------------------------------
# memory


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return (
                int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            )
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


def memory_child(case: Case, device: str, n_samples: int = N_SAMPLES) -> dict:
    """Run one configuration once in this (fresh) process and report its memory."""
    ctx = Context(device, n_samples)
    return peak_memory(runner(ctx, case), ctx.device)


def peak_memory(run: Runner, device: torch.device) -> dict:
    """Run ``run`` once and report its peak memory: on the CPU the process's peak
    resident size and its increase over the size before the run; on a GPU
    ``torch.cuda.max_memory_allocated`` above what was allocated before."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return {
            "peak_mb": (torch.cuda.max_memory_allocated() - before) / 2**20,
            "kind": "cuda_max_allocated",
        }
    baseline = _rss_mb()
    run()
    peak = _peak_rss_mb()
    return {
        "peak_mb": peak,
        "increase_mb": peak - baseline,
        "baseline_mb": baseline,
        "kind": "peak_rss",
    }


def memory(
    keys: Iterable[str],
    device: str,
    n_samples: int,
    log: Log,
    command: Path = COMMAND,
) -> dict[str, dict]:
    """Peak memory of each configuration, each in a fresh process: ``command
    --memory-child <key>`` prints the JSON of :func:`peak_memory` last."""
    out = {}
    for k in keys:
        cmd = [
            sys.executable,
            str(command),
            "--memory-child",
            k,
            "--device",
            device,
            "--n-samples",
            str(n_samples),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log(
                f"  memory of {k} failed: {proc.stderr.strip().splitlines()[-1:]}"
            )
            out[k] = {"peak_mb": float("nan")}
            continue
        out[k] = json.loads(proc.stdout.strip().splitlines()[-1])
        log(f"  memory {k}: {out[k]}")
    return out


# ---------------------------------------------------------------------------
# profile


def profile(ctx: Context, batch: int = DEFAULT_BATCH_SIZE) -> dict:
    """Where the time of one copy goes: torch.profiler over gradsal's rewritten graph,
    one thread on the CPU (as each worker runs), forward + input gradient of N copies.
    Returns each operator's self time (us) and calls, slowest first, and on the CPU
    :func:`pointwise_efficiency` (rendered by ``report.profile_table``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    before = torch.get_num_threads()
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        run = floor(ctx, Floor("folded", "intra", batch))
        run()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    finally:
        torch.set_num_threads(before)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    operators = [
        {"name": e.key, "self_us": e.self_cpu_time_total, "count": e.count}
        for e in events
    ]
    result = {
        "n_samples": ctx.n_samples,
        "batch": batch,
        "operators": operators,
        "pointwise": None,
    }
    if ctx.device.type == "cpu":
        result["pointwise"] = pointwise_efficiency(
            ctx, {op["name"]: op["self_us"] for op in operators}
        )
    return result


def pointwise_efficiency(
    ctx: Context, self_us: dict[str, float]
) -> dict | None:
    """How close the 1 x 1 convolutions' input gradients come to the processor's
    matrix-product speed.

    In gradsal's rewritten graph the backward of a 1 x 1 convolution (and of the
    classifier) is a plain matrix product (``aten::mm``); its FLOPs are counted
    from the layer shapes (2 Cin Cout H W per copy) and compared with a large
    single-thread ``torch.mm``. None if the profile shows no such operator.
    """
    graph = fold_for_gradients(ctx.model).module(channels_last=True)
    flops = 0.0

    def count(mod, inp, out):
        nonlocal flops
        if isinstance(mod, torch.nn.Linear):
            flops += 2 * mod.in_features * mod.out_features
        elif mod.kernel_size == (1, 1) and mod.groups == 1:
            flops += (
                2
                * mod.in_channels
                * mod.out_channels
                * out.shape[-2]
                * out.shape[-1]
            )

    handles = [
        m.register_forward_hook(count)
        for m in graph.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        graph(ctx.x[None].contiguous(memory_format=torch.channels_last))
    for h in handles:
        h.remove()
    seconds = self_us.get("aten::mm", 0.0) / 1e6
    if not seconds:
        return None
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
    return {
        "gflop_per_copy": flops / 1e9,
        "gflops": flops * ctx.n_samples / seconds / 1e9,
        "mm_gflops": mm_gflops,
    }


# ---------------------------------------------------------------------------
# the machine


def _load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def environment(device: str) -> dict:
    """The machine and the library versions, at the start of a run."""
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gradsal": gradsal.__version__,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "native_bfloat16": native_bfloat16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import captum as captum_lib

        env["captum"] = captum_lib.__version__
    except ImportError:
        env["captum"] = None
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next(
                line.split(":", 1)[1].strip()
                for line in f
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        env["cpu"] = platform.processor()
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    if (load := _load_average()) is not None:
        env["load_average_start"] = load
    return env


def finish_environment(env: dict, total_s: float) -> dict:
    """``env`` with the load average at the end and the run's total seconds added."""
    if (load := _load_average()) is not None:
        env["load_average_end"] = load
    env["total_s"] = round(total_s, 1)
    return env
