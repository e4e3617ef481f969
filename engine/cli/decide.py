"""``docket decide`` and ``docket place``: offline decisions and placements on a bundle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial, wraps
from pathlib import Path
from typing import IO, Any

import click
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from audit.cli import InputError
from engine._core.evaluate import Engine
from engine._core.models import Decision, Request
from engine._core.placement import Placement, Workload
from engine._errors import RequestError
from engine.cli import remote
from engine.cli.common import (
    bundle_option,
    key_option,
    load_bundle,
    model_error,
    out,
    read_documents,
    settings_of,
)
from engine.cli.remote import call, connect, server_options
from sdk import DecisionClient
from sdk import Placement as RemotePlacement

ONE_OBJECT = "expected a JSON object: give one object, or JSON Lines (one object per line)"


def _decision_json(decision: Decision, forbid_errors: str) -> str:
    return json.dumps(
        {
            "decision": decision.decision,
            "reasons": list(decision.reasons),
            "errors": [e.model_dump() for e in decision.errors],
            "forbid_errors": forbid_errors,
            "bundle_version": decision.bundle_version,
            "policies_evaluated": decision.policies_evaluated,
        }
    )


@dataclass(frozen=True, slots=True)
class _Answerer:
    """Who answers: the bundle of ``--bundle`` (offline), or the server of ``--server``."""

    bundle_path: Path | None
    bundle_key: Path | None
    server: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None

    def engine(self, ctx: click.Context) -> Engine:
        """An engine on the bundle the flags (or settings) name."""
        settings = settings_of(ctx)
        bundle = load_bundle(
            self.bundle_path or settings.bundle, self.bundle_key or settings.bundle_public_key
        )
        return Engine(bundle)

    def client(self, server: str) -> DecisionClient:
        """A client of ``server`` with the TLS options given."""
        return connect(server, self.tls_ca, self.tls_cert, self.tls_key)


def _command(file_argument: str, json_help: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A command reading FILE (or stdin), with ``--json``, ``--bundle``, ``--bundle-key``,
    ``--server`` and its TLS options; the last four reach it as one ``answerer``."""

    def make(command: Callable[..., Any]) -> click.Command:
        @wraps(command)
        def with_answerer(
            *args: Any,
            bundle_path: Path | None,
            bundle_key: Path | None,
            server: str | None,
            tls_ca: Path | None,
            tls_cert: Path | None,
            tls_key: Path | None,
            **kwargs: Any,
        ) -> Any:
            answerer = _Answerer(bundle_path, bundle_key, server, tls_ca, tls_cert, tls_key)
            return command(*args, answerer=answerer, **kwargs)

        # Applied innermost first: --help lists them in the opposite order.
        options = server_options(click.pass_context(with_answerer))
        options = click.option("--json", "as_json", is_flag=True, help=json_help)(options)
        options = bundle_option(key_option(options))
        argument = click.argument(file_argument, required=False, type=click.File("r"), default="-")
        return click.command()(argument(options))

    return make


