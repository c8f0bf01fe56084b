"""The benchmark behind the performance appendix still runs (a smoke run; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoothgrad_benchmark_smoke_run_writes_its_tables(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "smoothgrad_bench.py"), "--quick", "--n-samples", "4",
           "--no-memory", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "cpu.md").read_text()
    for row in ("starting material's loop", "Captum NoiseTunnel(Saliency)", "gradsal.smoothgrad", "floor"):
        assert row in table
    summary = json.loads((tmp_path / "cpu.json").read_text())["summary"]
    assert summary["speedup_vs_seed"] > 0 and summary["ratio_to_floor"] > 0
    assert (tmp_path / "cpu_sweep.md").exists()
