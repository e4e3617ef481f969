"""``docket ca …``: create the certificate authority and read its public material.

    docket ca init          [--data-dir DIR] [--trust-domain TD]
    docket ca bundle        [--data-dir DIR]           trust bundle PEM on stdout
    docket ca jwks          [--data-dir DIR]           JWT-SVID keys, JSON on stdout
    docket ca issue-server  --dns NAME [--dns …] [--ip ADDR …] [--out DIR] [--ttl HOURS]
    docket ca issue-client  --spiffe-id ID [--out DIR] [--ttl HOURS]   an X.509-SVID for a
                            service (e.g. Envoy as a trusted enforcement point) over mTLS
    docket ca rotate        [--data-dir DIR]           new issuing key; the old one overlaps

Exit codes: 0 success; 2 usage or input error. Errors are one line on stderr.
This is the edge: the clock is read here and nowhere in ``attestation._ca``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation._ca import MAX_SVID_TTL, CAError, CertificateAuthority, jwk_thumbprint

DEFAULT_DATA_DIR = Path("docket-data")
CA_DIR = "ca"
DEFAULT_TRUST_DOMAIN = "docket.local"


class InputError(click.ClickException):
    """Bad input from the user: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"docket: {self.format_message()}", err=True)


def _data_dir(data_dir: Path | None) -> Path:
    """``--data-dir``, else the settings ``docket`` was started with, else the environment."""
    if data_dir is not None:
        return data_dir
    context = click.get_current_context(silent=True)
    settings = context.find_root().obj if context is not None else None
    configured = getattr(settings, "data_dir", None) or os.environ.get("DOCKET_DATA_DIR")
    return Path(configured) if configured else DEFAULT_DATA_DIR


def ca_dir(data_dir: Path | None) -> Path:
    """Where the CA lives: ``<data-dir>/ca``."""
    return _data_dir(data_dir) / CA_DIR


def _load(data_dir: Path | None) -> CertificateAuthority:
    try:
        return CertificateAuthority.load(ca_dir(data_dir))
    except CAError as exc:
        raise InputError(str(exc)) from exc


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data directory [env DOCKET_DATA_DIR, else ./docket-data].",
)


@click.group("ca")
def ca() -> None:
    """Docket's certificate authority: X.509 and JWT SVIDs for attested workloads."""


@ca.command("init")
@data_dir_option
@click.option(
    "--trust-domain",
    default=DEFAULT_TRUST_DOMAIN,
    show_default=True,
    help="SPIFFE trust domain the CA issues for.",
)
def init(data_dir: Path | None, trust_domain: str) -> None:
    """Create a root and an issuing CA under <data-dir>/ca (never overwrites one)."""
    directory = ca_dir(data_dir)
    try:
        CertificateAuthority.init(directory, trust_domain, datetime.now(UTC))
    except CAError as exc:
        raise InputError(str(exc)) from exc
    click.echo(f"created a CA for spiffe://{trust_domain} in {directory}")


@ca.command("bundle")
@data_dir_option
def bundle(data_dir: Path | None) -> None:
    """Print the trust bundle: root and issuing CA certificates, PEM."""
    click.echo(_load(data_dir).trust_bundle().decode("ascii"), nl=False)


@ca.command("jwks")
@data_dir_option
def jwks(data_dir: Path | None) -> None:
    """Print the JWT-SVID verification keys as a JSON Web Key Set."""
    click.echo(json.dumps(_load(data_dir).jwks(), indent=2))


