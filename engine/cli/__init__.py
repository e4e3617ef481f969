"""The ``docket`` command line. Each package owns its slice; this module composes them.
The top room of ``engine``: it may import every room below (``engine._runtime`` to
serve, ``engine._core`` for offline decisions and policy tests), and ``attestation.cli``
and ``audit.cli``; ``engine.cli.attest`` and ``engine.cli.agent`` (the daemon) hold the
device agent's commands.

The root reads the settings once (:func:`configure`) and passes them down on the click
context: engine's commands take them with ``common.settings_of``, ``docket audit`` and
``docket ca`` through ``audit.cli.CLISettings``; each puts its flags on top
(``Settings.with_flags``). A command line that asks for help reads none of it.

Exit codes: 0 success; 1 a check failed (a policy test, a verification, a deny from
``decide``); 2 usage or input error. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import itertools
import sys
from typing import TYPE_CHECKING, Any

import click

from engine._errors import EngineError

if TYPE_CHECKING:
    from engine._runtime.settings import Settings

COMMANDS = {
    "admission": "engine.cli.admission:admission",
    "agent": "engine.cli.agent:agent",
    "attest": "engine.cli.attest:attest",
    "audit": "audit.cli:audit",
    "bundle": "engine.cli.bundle:bundle_cli",
    "ca": "attestation.cli:ca",
    "collector": "engine.cli.collector:collector",
    "decide": "engine.cli.decide:decide",
    "fleet": "engine.cli.fleet:fleet",
    "place": "engine.cli.decide:place",
    "policy": "engine.cli.policy:policy",
    "serve": "engine.cli.serve:serve",
    "witness": "engine.cli.witness:witness",
}
"""Each command and where it is defined: a command's module (and what it needs: Cedar,
SQLAlchemy, gRPC) is imported only when that command runs or help lists it."""


ASKS_FOR_HELP = "docket.asks_for_help"
"""``ctx.meta`` key: the command line asks for help somewhere below the root."""


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Help anywhere below reads no settings: it need not pay for pydantic-settings
        # and structlog (a word is taken for help even as an option's value, e.g.
        # `--db --help`; then the settings are read when first asked for).
        words = itertools.takewhile(lambda arg: arg != "--", args)
        ctx.meta[ASKS_FOR_HELP] = any(word in ctx.help_option_names for word in words)
        return super().parse_args(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Log as console lines or JSON objects (to stderr).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="The least severe log lines shown [info].",
)
@click.version_option(package_name="docket", prog_name="docket")
@click.pass_context
def main(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """Docket: policy decisions, placement, attestation and a verifiable audit log."""
    if ctx.meta.get(ASKS_FOR_HELP):
        ctx.obj = _ReadWhenAsked(ctx)
    else:
        ctx.obj = configure(log_format=log_format, log_level=log_level)


class _ReadWhenAsked:
    """Left on the root when the command line seems to ask for help: the settings, read
    when a command first asks (the help word was an option's value, and it runs)."""

    def __init__(self, root: click.Context) -> None:
        self._root = root

    def __getattr__(self, name: str) -> Any:
        self._root.obj = settings = configure(**self._root.params)
        return getattr(settings, name)


def configure(**flags: str | None) -> Settings:
    """The settings every command takes (defaults, docket.toml, DOCKET_*, the root's
    flags), built once, and logging set up by them. Raises
    :class:`~engine._errors.ConfigError`: one line, exit 2, whichever the command."""
    from engine._runtime.logging_setup import configure_logging
    from engine._runtime.settings import Settings

    settings = Settings.load(**flags)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def run() -> None:
    """Console-script entry point: every error is one line on stderr."""
    try:
        code = main.main(prog_name="docket", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        hint = f" (see 'docket {exc.ctx.command_path.partition(' ')[2]} --help')" if exc.ctx else ""
        click.echo(f"docket: {exc.format_message()}{hint}".replace("  (", " ("), err=True)
        code = 2
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.Abort:
        click.echo("docket: aborted", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("docket: interrupted", err=True)
        code = 130
    except EngineError as exc:  # a translation a command missed: still one line
        click.echo(f"docket: {exc}", err=True)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
