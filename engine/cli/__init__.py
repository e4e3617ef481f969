"""The ``docket`` command line. Each package owns its slice; this module composes them.
The top room of ``engine``: it may import every room below (``engine._runtime`` to
serve, ``engine._core`` for offline decisions and policy tests), and ``attestation.cli``
and ``audit.cli``; ``engine.cli.attest`` holds the device agent's commands.

Exit codes: 0 success; 1 a check failed (a policy test, a verification, a deny from
``decide``); 2 usage or input error. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from attestation.cli import ca as ca_cli
from audit.cli import CheckFailed, InputError
from audit.cli import audit as audit_cli
from engine._core.bundle import MAX_REVISION, PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import Decision, Request
from engine._core.placement import Placement, Workload
from engine._core.policy_tests import junit_xml, load_cases, run_cases, uncovered_policies
from engine._core.signing import (
    SIGNATURE_FILE,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_version,
)
from engine._errors import BundleError, EngineError, RequestError, SignatureError
from engine._runtime.logging_setup import configure_logging
from engine._runtime.serve import Listening, ServeError
from engine._runtime.serve import serve as serve_forever
from engine._runtime.settings import Settings
from engine.cli.attest import attest as attest_cli

out = Console(highlight=False)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None
    return settings


def _public_key(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return load_public_key(path)
    except SignatureError as exc:
        raise InputError(str(exc)) from exc


def _load_bundle(path: Path, key: Path | None) -> PolicyBundle:
    try:
        return PolicyBundle.load(path, public_key=_public_key(key))
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
    help="Ed25519 public key (PEM); the bundle must be signed by it "
    "[env DOCKET_BUNDLE_PUBLIC_KEY].",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Log as console lines or JSON objects (to stderr).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.version_option(package_name="docket", prog_name="docket")
@click.pass_context
def main(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """Docket: policy decisions, placement, attestation and a verifiable audit log."""
    overrides: dict[str, Any] = {}
    if log_format:
        overrides["log_format"] = log_format
    if log_level:
        overrides["log_level"] = log_level
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from exc
    configure_logging(settings.log_format, settings.log_level)
    ctx.obj = settings


# --- docket policy ----------------------------------------------------------------------


@main.group()
def policy() -> None:
    """Validate, test and sign policy bundles."""


@policy.command()
@click.argument("bundle_dir", required=False, type=click.Path(path_type=Path))
@key_option
@click.pass_context
def validate(ctx: click.Context, bundle_dir: Path | None, bundle_key: Path | None) -> None:
    """Check a bundle: parse, validate strictly against its schema, load entities and
    sites. Prints every problem as FILE:LINE: MESSAGE and exits 1 if there is any."""
    settings = _settings(ctx)
    path = bundle_dir or settings.bundle
    key = bundle_key or settings.bundle_public_key
    public_key = _public_key(key)
    try:
        bundle = PolicyBundle.load(path, public_key=public_key)
    except BundleError as exc:
        for problem in exc.problems:
            click.echo(problem)
        raise CheckFailed(
            f"{path}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}"
        ) from exc
    signed = f", signed by {bundle.signed_by}" if bundle.signed_by else ""
    click.echo(
        f"{path}: ok — {len(bundle.policies)} policies, {len(bundle.sites)} sites, "
        f"version {bundle.version}{signed}"
    )


@policy.command(name="test")
@click.argument("bundle_dir", required=False, type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(path_type=Path), help="Also write JUnit XML here.")
@key_option
@click.pass_context
def test_cmd(
    ctx: click.Context, bundle_dir: Path | None, junit: Path | None, bundle_key: Path | None
) -> None:
    """Run the bundle's tests/*.yaml cases; list policies that no case exercises."""
    settings = _settings(ctx)
    path = bundle_dir or settings.bundle
    bundle = _load_bundle(path, bundle_key or settings.bundle_public_key)
    try:
        cases = load_cases(bundle.files)
    except BundleError as exc:
        for problem in exc.problems:
            click.echo(problem)
        raise InputError(f"{path}: test cases are malformed") from exc
    if not cases:
        raise InputError(f"{path}: no test cases under tests/*.yaml")
    results = run_cases(bundle, cases, now=datetime.now(UTC))
    table = Table(title=f"policy tests — {path} ({bundle.version[:19]})")
    table.add_column("case")
    table.add_column("file", style="dim")
    table.add_column("expected")
    table.add_column("got")
    table.add_column("result")
    for result in results:
        expected = result.loaded.case.expect.decision
        table.add_row(
            result.loaded.case.name,
            f"{result.loaded.file}:{result.loaded.line}",
            expected,
            result.decision or "error",
            "[green]pass[/]" if result.passed else "[red]FAIL[/]",
        )
    out.print(table)
    failed = [r for r in results if not r.passed]
    for result in failed:
        out.print(
            f"[red]FAIL[/] {result.loaded.file}:{result.loaded.line} {result.loaded.case.name}"
        )
        for failure in result.failures:
            out.print(f"    {failure}", markup=False)
    uncovered = uncovered_policies(bundle, results)
    if uncovered:
        out.print(f"policies no case exercises ({len(uncovered)}):", markup=False)
        for policy_id in uncovered:
            out.print(f"    {policy_id} ({bundle.policy(policy_id).where})", markup=False)
    else:
        out.print(f"every policy determines at least one case ({len(bundle.policies)} policies)")
    if junit is not None:
        junit.write_text(junit_xml(results, bundle_version=bundle.version))
    out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed", markup=False)
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} policy tests failed")


