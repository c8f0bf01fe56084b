"""What the benchmark runs: its setting, the configurations it times, and its settings.

Nothing here touches a model or a clock. Every configuration is a frozen dataclass
and is named by a key, the name it has in the saved JSON (``<out>/<device>.json``):

========================================  =============================================
``seed``                                  the starting material's loop (:class:`SeedLoop`)
``captum:<batch|None>``                   Captum ``NoiseTunnel(Saliency)`` (:class:`Captum`)
``gradsal:<precision|default>:<batch|default>``  ``gradsal.smoothgrad`` (:class:`Gradsal`)
``floor:<graph>:<intra|workers>:<batch>``  forward pass + input gradient only (:class:`Floor`)
========================================  =============================================

:func:`parse_case` turns a key into its configuration and ``case.key`` turns it
back; ``case.describe(n)`` is its (method, setting) in the tables. "batch" is
Captum's ``nt_samples_batch_size`` and gradsal's ``batch_size``.
:func:`sweep_cases` lists what the sweep times, :func:`final_rows` the rows of the
main table, and :func:`parse_args` reads the command line into :class:`Settings`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import torch

from gradsal.engine import DEFAULT_BATCH_SIZE, MAX_CPU_WORKERS, PRECISIONS

# The setting of every timing (the appendix's "The setting").
N_SAMPLES = 50
NOISE_LEVEL = 0.15
PHOTO = "cat"
SEED = 0

# The graphs a floor can run: gradsal's ("folded") and the model as given ("plain"),
# and for the ablation each of the two changes on its own.
GRAPHS = MappingProxyType(
    {
        "plain": "model as given",
        "cl": "model as given, channels-last",
        "foldednchw": "BN, pads and ReLU6 folded, default layout",
        "folded": "gradsal's rewritten graph",
    }
)
# "intra": one pass at a time on all threads; "workers": gradsal's worker threads.
ARRANGEMENTS = ("intra", "workers")

KEY_FORMS = "seed | captum:<batch|None> | gradsal:<precision|default>:<batch|default> | floor:<graph>:<intra|workers>:<batch>"


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")
    return value


@dataclass(frozen=True)
class SeedLoop:
    """The starting material's loop: one copy per pass, weight gradients included."""

    role: ClassVar[str] = "a"

    @property
    def key(self) -> str:
        return "seed"

    def describe(self, n_samples: int = N_SAMPLES) -> tuple[str, str]:
        return "(a) starting material's loop", "batch 1, weight gradients"


@dataclass(frozen=True)
class Captum:
    """Captum ``NoiseTunnel(Saliency)``; ``batch=None`` is its default (all copies in one batch)."""

    batch: int | None = None
    role: ClassVar[str] = "b"

    def __post_init__(self) -> None:
        if self.batch is not None:
            _positive(self.batch, "Captum's batch")

    @property
    def key(self) -> str:
        return f"captum:{self.batch}"

    def describe(self, n_samples: int = N_SAMPLES) -> tuple[str, str]:
        batch = (
            f"None (all {n_samples} at once)"
            if self.batch is None
            else str(self.batch)
        )
        return "(b) Captum NoiseTunnel(Saliency)", f"batch {batch}"


@dataclass(frozen=True)
class Gradsal:
    """``gradsal.smoothgrad``; ``None`` leaves ``precision`` or ``batch_size`` at gradsal's default."""

    precision: str | None = None
    batch: int | None = None
    role: ClassVar[str] = "c"

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be 'default' or one of {PRECISIONS}; got {self.precision!r}"
            )
        if self.batch is not None:
            _positive(self.batch, "gradsal's batch")

    @property
    def key(self) -> str:
        precision = "default" if self.precision is None else self.precision
        batch = "default" if self.batch is None else self.batch
        return f"gradsal:{precision}:{batch}"

    def kwargs(self) -> dict:
        """The keyword arguments this configuration passes to ``gradsal.smoothgrad``."""
        kw = {} if self.precision is None else {"precision": self.precision}
        if self.batch is not None:
            kw["batch_size"] = self.batch
        return kw

    def describe(self, n_samples: int = N_SAMPLES) -> tuple[str, str]:
        precision = "auto" if self.precision is None else self.precision
        batch = DEFAULT_BATCH_SIZE if self.batch is None else self.batch
        default = (
            " (defaults)"
            if self.precision is None and self.batch is None
            else ""
        )
        return "(c) gradsal.smoothgrad", f"{precision}, batch {batch}{default}"