@ca.command("rotate")
@data_dir_option
def rotate(data_dir: Path | None) -> None:
    """Make a new issuing key. The old one stays in the bundle and the JWKS until the
    last credential it signed has expired (24 h), then a later rotate drops it. Send
    `docket serve` SIGHUP to start issuing with the new key."""
    directory = ca_dir(data_dir)
    now = datetime.now(UTC)
    authority = _load(data_dir).prune(now)
    rotated = authority.rotate(now)
    try:
        rotated.save(directory)
    except CAError as exc:
        raise InputError(str(exc)) from exc
    (retired, *_) = rotated.retired
    assert retired.retire_after is not None  # rotate sets it
    kid = jwk_thumbprint(rotated.issuing.key.public_key())
    click.echo(f"new issuing key {kid} in {directory}")
    click.echo(
        f"the previous key stays trusted until {retired.retire_after:%Y-%m-%dT%H:%M:%SZ}; "
        f"{len(rotated.retired)} retired key(s) in the bundle and JWKS"
    )


@ca.command("issue-server")
@data_dir_option
@click.option("--dns", "dns_names", multiple=True, metavar="NAME", help="DNS name (repeatable).")
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="IP address (repeatable).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory to write server.pem and server.key into.",
)
@click.option(
    "--ttl",
    type=float,
    default=24.0 * 90,
    show_default=True,
    help="Lifetime in hours (never past the issuing CA's).",
)
def issue_server(
    data_dir: Path | None,
    dns_names: tuple[str, ...],
    ips: tuple[str, ...],
    out: Path,
    ttl: float,
) -> None:
    """Issue a TLS server certificate, e.g. for the admission webhook."""
    if not ttl > 0:
        raise InputError(f"--ttl must be a positive number of hours, not {ttl}")
    if not dns_names and not ips:
        raise InputError("give at least one --dns NAME or --ip ADDR")
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InputError(f"--ip {ip!r} is not an IP address") from None
    authority = _load(data_dir)
    try:
        credential = authority.issue_server_cert(
            [*dns_names, *ips], now=datetime.now(UTC), ttl=timedelta(hours=ttl)
        )
    except CAError as exc:
        raise InputError(str(exc)) from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
        key_path = out / "server.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(credential.key_pem())
        os.chmod(key_path, 0o600)
        (out / "server.pem").write_bytes(credential.chain_pem())
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror}") from exc
    click.echo(f"wrote {out / 'server.pem'} and {key_path}")


def _write_key_and_chain(out: Path, stem: str, key_pem: bytes, chain_pem: bytes) -> Path:
    """``<stem>.key`` (mode 0600) and ``<stem>.pem`` in ``out``; the key's path."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        key_path = out / f"{stem}.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        os.chmod(key_path, 0o600)
        (out / f"{stem}.pem").write_bytes(chain_pem)
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror}") from exc
    return key_path


@ca.command("issue-client")
@data_dir_option
@click.option(
    "--spiffe-id",
    required=True,
    metavar="ID",
    help="The SPIFFE ID to certify, in the CA's trust domain (spiffe://TD/…).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Directory to write client.pem (leaf + intermediate) and client.key into.",
)
@click.option(
    "--ttl",
    type=float,
    default=24.0,
    show_default=True,
    help="Lifetime in hours (at most 24, never past the issuing CA's).",
)
def issue_client(data_dir: Path | None, spiffe_id: str, out: Path, ttl: float) -> None:
    """Issue an X.509-SVID (clientAuth) and a new key for a service that calls Docket
    over mTLS, e.g. Envoy listed in trusted_peps. It carries no device posture."""
    if not ttl > 0:
        raise InputError(f"--ttl must be a positive number of hours, not {ttl}")
    if timedelta(hours=ttl) > MAX_SVID_TTL:
        raise InputError(f"--ttl is at most {MAX_SVID_TTL.total_seconds() / 3600:g} hours")
    authority = _load(data_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        leaf, issuer = authority.issue_svid(
            key.public_key(), spiffe_id, now=datetime.now(UTC), ttl=timedelta(hours=ttl)
        )
    except CAError as exc:
        raise InputError(str(exc)) from exc
    pem = serialization.Encoding.PEM
    key_path = _write_key_and_chain(
        out,
        "client",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        leaf.public_bytes(pem) + issuer.public_bytes(pem),
    )
    click.echo(f"wrote {out / 'client.pem'} and {key_path} for {spiffe_id}")
