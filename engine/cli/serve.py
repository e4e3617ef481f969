"""``docket serve``: the service, on the settings and the flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from audit.cli import InputError
from engine._errors import BundleError, ServeError, SignatureError
from engine.cli.common import bundle_option, key_option, settings_of

if TYPE_CHECKING:
    from engine._runtime.prepare import Listening


@click.command()
@bundle_option
@click.option(
    "--bundle-url",
    metavar="URL",
    help="Pull the bundle from https://…, http://… or oci://host/repo:tag (needs --bundle-key).",
)
@key_option
@click.option(
    "--shadow-bundle",
    type=click.Path(path_type=Path),
    help="A candidate bundle decided beside the live one, never answering (see "
    "`docket policy shadow-report`).",
)
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
@click.option(
    "--audit-writer",
    type=click.Choice(["per-worker", "supervisor"]),
    help="With --workers > 1: each worker commits its entries, or the supervisor all [per-worker].",
)
@click.option(
    "--connection-balancing",
    type=click.Choice(["round-robin", "hash"]),
    help="With --workers > 1: new connections dealt to the workers in turn, or by the "
    "kernel's hash [round-robin].",
)
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
    "--trusted-pep",
    "trusted_peps",
    multiple=True,
    metavar="SPIFFE_ID",
    help="An enforcement point (Envoy, a gateway) that may name the subject of an ext_authz "
    "Check over mTLS; repeatable [none].",
)
@click.option(
    "--record-requests/--no-record-requests",
    default=None,
    help="Keep each decision's full input, encrypted, for `docket policy diff` [off].",
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
    from engine._runtime.serve import serve as serve_forever

    names = {"bundle_path": "bundle", "bundle_key": "bundle_public_key", "grpc_addr": "grpc"}
    names["metrics_addr"] = "metrics"
    names["admission_addr"] = "admission"
    flags["trusted_peps"] = flags["trusted_peps"] or None  # none given: the file's, the env's
    settings = settings_of(ctx).with_flags(**{names.get(k, k): v for k, v in flags.items()})

    def ready(where: Listening) -> None:
        bundle = where.bundle
        if bundle is not None:
            click.echo(
                f"docket: bundle {bundle.version[:19]} from {bundle.source} "
                f"({len(bundle.policies)} policies)"
            )
        shadow = where.shadow
        if shadow is not None:
            revision = f", revision {shadow.revision}" if shadow.revision is not None else ""
            click.echo(
                f"docket: shadow bundle {shadow.version[:19]} from {shadow.source} "
                f"({len(shadow.policies)} policies{revision}): decided beside, never answering"
            )
        processes = f", {where.workers} workers" if where.workers > 1 else ""
        click.echo(f"docket: gRPC listening on {where.grpc} ({where.tls}{processes})")
        http = f"{'https' if settings.http_tls else 'http'}://{where.metrics}"
        mtls = " (client certificates of http_client_ca only)" if settings.http_client_ca else ""
        click.echo(f"docket: metrics on {http}/metrics{mtls}")
        click.echo(
            f"docket: device JWT-SVID keys on {http}/.well-known/jwks.json, "
            f"revocations on {http}/.well-known/docket-revocations.json"
        )
        click.echo(
            f"docket: AuthZEN 1.0 on {http}/access/v1/evaluation(s) "
            f"(metadata: {http}/.well-known/authzen-configuration)"
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
        raise InputError(f"bundle {settings.bundle_url or settings.bundle} refused: {exc}") from exc
    except (ServeError, SignatureError) as exc:
        raise InputError(str(exc)) from exc