@dataclass(frozen=True)
class Floor:
    """The cost floor: forward pass and input gradient only, on inputs drawn beforehand."""

    graph: str
    arrangement: str
    batch: int
    role: ClassVar[str] = "floor"

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ValueError(
                f"graph must be one of {tuple(GRAPHS)}; got {self.graph!r}"
            )
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(
                f"arrangement must be one of {ARRANGEMENTS}; got {self.arrangement!r}"
            )
        _positive(self.batch, "the floor's batch")

    @property
    def workers(self) -> int:
        """Passes that run at once: gradsal's CPU workers, or one."""
        return MAX_CPU_WORKERS if self.arrangement == "workers" else 1

    @property
    def key(self) -> str:
        return f"floor:{self.graph}:{self.arrangement}:{self.batch}"

    def describe(self, n_samples: int = N_SAMPLES) -> tuple[str, str]:
        threads = (
            "all threads"
            if self.arrangement == "intra"
            else f"{self.workers} workers"
        )
        return f"floor: {GRAPHS[self.graph]}", f"batch {self.batch}, {threads}"


Case = SeedLoop | Captum | Gradsal | Floor

# The reference row: gradsal at its defaults ("time / gradsal" divides by it).
REFERENCE = Gradsal()


def _batch(text: str, default_word: str | None = None) -> int | None:
    """A batch size from a key: digits, or ``default_word`` (None)."""
    if default_word is not None and text == default_word:
        return None
    if not text.isdigit():
        words = "a positive integer" + (
            "" if default_word is None else f" or {default_word!r}"
        )
        raise ValueError(f"batch must be {words}; got {text!r}")
    return int(text)


def parse_case(key: str) -> Case:
    """The configuration a key names (the inverse of ``case.key``); a ValueError says what is wrong."""
    kind, *args = str(key).split(":")
    try:
        if kind == "seed" and not args:
            return SeedLoop()
        if kind == "captum" and len(args) == 1:
            return Captum(_batch(args[0], "None"))
        if kind == "gradsal" and len(args) == 2:
            return Gradsal(
                None if args[0] == "default" else args[0],
                _batch(args[1], "default"),
            )
        if kind == "floor" and len(args) == 3:
            return Floor(args[0], args[1], _batch(args[2]))
    except ValueError as err:
        raise ValueError(f"bad configuration {key!r}: {err}") from None
    raise ValueError(
        f"unknown configuration {key!r}; a configuration is {KEY_FORMS}"
    )


# The ablation table: the floor of each graph at 2 workers, batch 3 (in the full CPU sweep).
ABLATION = tuple(
    Floor(graph, "workers", 3)
    for graph in ("plain", "cl", "foldednchw", "folded")
)


def sweep_cases(
    device: str, quick: bool = False, native_bfloat16: bool = False
) -> tuple[Case, ...]:
    """What the sweep times, to find each method's best setting (emulated bfloat16,
    about 15 times slower on the CPU, is not worth timing)."""
    precisions = ["auto", "float32"]
    if device == "cuda" or native_bfloat16:
        precisions.append("bfloat16")
    if device == "cuda":
        captum = [10, 25, None]
        gradsal = {p: [5, 10, 25, 50] for p in precisions}
        floors = {
            ("plain", "intra"): [5, 10, 25, 50],
            ("folded", "intra"): [5, 10, 25, 50],
        }
    elif quick:
        captum = [5, None]
        gradsal = {"auto": [3, 5], "float32": [5]}
        floors = {("plain", "intra"): [5], ("folded", "workers"): [3, 5]}
    else:
        captum = [1, 5, 10, 25, None]
        gradsal = {
            p: [2, 3, 4, 5, 8] if p == "auto" else [3, 5] for p in precisions
        }
        floors = {
            ("plain", "intra"): [3, 5, 10],
            ("plain", "workers"): [3],
            ("folded", "intra"): [5],
            ("folded", "workers"): [2, 3, 4, 5],
            ("cl", "workers"): [
                3
            ],  # the ablation: what layout and folding each give
            ("foldednchw", "workers"): [3],
        }
    return (
        *(Captum(b) for b in captum),
        *(Gradsal(p, b) for p, batches in gradsal.items() for b in batches),
        *(
            Floor(g, a, b)
            for (g, a), batches in floors.items()
            for b in batches
        ),
    )