def _objects(source: IO[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(name, line, object) for each JSON object of ``source``; anything else (an
    array, a number) is an input error saying one object per line."""
    name = source.name
    for line, document in read_documents(source, name):
        if not isinstance(document, dict):
            raise InputError(f"{name}:{line}: {ONE_OBJECT} (got {type(document).__name__})")
        yield name, line, document


def _decide_remote(
    ctx: click.Context, source: IO[str], as_json: bool, client: DecisionClient, server: str
) -> None:
    denied = 0
    with client:
        for name, line, document in _objects(source):
            try:
                send = partial(remote.authorize, client, document)
                result = call(f"{name}:{line}", server, send)
            except ValidationError as exc:
                raise model_error(name, line, exc) from exc
            denied += not result.allowed
            if as_json:
                click.echo(remote.result_json(result))
                continue
            _print_verdict(
                result.decision, result.reasons, result.errors, remote.receipt_line(result)
            )
    if denied:
        ctx.exit(1)


def _print_verdict(
    decision: str,
    reasons: Sequence[str],
    errors: Iterable[tuple[str, str]],
    note: str,
) -> None:
    """One decision for a terminal: ALLOW/DENY and why, a dim note, each policy error."""
    colour = "green" if decision == "allow" else "red"
    why = ", ".join(reasons) or "no policy permits (default deny)"
    out.print(f"[{colour}]{decision.upper()}[/]  {why}  [dim]({escape(note)})[/]")
    for policy, message in errors:
        out.print(f"  error in {policy}: {message}", markup=False)


@_command("request_file", "One JSON object per request.")
def decide(ctx: click.Context, request_file: IO[str], as_json: bool, answerer: _Answerer) -> None:
    """Decide requests (a JSON object, or JSON Lines) from REQUEST_FILE or stdin.

    Each answer says which semantics the bundle gives a forbid that errors
    (forbid_errors: "deny", the default, or "cedar": skipped, as Cedar does).
    With --server, a running `docket serve` decides and records each one and the
    answer names its audit entry. Exits 0 when every request is allowed, 1 when any
    is denied, 2 on an input error: one line naming the input line and the field
    (`<stdin>:2: context.mfa: expected a boolean`). An array is not a request: give
    one object per line.
    """
    if answerer.server is not None:
        client = answerer.client(answerer.server)
        _decide_remote(ctx, request_file, as_json, client, answerer.server)
        return
    engine = answerer.engine(ctx)
    assert engine.bundle is not None
    forbid_errors = engine.bundle.forbid_errors
    denied = 0
    for name, line, document in _objects(request_file):
        try:
            request = Request.model_validate(document)
            decision = engine.decide(request, now=datetime.now(UTC))
        except ValidationError as exc:
            raise model_error(name, line, exc) from exc
        except RequestError as exc:
            raise InputError(f"{name}:{line}: {exc}") from exc
        denied += not decision.allowed
        if as_json:
            click.echo(_decision_json(decision, forbid_errors))
            continue
        _print_verdict(
            decision.decision,
            decision.reasons,
            ((error.policy or "", error.message) for error in decision.errors),
            f"forbid errors: {forbid_errors}",
        )
    if denied:
        ctx.exit(1)


@_command("workload_file", "Print the placement as JSON.")
def place(ctx: click.Context, workload_file: IO[str], as_json: bool, answerer: _Answerer) -> None:
    """Rank the sites a workload or dataset may be placed on.

    Input: {"workload": {...}, "sites": [optional site names]} or just the workload.
    A declared residency binds whatever the classification. Exits 0 when at least one
    site is allowed, 1 when none is, 2 on an input error (one line), such as a residency
    or users_in that is not a jurisdiction of the bundle's site catalog. With --server,
    a running `docket serve` places and records it.
    """
    server = answerer.server
    client = None if server is None else answerer.client(server)
    engine = None if server is not None else answerer.engine(ctx)
    placements: list[Placement] = []
    placed_any = True
    for name, line, document in _objects(workload_file):
        spec = document.get("workload", document)
        sites = document.get("sites") if "workload" in document else None
        if sites is not None and not (
            isinstance(sites, list) and all(isinstance(s, str) for s in sites)
        ):
            raise InputError(f"{name}:{line}: sites: expected a list of site names")
        extra = set(document) - {"workload", "sites"} if "workload" in document else set()
        if extra:
            raise InputError(f"{name}:{line}: unexpected field(s): {', '.join(sorted(extra))}")
        if client is not None and server is not None:
            if not isinstance(spec, dict):
                raise InputError(f"{name}:{line}: workload: {ONE_OBJECT}")
            try:
                send_place = partial(remote.place, client, spec, sites)
                remote_placement = call(f"{name}:{line}", server, send_place)
            except ValidationError as exc:
                raise model_error(name, line, exc) from exc
            _print_remote(remote_placement, as_json)
            placed_any = placed_any and bool(remote_placement.allowed)
            continue
        assert engine is not None
        try:
            workload = Workload.model_validate(spec)
            placements.append(engine.place(workload, sites, now=datetime.now(UTC)))
        except ValidationError as exc:
            raise model_error(name, line, exc) from exc
        except RequestError as exc:
            raise InputError(f"{name}:{line}: {exc}") from exc
    for placement in placements:
        if as_json:
            click.echo(placement.model_dump_json(exclude={"evaluated_at"}))
        else:
            _print_placement(placement)
    if client is not None:
        client.close()
    if any(not p.allowed for p in placements) or not placed_any:
        ctx.exit(1)


def _print_remote(placement: RemotePlacement, as_json: bool) -> None:
    if as_json:
        click.echo(placement.model_dump_json())
        return
    out.print(f"placement of {placement.workload_id} (by the server)", markup=False)
    for rank, site in enumerate(placement.allowed, start=1):
        out.print(f"  {rank}. {site.site} ({site.jurisdiction}, {site.tier})", markup=False)
    if not placement.allowed:
        out.print("[red]no site may take this workload[/]")
    for denied in placement.denied:
        reasons = ", ".join(denied.reasons) or "no policy permits (default deny)"
        out.print(f"[red]denied[/] {denied.site}: {reasons}")
    out.print(f"  {remote.receipt_line(placement)}", markup=False)


def _print_placement(placement: Placement) -> None:
    table = Table(title=f"placement of {placement.workload}")
    for column in ("rank", "site", "jurisdiction", "tier", "latency ms", "cost/h", "budget"):
        table.add_column(column)
    for rank, site in enumerate(placement.allowed, start=1):
        table.add_row(
            str(rank),
            site.site,
            site.jurisdiction,
            site.tier,
            f"{site.latency_ms:g}",
            f"{site.cost_per_hour:.2f}",
            "ok" if site.within_latency_budget else "[yellow]over[/]",
        )
    out.print(table)
    if not placement.allowed:
        out.print("[red]no site may take this workload[/]")
    for denied in placement.denied:
        reasons = ", ".join(denied.reasons) or "no policy permits (default deny)"
        out.print(f"[red]denied[/] {denied.site}: {reasons}")
        for error in denied.errors:
            out.print(f"  error in {error.policy}: {error.message}", markup=False)
