"""The summary and the tables: medians, ratios and ranges of the saved measurements, as markdown.

Everything here works on the data a run saves in ``<out>/<device>.json`` (plain
dicts, configurations named by their keys), so ``--render-only`` can lay the tables
out again without timing anything:

* :func:`best_settings`: each method's best setting in the sweep (the fastest round);
* :func:`summarize`: the ratios the appendix quotes (speed-ups, ratio to the floor);
* :func:`render`: ``<name>.md`` (main table and ratios), ``<name>_sweep.md``,
  ``<name>_ablation.md`` (when the sweep has the ablation) and ``<name>.json``;
* :func:`profile_table`: ``<name>_profile.md`` from :func:`bench.timing.profile`.

The JSON layout: ``environment``, ``n_samples``, ``noise_level``, ``photo``, ``rows``
(the main table's ``[role, key]`` pairs), ``final`` and ``sweep`` (``{key: {"wall_s":
[...], "cpu_s": [...]}}``), ``memory`` (``{key: {"peak_mb": ...}}``), ``best`` and
``summary``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from .configurations import (
    ABLATION,
    GRAPHS,
    REFERENCE,
    Floor,
    parse_case,
)

Times = Mapping[
    str, Mapping[str, Sequence[float]]
]  # {key: {"wall_s": [...], "cpu_s": [...]}}

# Where each method's best setting of the sweep is looked for, by key prefix.
BEST_PREFIXES = {
    "captum": "captum:",
    "gradsal": "gradsal:",
    "floor_plain": "floor:plain:",
    "floor_folded": "floor:folded:",
}


def med(v: Sequence[float]) -> float:
    return statistics.median(v)


def memory_cell(m: Mapping | None, missing: str = "") -> str:
    """A peak-memory cell: the peak in MB, its increase over the loaded model in
    brackets; ``missing`` where the row was not measured."""
    if not m:
        return missing
    extra = f" (+{m['increase_mb']:.0f})" if "increase_mb" in m else ""
    return f"{m['peak_mb']:.0f}{extra}"


def best_settings(sweep: Times) -> dict[str, str]:
    """The key of each method's best setting. The fastest round, not the median, picks
    it: with few sweep rounds a burst of load on a shared machine would otherwise decide."""
    best = {}
    for name, prefix in BEST_PREFIXES.items():
        cands = [k for k in sweep if k.startswith(prefix)]
        if not cands:
            raise ValueError(f"no sweep configuration starts with {prefix!r}")
        best[name] = min(cands, key=lambda k: min(sweep[k]["wall_s"]))
    return best


def summarize(data: Mapping) -> dict:
    """The ratios of the medians that the appendix quotes, for gradsal's defaults."""
    final, best, mem, n = (
        data["final"],
        data["best"],
        data["memory"],
        data["n_samples"],
    )
    ref = REFERENCE.key
    t = {k: med(v["wall_s"]) for k, v in final.items()}
    floor_best = min(t[best["floor_plain"]], t[best["floor_folded"]])
    return {
        "speedup_vs_seed": t["seed"] / t[ref],
        "speedup_vs_captum_default": t["captum:None"] / t[ref],
        "speedup_vs_captum_best": t[best["captum"]] / t[ref],
        "ratio_to_floor": t[ref] / floor_best,
        "ratio_to_floor_model_as_given": t[ref] / t[best["floor_plain"]],
        "floor_per_copy_ms": floor_best / n * 1000,
        "gradsal_peak_mb": mem.get(ref, {}).get("peak_mb"),
        "captum_best": best["captum"],
        "gradsal_best": best["gradsal"],
    }