@policy.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option(
    "--key", required=True, type=click.Path(path_type=Path), help="Ed25519 private key (PEM)."
)
def sign(bundle_dir: Path, key: Path) -> None:
    """Sign a bundle directory: writes BUNDLE_DIR/bundle.sig over its version."""
    if not bundle_dir.is_dir():
        raise InputError(f"{bundle_dir}: not a directory (sign the directory, then archive it)")
    try:
        private_key = load_private_key(key)
    except SignatureError as exc:
        raise InputError(str(exc)) from exc
    bundle = _load_bundle(bundle_dir, None)
    if bundle.name is None or bundle.revision is None:
        raise InputError(
            f"{bundle_dir / 'bundle.toml'}: a signed bundle needs [bundle] name and revision "
            "(raise the revision with every release: replicas refuse a lower one)"
        )
    signature = sign_version(bundle.version, private_key)
    (bundle_dir / SIGNATURE_FILE).write_text(signature)
    click.echo(
        f"signed {bundle.name} revision {bundle.revision} ({bundle.version}) with key "
        f"{signature.split()[1]} → {bundle_dir / SIGNATURE_FILE}"
    )


@policy.command()
@click.option(
    "--out",
    "prefix",
    default="docket-bundle",
    show_default=True,
    help="Write PREFIX.key (private, mode 0600) and PREFIX.pub.",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(prefix: str, force: bool) -> None:
    """Make an Ed25519 key pair for signing bundles."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise InputError(f"{path} exists; use --force to overwrite it")
    private_pem, public_pem = generate_keypair()
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    click.echo(f"private key: {private_path} (keep it secret)\npublic key:  {public_path}")


# --- docket bundle ----------------------------------------------------------------------


@main.group(name="bundle")
def bundle_cli() -> None:
    """A replica's accepted bundle revisions (anti-rollback)."""


@bundle_cli.command()
@click.argument("revision", type=click.IntRange(1, MAX_REVISION))
@click.option("--name", help="The bundle's [bundle] name [the one in force].")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="State directory [./docket-data]."
)
@click.pass_context
def pin(ctx: click.Context, revision: int, name: str | None, data_dir: Path | None) -> None:
    """Let the next bundle of NAME at exactly REVISION in, once, even if it is lower than
    the highest accepted (a deliberate rollback). The server that accepts it writes the
    pin to the audit log."""
    from engine._service.bundle_revisions import RevisionGuard

    directory = data_dir or _settings(ctx).data_dir
    try:
        pinned = RevisionGuard(directory, signed=False).pin(revision, datetime.now(UTC), name=name)
    except BundleError as exc:
        raise InputError(str(exc)) from exc
    click.echo(
        f"pinned {pinned.name} revision {pinned.revision} in {directory}: the next bundle of "
        "that revision is accepted once (a running server sees it at its next poll)"
    )


# --- docket decide / place --------------------------------------------------------------


def _read_documents(source: IO[str], name: str) -> Iterator[tuple[int, Any]]:
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