def final_rows(best: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (role, key) rows of the main table, each once, from the best settings of the
    sweep (``best``: captum, gradsal, floor_plain and floor_folded, as keys)."""
    keys = [
        "seed",
        Captum().key,
        best["captum"],
        REFERENCE.key,
        best["gradsal"],
        Gradsal("float32").key,
        best["floor_plain"],
        best["floor_folded"],
    ]
    rows: list[tuple[str, str]] = []
    for key in dict.fromkeys(keys):
        rows.append((parse_case(key).role, key))
    return rows


@dataclass(frozen=True)
class Settings:
    """One invocation of the benchmark, as the command line gives it."""

    out: Path = Path("bench/results")
    device: str = "cpu"
    n_samples: int = N_SAMPLES
    repeats: int = 5
    quick: bool = False
    memory: bool = True
    quiet_wait_s: float = 0.0
    profile_only: bool = False
    render_only: bool = False
    alternatives: bool = True
    memory_child: Case | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(
                f"device must be 'cpu' or 'cuda'; got {self.device!r}"
            )
        _positive(self.n_samples, "n_samples")
        _positive(self.repeats, "repeats")
        if not self.quiet_wait_s >= 0:
            raise ValueError(
                f"quiet_wait_s must be >= 0; got {self.quiet_wait_s!r}"
            )

    @property
    def rounds(self) -> int:
        """Interleaved rounds of the final rows."""
        return 2 if self.quick else self.repeats

    @property
    def sweep_rounds(self) -> int:
        return 1 if self.quick else max(2, self.rounds // 2)

    @property
    def profile(self) -> bool:
        """Whether a full run also writes ``<device>_profile.md``."""
        return not self.quick

    @property
    def run_alternatives(self) -> bool:
        """Whether a full run ends with ``bench/alternatives.py``."""
        return self.alternatives and not self.quick


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer; got {text!r}"
        )
    return int(text)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"must be a number >= 0; got {text!r}"
        )
    return value


def _case(key: str) -> Case:
    try:
        return parse_case(key)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parser(description: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument(
        "--out",
        type=Path,
        default=Settings.out,
        help="folder for <device>.md, <device>_sweep.md, <device>.json",
    )
    ap.add_argument(
        "--device",
        default=None,
        choices=("cpu", "cuda"),
        help="default: cuda if available",
    )
    ap.add_argument(
        "--repeats",
        type=_positive_int,
        default=Settings.repeats,
        help="interleaved rounds for the final rows",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 rounds, small sweeps",
    )
    ap.add_argument(
        "--no-memory", action="store_true", help="skip the memory subprocesses"
    )
    ap.add_argument(
        "--quiet-wait",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="on a shared machine, wait up to S seconds before each round until no other task runs",
    )
    ap.add_argument(
        "--profile-only",
        action="store_true",
        help="only write <out>/<device>_profile.md",
    )
    ap.add_argument(
        "--n-samples",
        type=_positive_int,
        default=N_SAMPLES,
        help=f"noisy copies ({N_SAMPLES}; fewer only for smoke tests)",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="write the tables again from <out>/<device>.json, without timing anything",
    )
    ap.add_argument(
        "--no-alternatives",
        action="store_true",
        help="skip bench/alternatives.py (bfloat16, torch.compile)",
    )
    ap.add_argument(
        "--memory-child", type=_case, default=None, help=argparse.SUPPRESS
    )
    return ap


def parse_args(
    argv: Sequence[str] | None = None, description: str | None = None
) -> Settings:
    """The settings of one invocation; a bad option exits with argparse's usage and a message."""
    ap = parser(description)
    args = ap.parse_args(argv)
    device = args.device
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif (
        device == "cuda"
        and not args.render_only
        and not torch.cuda.is_available()
    ):
        ap.error(
            "--device cuda: no CUDA device is available (--render-only needs none)"
        )
    return Settings(
        out=args.out,
        device=device,
        n_samples=args.n_samples,
        repeats=args.repeats,
        quick=args.quick,
        memory=not args.no_memory,
        quiet_wait_s=args.quiet_wait,
        profile_only=args.profile_only,
        render_only=args.render_only,
        alternatives=not args.no_alternatives,
        memory_child=args.memory_child,
    )
