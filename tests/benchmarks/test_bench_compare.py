"""The base-revision runner (benchmarks/bench_compare.py): an exported tree's ``docket``
runs that tree's code, not the checkout's it is started from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks import bench_compare


def test_an_exported_tree_runs_its_own_engine_even_from_the_checkout(tmp_path: Path) -> None:
    """The servers are started with the repository root as their working directory; a
    ``python -c`` puts that first on ``sys.path``, ahead of ``PYTHONPATH``, so without
    ``-P`` the "base" ran this tree's engine."""
    cli = tmp_path / "engine" / "cli"
    cli.mkdir(parents=True)
    (tmp_path / "engine" / "__init__.py").write_text("")
    (cli / "__init__.py").write_text("import sys\n\ndef run():\n    print(__file__, *sys.argv)\n")
    argv = [*bench_compare.tree_command(tmp_path), "serve", "--here"]
    shown = subprocess.run(
        argv, cwd=bench_compare.ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert shown == [str(cli / "__init__.py"), "docket", "serve", "--here"]


def test_this_tree_runs_the_virtualenv_docket() -> None:
    assert Path(bench_compare.tree_command(bench_compare.ROOT)[0]).name == "docket"