def _config_error(exc: ValidationError) -> InputError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return InputError(f"configuration: {where}: {first['msg']}")


def _model_error(name: str, line: int, exc: ValidationError) -> InputError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return InputError(f"{name}:{line}: {where}: {first['msg']}{more}")


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


def _engine_for(ctx: click.Context, bundle_path: Path | None, bundle_key: Path | None) -> Engine:
    """An engine on the bundle the flags (or settings) name."""
    settings = _settings(ctx)
    bundle = _load_bundle(bundle_path or settings.bundle, bundle_key or settings.bundle_public_key)
    return Engine(bundle)


@main.command()
@click.argument("request_file", required=False, type=click.File("r"), default="-")
@bundle_option
@key_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per request.")
@click.pass_context
def decide(
    ctx: click.Context,
    request_file: IO[str],
    bundle_path: Path | None,
    bundle_key: Path | None,
    as_json: bool,
) -> None:
    """Decide requests (a JSON object, or JSON Lines) from REQUEST_FILE or stdin.

    Each answer says which semantics the bundle gives a forbid that errors
    (forbid_errors: "deny", the default, or "cedar": skipped, as Cedar does).
    Exits 0 when every request is allowed, 1 when any is denied.
    """
    engine = _engine_for(ctx, bundle_path, bundle_key)
    assert engine.bundle is not None
    forbid_errors = engine.bundle.forbid_errors
    name = request_file.name
    denied = 0
    for line, document in _read_documents(request_file, name):
        try:
            request = Request.model_validate(document)
            decision = engine.decide(request, now=datetime.now(UTC))
        except ValidationError as exc:
            raise _model_error(name, line, exc) from exc
        except RequestError as exc:
            raise InputError(f"{name}:{line}: {exc}") from exc
        denied += not decision.allowed
        if as_json:
            click.echo(_decision_json(decision, forbid_errors))
            continue
        colour = "green" if decision.allowed else "red"
        reasons = ", ".join(decision.reasons) or "no policy permits (default deny)"
        out.print(
            f"[{colour}]{decision.decision.upper()}[/]  {reasons}  "
            f"[dim](forbid errors: {forbid_errors})[/]"
        )
        for error in decision.errors:
            out.print(f"  error in {error.policy}: {error.message}", markup=False)
    if denied:
        ctx.exit(1)


@main.command()
@click.argument("workload_file", required=False, type=click.File("r"), default="-")
@bundle_option
@key_option
@click.option("--json", "as_json", is_flag=True, help="Print the placement as JSON.")
@click.pass_context
def place(
    ctx: click.Context,
    workload_file: IO[str],
    bundle_path: Path | None,
    bundle_key: Path | None,
    as_json: bool,
) -> None:
    """Rank the sites a workload or dataset may be placed on.

    Input: {"workload": {...}, "sites": [optional site names]} or just the workload.
    A declared residency binds whatever the classification. Exits 0 when at least one
    site is allowed, 1 when none is, 2 on an input error (one line), such as a residency
    or users_in that is not a jurisdiction of the bundle's site catalog.
    """
    engine = _engine_for(ctx, bundle_path, bundle_key)
    name = workload_file.name
    placements: list[Placement] = []
    for line, document in _read_documents(workload_file, name):
        if not isinstance(document, dict):
            raise InputError(f"{name}:{line}: expected a JSON object")
        spec = document.get("workload", document)
        sites = document.get("sites") if "workload" in document else None
        if sites is not None and not (
            isinstance(sites, list) and all(isinstance(s, str) for s in sites)
        ):
            raise InputError(f"{name}:{line}: sites: expected a list of site names")
        extra = set(document) - {"workload", "sites"} if "workload" in document else set()
        if extra:
            raise InputError(f"{name}:{line}: unexpected field(s): {', '.join(sorted(extra))}")
        try:
            workload = Workload.model_validate(spec)
            placements.append(engine.place(workload, sites, now=datetime.now(UTC)))
        except ValidationError as exc:
            raise _model_error(name, line, exc) from exc
        except RequestError as exc:
            raise InputError(f"{name}:{line}: {exc}") from exc
    for placement in placements:
        if as_json:
            click.echo(placement.model_dump_json(exclude={"evaluated_at"}))
        else:
            _print_placement(placement)
    if any(not p.allowed for p in placements):
        ctx.exit(1)


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