def sweep_table(sweep: Times, title: str, n_samples: int) -> str:
    lines = [
        f"| {title} | setting | median, N = {n_samples} (s) | fastest (s) | per copy (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for k, v in sweep.items():
        name, setting = parse_case(k).describe(n_samples)
        name = name.split(") ", 1)[
            -1
        ]  # the sweep tables group one method each: no (a)/(b)/(c)
        per = med(v["wall_s"]) / n_samples * 1000
        lines.append(
            f"| {name} | {setting} | {med(v['wall_s']):.2f} | {min(v['wall_s']):.2f} | {per:.1f} |"
        )
    return "\n".join(lines)


def main_table(
    rows: Sequence[Sequence[str]],
    final: Times,
    mem: Mapping,
    device: str,
    n_samples: int,
) -> str:
    ref = med(final[REFERENCE.key]["wall_s"])
    mem_head = "peak GPU memory (MB)" if device == "cuda" else "peak RSS (MB)"
    lines = [
        f"| method | setting | median (s) | range (s) | time / gradsal | {mem_head} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for _, k in rows:
        v = final[k]["wall_s"]
        name, setting = parse_case(k).describe(n_samples)
        lines.append(
            f"| {name} | {setting} | {med(v):.2f} | {min(v):.2f}-{max(v):.2f} | {med(v) / ref:.2f} | "
            f"{memory_cell(mem.get(k), missing='nan')} |"
        )
    return "\n".join(lines)


def ablation_table(sweep: Times, n_samples: int) -> str | None:
    """Per copy and speed-up of each graph's floor (2 workers, batch 3); None unless the sweep has them all."""
    keys = [case.key for case in ABLATION]
    if not all(k in sweep for k in keys):
        return None
    base = med(sweep[keys[0]]["wall_s"])
    lines = [
        "| graph (2 workers, batch 3) | per copy (ms) | speed-up over the model as given |",
        "|---|---:|---:|",
    ]
    for case in ABLATION:
        t = med(sweep[case.key]["wall_s"])
        lines.append(
            f"| {GRAPHS[case.graph]} | {t / n_samples * 1000:.1f} | {base / t:.2f}x |"
        )
    return "\n".join(lines)


def _header(data: Mapping) -> str:
    env, n = data["environment"], data["n_samples"]
    title = env.get("gpu") if env["device"] == "cuda" else env.get("cpu")
    rounds = len(data["final"][REFERENCE.key]["wall_s"])
    load = ""
    if "load_average_start" in env:
        load = (
            f" Load average (1 min) at start {env['load_average_start'][0]:.1f}, at end "
            f"{env.get('load_average_end', [float('nan')])[0]:.1f}."
        )
    return (
        f"EfficientNet-Lite0, {data['photo']} photo at 224 x 224, N = {n}, noise level {data['noise_level']}; "
        f"{title}, {env['cpu_count']} logical CPUs, torch {env['torch']} ({env['torch_threads']} threads), "
        f"captum {env['captum']}; medians of {rounds} interleaved rounds; {env['date']}.{load}"
    )


def _memory_note(device: str) -> str:
    if device == "cuda":
        return "Peak memory: `torch.cuda.max_memory_allocated` during one run, in a fresh process."
    return (
        "Peak RSS: the whole process's peak resident memory (VmHWM) during one run in a fresh process, "
        "model and libraries included; in brackets its increase over the resident size after loading the model. "
        "Batch: copies per pass (Captum's `nt_samples_batch_size`, gradsal's `batch_size`); the loop also "
        "computes weight gradients, as the starting material did. Floor: forward pass and input gradient only, "
        "on noisy copies drawn beforehand. Time / gradsal: each row's median over that of gradsal's defaults."
    )


def _checks(summary: Mapping, n_samples: int) -> str:
    """The ratios the appendix quotes, one bullet each."""
    s = summary
    captum_setting = parse_case(s["captum_best"]).describe(n_samples)[1]
    checks = [
        f"- gradsal default vs the starting material's loop: **{s['speedup_vs_seed']:.2f}x** faster.",
        (
            f"- vs Captum at its default batch: **{s['speedup_vs_captum_default']:.2f}x**; vs Captum at its best "
            f"batch ({captum_setting}): **{s['speedup_vs_captum_best']:.2f}x**."
        ),
        (
            f"- time per copy over the cost floor ({s['floor_per_copy_ms']:.1f} ms per copy): "
            f"**{s['ratio_to_floor']:.2f}**; over the floor of the model as given: "
            f"{s['ratio_to_floor_model_as_given']:.2f}."
        ),
    ]
    peak = s["gradsal_peak_mb"]
    if peak is not None:
        checks.append(f"- gradsal default peak memory: **{peak:.0f} MB**.")
    return "\n".join(checks)


def render(out: Path, name: str, data: dict) -> str:
    """Write <name>.md, <name>_sweep.md, <name>_ablation.md and <name>.json from the
    measurements in ``data`` (its ``summary`` recomputed); returns the main table."""
    out = Path(out)
    data["summary"] = summarize(data)
    n, device, sweep = (
        data["n_samples"],
        data["environment"]["device"],
        data["sweep"],
    )
    sweep_rounds = min(len(v["wall_s"]) for v in sweep.values())
    md = (
        "\n\n".join(
            [
                _header(data),
                main_table(
                    data["rows"], data["final"], data["memory"], device, n
                ),
                _memory_note(device)
                + " Range: fastest to slowest round. Produced by `python bench/smoothgrad_bench.py`.",
                _checks(data["summary"], n),
            ]
        )
        + "\n"
    )
    (out / f"{name}.md").write_text(md)

    ablation = ablation_table(sweep, n)
    if ablation:
        (out / f"{name}_ablation.md").write_text(
            ablation
            + f"\n\nForward + input gradient only, {sweep_rounds} interleaved round(s); from the sweep of "
            "`python bench/smoothgrad_bench.py`.\n"
        )
    sweep_md = (
        "\n\n".join(
            [
                (
                    f"Sweep ({sweep_rounds} interleaved round(s) each; same setting as the main table). The best setting of "
                    "each method is the one with the fastest round."
                ),
                *(
                    sweep_table(
                        {
                            k: v
                            for k, v in sweep.items()
                            if k.startswith(prefix)
                        },
                        title,
                        n,
                    )
                    for prefix, title in (
                        ("captum", "Captum"),
                        ("gradsal", "gradsal"),
                        ("floor", "floor"),
                    )
                ),
            ]
        )
        + "\n"
    )
    (out / f"{name}_sweep.md").write_text(sweep_md)
    (out / f"{name}.json").write_text(
        json.dumps(data, indent=1, default=str) + "\n"
    )
    return md


def load(out: Path, name: str) -> dict:
    """The measurements saved in ``<out>/<name>.json``, for :func:`render`."""
    path = Path(out) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no saved measurements at {path}; run the benchmark first"
        )
    data = json.loads(path.read_text())
    if (
        "best" not in data
    ):  # saved before the best settings were stored: they are in rows and summary
        floors = [k for role, k in data["rows"] if role == Floor.role]
        data["best"] = {
            "captum": data["summary"]["captum_best"],
            "gradsal": data["summary"]["gradsal_best"],
            "floor_plain": floors[0],
            "floor_folded": floors[-1],
        }
    return data


def profile_table(profile: Mapping, rows: int = 12) -> str:
    """The profile of :func:`bench.timing.profile`: share of self time and calls per copy
    of the slowest operators, and on the CPU how fast the 1 x 1 convolutions ran."""
    ops, n = profile["operators"], profile["n_samples"]
    total = sum(op["self_us"] for op in ops)
    lines = [
        "| operator | share of time | calls per copy |",
        "|---|---:|---:|",
    ]
    for op in ops[:rows]:
        lines.append(
            f"| `{op['name']}` | {op['self_us'] / total:.1%} | {op['count'] / n:.1f} |"
        )
    rest = sum(op["self_us"] for op in ops[rows:])
    lines.append(f"| everything else | {rest / total:.1%} | |")
    note = (
        f"\n\ntorch.profiler, self time per operator, one thread, batch {profile['batch']}, forward and "
        "input gradient of gradsal's rewritten graph (`python bench/smoothgrad_bench.py`)."
    )
    pw = profile.get("pointwise")
    if pw:
        note += (
            " The input gradients of the 1 x 1 convolutions and the classifier"
            f" ({pw['gflop_per_copy']:.2f} GFLOP per copy, as `aten::mm`)"
            f" ran at {pw['gflops']:.0f} GFLOP/s,"
            f" {pw['gflops'] / pw['mm_gflops']:.0%} of a 1024 x 1024"
            " single-thread matrix product on this processor"
            f" ({pw['mm_gflops']:.0f} GFLOP/s)."
        )
    return "\n".join(lines) + note + "\n"
