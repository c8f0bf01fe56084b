#!/usr/bin/env python
"""Per-chapter execution times of the book, for the appendix on performance.

Three ways to get the numbers, all writing ``<out>/chapter_times.md`` and
``<out>/chapter_times.json``:

* ``python bench/chapter_times.py --build`` times a full
  ``jupyter-book build -W -n --keep-going .`` (every notebook executed, as in CI)
  and then reads each notebook's execution time from that build;
* ``python bench/chapter_times.py`` reads the times of the last build in
  ``_build/`` (myst-nb records them in ``_build/.doctrees/environment.pickle``;
  for a chapter taken from the cache, the time of the run that cached it, an
  earlier build or nbval under ``pytest``);
* ``python bench/chapter_times.py --execute`` runs each notebook of ``_toc.yml``
  on its own with ``jupyter nbconvert --execute`` (outputs go to a temporary
  folder, never into report/) and times it.

Run from the repository root. The build mode is the one that answers "does the
whole book build in under 5 minutes on two CPU cores".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def toc_files(root: Path) -> list[str]:
    """Documents listed in _toc.yml, in order (``file:`` entries and the root)."""
    text = (root / "_toc.yml").read_text()
    docs = re.findall(r"^\s*root:\s*(\S+)", text, flags=re.M) + re.findall(
        r"file:\s*(\S+)", text
    )
    return [d[:-6] if d.endswith(".ipynb") else d for d in docs]


def from_build(build_dir: Path) -> dict[str, dict]:
    pickle_path = build_dir / ".doctrees" / "environment.pickle"
    if not pickle_path.exists():
        raise SystemExit(
            f"no build found at {pickle_path}; run with --build or build the book first"
        )
    with open(pickle_path, "rb") as f:
        env = pickle.load(f)
    out = {}
    for doc, data in getattr(env, "nb_metadata", {}).items():
        exec_data = data.get("exec_data")
        if exec_data:
            out[doc] = {
                "runtime_s": exec_data.get("runtime"),
                "succeeded": exec_data.get("succeeded"),
                "method": exec_data.get("method"),
                "executed_at": exec_data.get("mtime"),
            }
    return out


def run_build(root: Path) -> float:
    # A full build, as in CI: Sphinx would otherwise rebuild (and execute) only the
    # documents changed since the last build in _build/.
    stale = root / "_build"
    if stale.exists():
        print(
            f"removing {stale.name}/ so that every notebook executes",
            flush=True,
        )
        shutil.rmtree(stale)
    # The jupyter-book of this interpreter's environment, even when it is not activated.
    local = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(local) if local.exists() else "jupyter-book",
        "build",
        "-W",
        "-n",
        "--keep-going",
        ".",
    ]
    print("$ jupyter-book", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        print(
            f"build failed with exit code {proc.returncode}", file=sys.stderr
        )
    return elapsed


def run_nbconvert(root: Path, docs: list[str]) -> dict[str, dict]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for doc in docs:
            nb = root / f"{doc}.ipynb"
            if not nb.exists():
                continue
            cmd = [
                "jupyter",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--ExecutePreprocessor.timeout=600",
                "--output-dir",
                tmp,
                "--output",
                nb.stem + ".out",
                str(nb),
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd, cwd=root, capture_output=True, text=True, check=False
            )
            out[doc] = {
                "runtime_s": time.perf_counter() - t0,
                "succeeded": proc.returncode == 0,
                "method": "nbconvert",
            }
            print(
                f"{doc}: {out[doc]['runtime_s']:.1f} s{'' if proc.returncode == 0 else ' (FAILED)'}",
                flush=True,
            )
    return out


def write(
    out_dir: Path,
    times: dict[str, dict],
    order: list[str],
    build_s: float | None,
    how: str,
) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = [d for d in order if d in times] + sorted(
        d for d in times if d not in order
    )
    total = sum(times[d]["runtime_s"] or 0.0 for d in docs)
    lines = [
        "| chapter | execution time (s) | share | status |",
        "|---|---:|---:|---|",
    ]
    for d in docs:
        t = times[d]["runtime_s"] or 0.0
        ok = "ok" if times[d]["succeeded"] else "**failed**"
        lines.append(
            f"| {Path(d).name} | {t:.1f} | {t / total:.0%} | {ok} |"
            if total
            else f"| {Path(d).name} | {t:.1f} | - | {ok} |"
        )
    lines.append(f"| **all notebooks** | **{total:.1f}** | 100% | |")
    stamps = [
        times[d].get("executed_at")
        for d in docs
        if times[d].get("executed_at")
    ]
    when = (
        datetime.datetime.fromtimestamp(max(stamps))
        if stamps
        else datetime.datetime.now()
    )
    notes = [
        f"Measured {when.isoformat(timespec='minutes')} on {os.cpu_count()} logical CPUs "
        f"({how}); produced by `python bench/chapter_times.py`."
    ]
    if build_s is not None:
        notes.append(
            f"Whole build (`jupyter-book build -W -n --keep-going .`, execution included): "
            f"**{build_s:.0f} s**."
        )
    md = "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
    (out_dir / "chapter_times.md").write_text(md)
    (out_dir / "chapter_times.json").write_text(
        json.dumps(
            {
                "how": how,
                "build_s": build_s,
                "total_execution_s": total,
                "chapters": times,
            },
            indent=1,
        )
        + "\n"
    )
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument(
        "--root", default=".", help="repository root (with _toc.yml)"
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--build",
        action="store_true",
        help="time a full jupyter-book build, then read its times",
    )
    mode.add_argument(
        "--execute",
        action="store_true",
        help="time each notebook with nbconvert",
    )
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    order = toc_files(root)
    build_s = None
    if args.execute:
        times, how = (
            run_nbconvert(root, order),
            "each notebook run on its own with nbconvert",
        )
    else:
        if args.build:
            build_s = run_build(root)
        how = "execution times recorded by the book build (myst-nb)"
        if (
            not args.build
        ):  # the last build may have taken chapters from the cache
            how += (
                "; a chapter taken from the cache keeps the time of the run"
                " that cached it: an earlier build or nbval under pytest"
            )
        times = from_build(root / "_build")
    md = write(Path(args.out), times, order, build_s, how)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
