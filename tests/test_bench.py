"""The benchmark behind the performance appendix (bench/): its configurations, its report maths
and tables, and one short smoke run. No timing is asserted: timings live in bench/results
and the appendix."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import configurations, family_bench, report, smoothgrad_bench
from bench.configurations import (
    Captum,
    Floor,
    Gradsal,
    SeedLoop,
    parse_args,
    parse_case,
)
from gradsal.engine import DEFAULT_BATCH_SIZE

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
# configurations


@pytest.mark.parametrize(
    "device,quick,bf16",
    [
        ("cpu", False, False),
        ("cpu", True, False),
        ("cpu", False, True),
        ("cuda", False, True),
    ],
)
def test_every_swept_configuration_round_trips_through_its_key(
    device, quick, bf16
):
    cases = configurations.sweep_cases(device, quick, bf16)
    assert len({c.key for c in cases}) == len(cases)
    for case in cases:
        assert parse_case(case.key) == case
    assert (
        any(
            isinstance(c, Gradsal) and c.precision == "bfloat16" for c in cases
        )
        == bf16
    )


def test_the_full_cpu_sweep_holds_the_ablation_and_the_quick_one_does_not():
    full = {c.key for c in configurations.sweep_cases("cpu")}
    quick = {c.key for c in configurations.sweep_cases("cpu", quick=True)}
    ablation = {c.key for c in configurations.ABLATION}
    assert ablation <= full and not ablation <= quick
    assert {
        "captum:None",
        "captum:1",
        "gradsal:auto:3",
        "floor:plain:intra:5",
        "floor:folded:workers:3",
    } <= full


@pytest.mark.parametrize(
    "key,message",
    [
        ("nope", "unknown configuration 'nope'"),
        ("captum", "unknown configuration"),
        ("captum:x", "batch must be a positive integer or 'None'"),
        ("captum:0", "must be a positive integer"),
        ("gradsal:half:3", "precision must be 'default' or one of"),
        ("gradsal:auto:many", "batch must be a positive integer or 'default'"),
        ("floor:plain:sideways:3", "arrangement must be one of"),
        ("floor:weird:intra:3", "graph must be one of"),
        (
            "floor:plain:intra:default",
            "batch must be a positive integer; got 'default'",
        ),
    ],
)
def test_a_bad_configuration_key_says_what_is_wrong(key, message):
    with pytest.raises(ValueError, match="configuration") as err:
        parse_case(key)
    assert message in str(err.value)


def test_configurations_describe_themselves_for_the_tables():
    assert SeedLoop().describe() == (
        "(a) starting material's loop",
        "batch 1, weight gradients",
    )
    assert Captum().describe(50) == (
        "(b) Captum NoiseTunnel(Saliency)",
        "batch None (all 50 at once)",
    )
    assert Captum(10).describe() == (
        "(b) Captum NoiseTunnel(Saliency)",
        "batch 10",
    )
    assert (
        Gradsal().describe()[1]
        == f"auto, batch {DEFAULT_BATCH_SIZE} (defaults)"
    )
    assert (
        Gradsal("float32").describe()[1]
        == f"float32, batch {DEFAULT_BATCH_SIZE}"
    )
    assert Floor("folded", "workers", 5).describe() == (
        "floor: gradsal's rewritten graph",
        "batch 5, 2 workers",
    )
    assert Gradsal().kwargs() == {} and Gradsal("auto", 4).kwargs() == {
        "precision": "auto",
        "batch_size": 4,
    }


def test_the_main_table_lists_each_configuration_once():
    best = {
        "captum": "captum:None",
        "gradsal": "gradsal:auto:2",
        "floor_plain": "floor:plain:intra:5",
        "floor_folded": "floor:folded:workers:5",
    }
    assert configurations.final_rows(best) == [
        ("a", "seed"),
        ("b", "captum:None"),
        ("c", "gradsal:default:default"),
        ("c", "gradsal:auto:2"),
        ("c", "gradsal:float32:default"),
        ("floor", "floor:plain:intra:5"),
        ("floor", "floor:folded:workers:5"),
    ]


def test_command_line_settings_are_parsed_once_into_a_frozen_record():
    full = parse_args(["--device", "cpu"])
    assert (
        full.n_samples,
        full.rounds,
        full.sweep_rounds,
        full.memory,
        full.profile,
        full.run_alternatives,
    ) == (50, 5, 2, True, True, True)
    quick = parse_args(
        [
            "--quick",
            "--device",
            "cpu",
            "--no-memory",
            "--repeats",
            "9",
            "--out",
            "elsewhere",
        ]
    )
    assert (
        quick.rounds,
        quick.sweep_rounds,
        quick.memory,
        quick.profile,
        quick.run_alternatives,
    ) == (2, 1, False, False, False)
    assert quick.out == Path("elsewhere")
    assert parse_args(["--device", "cpu", "--repeats", "7"]).sweep_rounds == 3
    assert parse_args(
        ["--device", "cpu", "--memory-child", "captum:5"]
    ).memory_child == Captum(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.n_samples = 4


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--n-samples", "0"],
            "argument --n-samples: must be a positive integer; got '0'",
        ),
        (
            ["--repeats", "two"],
            "argument --repeats: must be a positive integer; got 'two'",
        ),
        (
            ["--quiet-wait", "-1"],
            "argument --quiet-wait: must be a number >= 0",
        ),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (
            ["--memory-child", "captum:lots"],
            "argument --memory-child: bad configuration 'captum:lots'",
        ),
    ],
)
def test_a_bad_option_exits_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------
# report: summary maths and tables, on hand-made measurements


def _times(*wall):
    return {"wall_s": list(wall), "cpu_s": [2 * w for w in wall]}


def tiny_data() -> dict:
    """Measurements with medians chosen by hand: seed 5, Captum default 3, Captum best 2,
    gradsal default 1, floors 2.5 (model as given) and 0.8 (rewritten), N = 10."""
    final = {
        "seed": _times(4.0, 6.0, 5.0),
        "captum:None": _times(3.0, 2.0, 4.0),
        "captum:5": _times(2.0, 2.5, 1.5),
        "gradsal:default:default": _times(1.0, 0.9, 1.1),
        "gradsal:auto:2": _times(1.2, 1.2, 1.2),
        "gradsal:float32:default": _times(1.5, 1.4, 1.6),
        "floor:plain:intra:5": _times(2.5, 2.5, 2.5),
        "floor:folded:workers:5": _times(0.8, 0.7, 0.9),
    }
    sweep = {
        "captum:5": _times(1.5),
        "captum:None": _times(2.0),
        "gradsal:auto:2": _times(1.2),
        "gradsal:auto:3": _times(1.3),
        "floor:plain:intra:5": _times(2.5),
        "floor:folded:workers:5": _times(0.8),
    }
    best = {
        "captum": "captum:5",
        "gradsal": "gradsal:auto:2",
        "floor_plain": "floor:plain:intra:5",
        "floor_folded": "floor:folded:workers:5",
    }
    env = {
        "date": "2000-01-01T00:00:00",
        "torch": "9.9",
        "device": "cpu",
        "torch_threads": 2,
        "cpu_count": 2,
        "captum": "0.0",
        "cpu": "Test CPU",
        "load_average_start": [0.5, 0, 0],
        "load_average_end": [1.5, 0, 0],
    }
    memory = {
        "seed": {"peak_mb": 800.0, "increase_mb": 150.0},
        "gradsal:default:default": {"peak_mb": 1000.4},
    }
    return {
        "environment": env,
        "n_samples": 10,
        "noise_level": 0.15,
        "photo": "cat",
        "rows": configurations.final_rows(best),
        "final": final,
        "sweep": sweep,
        "memory": memory,
        "best": best,
    }


def test_summary_is_ratios_of_medians():
    s = report.summarize(tiny_data())
    assert s["speedup_vs_seed"] == pytest.approx(5.0)
    assert s["speedup_vs_captum_default"] == pytest.approx(3.0)
    assert s["speedup_vs_captum_best"] == pytest.approx(2.0)
    assert s["ratio_to_floor"] == pytest.approx(
        1.25
    )  # over the lower floor, 0.8
    assert s["ratio_to_floor_model_as_given"] == pytest.approx(0.4)
    assert s["floor_per_copy_ms"] == pytest.approx(80.0)
    assert s["gradsal_peak_mb"] == 1000.4
    assert (s["captum_best"], s["gradsal_best"]) == (
        "captum:5",
        "gradsal:auto:2",
    )


def test_the_best_setting_is_the_fastest_round_not_the_median():
    sweep = {
        "captum:5": _times(1.0, 9.0, 9.0),
        "captum:10": _times(3.0, 3.0, 3.0),
        "gradsal:auto:3": _times(2.0),
        "floor:plain:intra:5": _times(2.0),
        "floor:folded:workers:3": _times(2.0, 2.0),
        "floor:folded:workers:5": _times(1.9, 5.0),
    }
    assert report.best_settings(sweep) == {
        "captum": "captum:5",
        "gradsal": "gradsal:auto:3",
        "floor_plain": "floor:plain:intra:5",
        "floor_folded": "floor:folded:workers:5",
    }
    del sweep["gradsal:auto:3"]
    with pytest.raises(ValueError, match="gradsal:"):
        report.best_settings(sweep)


def test_render_only_writes_the_tables_from_a_tiny_json(tmp_path, capsys):
    (tmp_path / "cpu.json").write_text(json.dumps(tiny_data()))
    assert (
        smoothgrad_bench.main(
            ["--render-only", "--device", "cpu", "--out", str(tmp_path)]
        )
        == 0
    )
    md = (tmp_path / "cpu.md").read_text()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    assert md.startswith(
        "EfficientNet-Lite0, cat photo at 224 x 224, N = 10, noise level 0.15; Test CPU, "
        "2 logical CPUs, torch 9.9 (2 threads), captum 0.0; medians of 3 interleaved rounds; "
        "2000-01-01T00:00:00. Load average (1 min) at start 0.5, at end 1.5."
    )
    assert (
        "| method | setting | median (s) | range (s) | time / gradsal | peak RSS (MB) |"
        in md
    )
    assert (
        "| (a) starting material's loop | batch 1, weight gradients | 5.00 | 4.00-6.00 | 5.00 | 800 (+150) |"
        in md
    )
    assert (
        "| (b) Captum NoiseTunnel(Saliency) | batch None (all 10 at once) | 3.00 | 2.00-4.00 | 3.00 | nan |"
        in md
    )
    assert (
        "| (c) gradsal.smoothgrad | auto, batch 2 | 1.20 | 1.20-1.20 | 1.20 | nan |"
        in md
    )
    assert (
        "| floor: gradsal's rewritten graph | batch 5, 2 workers | 0.80 | 0.70-0.90 | 0.80 | nan |"
        in md
    )
    assert "**5.00x** faster." in md
    assert "vs Captum at its best batch (batch 5): **2.00x**." in md
    assert (
        "(80.0 ms per copy): **1.25**; over the floor of the model as given: 0.40."
        in md
    )
    assert "**1000 MB**." in md
    assert "target" not in md and "budget" not in md

    sweep = (tmp_path / "cpu_sweep.md").read_text()
    assert sweep.startswith("Sweep (1 interleaved round(s) each;")
    assert (
        "| Captum | setting | median, N = 10 (s) | fastest (s) | per copy (ms) |"
        in sweep
    )
    assert (
        "| Captum NoiseTunnel(Saliency) | batch 5 | 1.50 | 1.50 | 150.0 |"
        in sweep
    )
    assert "| floor | setting | median, N = 10 (s) |" in sweep
    assert not (
        tmp_path / "cpu_ablation.md"
    ).exists()  # the sweep has no ablation

    saved = json.loads((tmp_path / "cpu.json").read_text())
    assert list(saved) == [*tiny_data(), "summary"]
    assert saved["summary"]["speedup_vs_seed"] == pytest.approx(5.0)


def test_the_ablation_table_compares_each_graph_with_the_model_as_given(
    tmp_path,
):
    data = tiny_data()
    for case, t in zip(configurations.ABLATION, (2.0, 1.6, 1.25, 1.0)):
        data["sweep"][case.key] = _times(t)
    report.render(tmp_path, "cpu", data)
    lines = (tmp_path / "cpu_ablation.md").read_text().splitlines()
    assert lines[2:6] == [
        "| model as given | 200.0 | 1.00x |",
        "| model as given, channels-last | 160.0 | 1.25x |",
        "| BN, pads and ReLU6 folded, default layout | 125.0 | 1.60x |",
        "| gradsal's rewritten graph | 100.0 | 2.00x |",
    ]


def test_results_saved_before_the_best_settings_were_stored_still_render(
    tmp_path,
):
    data = tiny_data()
    data["summary"] = report.summarize(data)
    best = data.pop("best")
    (tmp_path / "cpu.json").write_text(json.dumps(data))
    assert report.load(tmp_path, "cpu")["best"] == best
    with pytest.raises(FileNotFoundError, match="cuda.json"):
        report.load(tmp_path, "cuda")


def test_profile_table_shares_and_calls_per_copy():
    ops = [
        {"name": "aten::a", "self_us": 60.0, "count": 20},
        {"name": "aten::b", "self_us": 30.0, "count": 10},
        {"name": "aten::c", "self_us": 10.0, "count": 5},
    ]
    md = report.profile_table(
        {
            "n_samples": 10,
            "batch": 3,
            "operators": ops,
            "pointwise": {
                "gflop_per_copy": 1.5,
                "gflops": 45.0,
                "mm_gflops": 90.0,
            },
        },
        rows=2,
    )
    assert md.splitlines()[2:5] == [
        "| `aten::a` | 60.0% | 2.0 |",
        "| `aten::b` | 30.0% | 1.0 |",
        "| everything else | 10.0% | |",
    ]
    assert (
        "one thread, batch 3," in md
        and "ran at 45 GFLOP/s, 50% of a 1024 x 1024" in md
    )


@pytest.mark.skipif(
    not (ROOT / "bench" / "results" / "cpu.json").exists(),
    reason="no saved CPU results",
)
def test_the_saved_results_render_as_the_appendix_shows_them(tmp_path):
    results = ROOT / "bench" / "results"
    shutil.copy(results / "cpu.json", tmp_path / "cpu.json")
    report.render(tmp_path, "cpu", report.load(tmp_path, "cpu"))
    for name in ("cpu.md", "cpu_sweep.md", "cpu_ablation.md"):
        assert (tmp_path / name).read_text() == (results / name).read_text(), (
            name
        )


@pytest.mark.skipif(
    not (ROOT / "bench" / "results" / "cpu_family.json").exists(),
    reason="no saved family results",
)
def test_the_saved_family_results_render_as_the_appendix_shows_them(
    tmp_path, capsys
):
    results = ROOT / "bench" / "results"
    shutil.copy(results / "cpu_family.json", tmp_path / "cpu_family.json")
    argv = ["--render-only", "--device", "cpu", "--out", str(tmp_path)]
    assert family_bench.main(argv) == 0
    for name in ("cpu_family.md", "cpu_converged.md"):
        assert (tmp_path / name).read_text() == (results / name).read_text(), (
            name
        )
    assert "Captum IntegratedGradients" in capsys.readouterr().out


def test_family_configurations_describe_themselves():
    assert family_bench.describe("ig:None") == (
        "Captum IntegratedGradients",
        "internal_batch_size None (all 50 at once)",
    )
    assert family_bench.describe("ig:auto")[1].startswith("precision auto")
    assert family_bench.describe("sgig:2x10")[1] == (
        "nt_samples_batch_size 2, internal_batch_size 10"
    )
    assert family_bench.describe("single:gradsal-gb:7") == (
        "gradsal.guided_backprop",
        "7 photos, one batch",
    )
    with pytest.raises(ValueError, match="unknown configuration"):
        family_bench.describe("nope:1")


# ---------------------------------------------------------------------------
# one smoke run of the smallest configuration


def test_a_quick_run_with_two_copies_writes_its_tables(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "smoothgrad_bench.py"),
        "--quick",
        "--n-samples",
        "2",
        "--no-memory",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=45
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "cpu.md").read_text()
    for row in (
        "starting material's loop",
        "Captum NoiseTunnel(Saliency)",
        "gradsal.smoothgrad",
        "floor",
    ):
        assert row in table
    data = json.loads((tmp_path / "cpu.json").read_text())
    assert list(data) == [
        "environment",
        "n_samples",
        "noise_level",
        "photo",
        "rows",
        "final",
        "sweep",
        "memory",
        "best",
        "summary",
    ]
    assert data["n_samples"] == 2 and data["memory"] == {}
    assert [k for _, k in data["rows"]] == list(data["final"])
    assert (tmp_path / "cpu_sweep.md").exists()
