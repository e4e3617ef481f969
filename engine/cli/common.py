"""What the command groups share: the settings ``docket`` was started with, loading a
bundle (and its key) as an input error, the ``--bundle``/``--bundle-key`` options, and
reading JSON documents with errors that name the line and the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from audit.cli import InputError
from engine._errors import BundleError, SignatureError

if TYPE_CHECKING:  # what a command runs is imported when it runs: `--help` loads none of it
    from pydantic import ValidationError
    from rich.console import Console

    from audit.note import VerifierKey
    from engine._core.bundle import PolicyBundle
    from engine._runtime.settings import Settings

if TYPE_CHECKING:
    out: Console
    """What the commands print tables and marked-up lines with (rich)."""


def __getattr__(name: str) -> Any:
    """``out`` made on first use: a command's ``--help`` does not import rich."""
    if name != "out":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    globals()["out"] = console = Console(highlight=False)
    return console


def settings_of(ctx: click.Context) -> Settings:
    """The settings ``docket`` built at its root (read now if the root took a word for
    help and did not)."""
    from engine._runtime.settings import Settings
    from engine.cli import configure

    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = configure(**root.params)
    return root.obj


def public_key(path: Path | None) -> VerifierKey | None:
    from engine._core.signing import load_verifier

    if path is None:
        return None
    try:
        return load_verifier(path)
    except SignatureError as exc:
        raise InputError(str(exc)) from exc


def load_bundle(path: Path, key: Path | None) -> PolicyBundle:
    from engine._core.bundle import PolicyBundle

    try:
        return PolicyBundle.load(path, public_key=public_key(key))
    except BundleError as exc:
        raise InputError(f"bundle {path} refused: {exc}") from exc


bundle_option = click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Policy bundle directory or .tar.gz [default: ./policies, env DOCKET_BUNDLE].",
)
key_option = click.option(
    "--bundle-key",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle verifier key file (from `docket policy keygen`); the bundle must be signed "
    "by it "
    "[env DOCKET_BUNDLE_PUBLIC_KEY].",
)


def read_documents(source: IO[str], name: str) -> Iterator[tuple[int, Any]]:
    """One JSON document, or JSON Lines of many; yields (line, document)."""
    text = source.read()
    if not text.strip():
        raise InputError(f"{name}: empty input; expected a JSON request")
    try:
        yield 1, json.loads(text)
        return
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise InputError(
                f"{name}:{whole.lineno}: invalid JSON: {whole.msg} (column {whole.colno})"
            ) from whole
    for number, line in lines:
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{number}: invalid JSON: {exc.msg}") from exc


def model_error(name: str, line: int, exc: ValidationError) -> InputError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return InputError(f"{name}:{line}: {where}: {first['msg']}{more}")