# --- docket serve -----------------------------------------------------------------------


@main.command()
@bundle_option
@key_option
@click.option("--grpc", "grpc_addr", metavar="HOST:PORT", help="gRPC address [127.0.0.1:50051].")
@click.option(
    "--metrics", "metrics_addr", metavar="HOST:PORT", help="Prometheus /metrics [127.0.0.1:9464]."
)
@click.option(
    "--admission",
    "admission_addr",
    metavar="HOST:PORT",
    help="Kubernetes admission webhook, HTTPS [127.0.0.1:8443]; 'off' to turn it off.",
)
@click.option(
    "--admission-cert",
    type=click.Path(path_type=Path),
    help="Webhook certificate chain (PEM) [one issued by Docket's CA].",
)
@click.option("--admission-key", type=click.Path(path_type=Path), help="Webhook key (PEM).")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="State directory [./docket-data]."
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Audit database [sqlite:///<data-dir>/docket.db]; postgresql+psycopg://… to share.",
)
@click.option("--workers", type=click.IntRange(1, 64), help="Processes sharing the port [1].")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="Server certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="Server private key (PEM).")
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path),
    help="CA for client certificates: makes TLS mutual (mTLS).",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    default=None,
    help="Allow plaintext gRPC on a non-loopback address (never do this in production).",
)
@click.option(
    "--ek-roots",
    type=click.Path(path_type=Path),
    help="TPM manufacturer CA certificates (*.pem) [<data-dir>/trust/ek-roots].",
)
@click.pass_context
def serve(ctx: click.Context, /, **flags: Any) -> None:
    """Serve decisions over gRPC: docket.v1.Decisions, docket.v1.Attestation,
    docket.v1.Audit, Envoy ext_authz v3, grpc.health.v1 and server reflection; the
    Kubernetes admission webhook over HTTPS; Prometheus metrics. Creates the data
    directory, audit database and CA on first start. Every decision and credential is in
    the audit log before it is answered. SIGHUP reloads the bundle, the CA and the EK
    roots; SIGTERM drains the calls in flight and exits 0."""
    names = {"bundle_path": "bundle", "bundle_key": "bundle_public_key", "grpc_addr": "grpc"}
    names["metrics_addr"] = "metrics"
    names["admission_addr"] = "admission"
    updates = {names.get(k, k): v for k, v in flags.items() if v is not None}
    try:
        settings = Settings(**{**_settings(ctx).model_dump(), **updates})
    except ValidationError as exc:
        raise _config_error(exc) from exc

    def ready(where: Listening) -> None:
        bundle = where.bundle
        if bundle is not None:
            click.echo(
                f"docket: bundle {bundle.version[:19]} from {bundle.source} "
                f"({len(bundle.policies)} policies)"
            )
        processes = f", {where.workers} workers" if where.workers > 1 else ""
        click.echo(f"docket: gRPC listening on {where.grpc} ({where.tls}{processes})")
        click.echo(f"docket: metrics on http://{where.metrics}/metrics")
        click.echo(
            f"docket: device JWT-SVID keys on http://{where.metrics}/.well-known/jwks.json, "
            f"revocations on http://{where.metrics}/.well-known/docket-revocations.json"
        )
        peps = ", ".join(settings.trusted_peps) or "none (ext_authz Checks may not name a subject)"
        click.echo(f"docket: trusted enforcement points: {peps}")
        if where.admission is not None:
            click.echo(
                f"docket: admission webhook on https://{where.admission} "
                f"(/validate, /mutate, /healthz; certificate {where.admission_cert})"
            )
        click.echo(f"docket: audit log {where.audit}, checkpoint key {where.audit_key}")
        click.echo(f"docket: attestation {where.attestation}")
        click.echo("docket: SIGHUP reloads the bundle; SIGTERM or Ctrl-C drains and stops")

    try:
        serve_forever(settings, ready)
    except BundleError as exc:
        raise InputError(f"bundle {settings.bundle} refused: {exc}") from exc
    except (ServeError, SignatureError) as exc:
        raise InputError(str(exc)) from exc


main.add_command(audit_cli)
main.add_command(ca_cli)
main.add_command(attest_cli)


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
