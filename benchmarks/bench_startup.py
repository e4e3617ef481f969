"""CLI start-up: ``docket --version``, ``docket audit --help`` and ``docket policy
--help`` against a bare ``python -c "import click"``, each a fresh process, measured in
alternating rounds in one run so the ratios compare like with like.

Issue 17 aims for ``docket --version`` and ``docket audit …`` under 3 times the bare click
start-up; commands load only what they run (:class:`engine.cli.LazyGroup`, and each
command imports its machinery inside), and help reads no settings.
``tests/engine/cli/test_cli.py`` pins which modules these command lines do not import."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import table

DOCKET = str(Path(sys.executable).with_name("docket"))
COMMANDS: dict[str, list[str]] = {
    "python -c 'import click'": [sys.executable, "-c", "import click"],
    "docket --version": [DOCKET, "--version"],
    "docket audit --help": [DOCKET, "audit", "--help"],
    "docket audit verify --help": [DOCKET, "audit", "verify", "--help"],
    "docket policy --help": [DOCKET, "policy", "--help"],
}
ROUNDS = 15
QUICK_ROUNDS = 4


def _once(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print its table, return its figures."""
    rounds = QUICK_ROUNDS if quick else ROUNDS
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # warm the file cache
        _once(argv)
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            samples[name].append(_once(argv))
    base = statistics.median(samples["python -c 'import click'"])
    figures = {
        name: {
            "median_ms": statistics.median(times) * 1000,
            "ratio": statistics.median(times) / base,
        }
        for name, times in samples.items()
    }
    print(
        table(
            ["command", "median ms", "ratio to import click"],
            [[name, f"{f['median_ms']:.0f}", f"{f['ratio']:.1f}"] for name, f in figures.items()],
        )
    )
    return {"rounds": rounds, "commands": figures}
