"""``docket ca …``: create the certificate authority and read its public material.

    docket ca init          [--data-dir DIR] [--trust-domain TD]
    docket ca bundle        [--data-dir DIR]           trust bundle PEM on stdout
    docket ca jwks          [--data-dir DIR]           JWT-SVID keys, JSON on stdout
    docket ca issue-server  --dns NAME [--dns …] [--ip ADDR …] [--out DIR] [--ttl HOURS]
    docket ca issue-client  --spiffe-id ID [--out DIR] [--ttl HOURS]   an X.509-SVID for a
                            service (e.g. Envoy as a trusted enforcement point) over mTLS
    docket ca rotate        [--data-dir DIR]           new issuing key; the old one is retired
    docket ca revoke        (--device EKHASH | --spiffe-id ID | --serial HEX) --reason TEXT
    docket ca revocations   [--data-dir DIR] [--json]  the signed revocation list, verified

A running ``docket serve`` notices ``rotate`` and ``revoke`` within
``revocation_poll_seconds`` (or at once on SIGHUP).

Exit codes: 0 success; 2 usage or input error (including a revocation list that does not
verify). Errors are one line on stderr.
This is the edge: the clock is read here and nowhere in ``attestation._ca``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from attestation._errors import CAError
from audit.cli import InputError, configured

if TYPE_CHECKING:  # the commands import what they run: `--help` loads none of it
    from attestation._ca import CertificateAuthority, RevocationKind


ISSUED = "issued"
"""Where ``issue-server`` and ``issue-client`` write by default, under the data directory."""


def _data_dir(data_dir: Path | None) -> Path:
    return configured(data_dir=data_dir).data_dir


def ca_dir(data_dir: Path | None) -> Path:
    """Where the CA lives: ``<data-dir>/ca``."""
    return configured(data_dir=data_dir).ca_dir


def _load(data_dir: Path | None) -> CertificateAuthority:
    from attestation._ca import CertificateAuthority

    try:
        return CertificateAuthority.load(ca_dir(data_dir))
    except CAError as exc:
        raise InputError(str(exc)) from exc


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data directory [env DOCKET_DATA_DIR, else ./docket-data].",
)


def _issued_options(
    files: str, *, ttl: float, most: str = ""
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--out`` and ``--ttl`` of a command that issues a certificate and its key."""
    out = click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=f"Directory to write {files} into [<data-dir>/{ISSUED}: never the working "
        "directory, where `git add .` would take the key].",
    )
    lifetime = click.option(
        "--ttl",
        type=float,
        default=ttl,
        show_default=True,
        help=f"Lifetime in hours ({most}never past the issuing CA's).",
    )
    return lambda command: out(lifetime(command))


@click.group("ca")
def ca() -> None:
    """Docket's certificate authority: X.509 and JWT SVIDs for attested workloads."""


@ca.command("init")
@data_dir_option
@click.option(
    "--trust-domain",
    help="SPIFFE trust domain the CA issues for [the trust_domain setting: docket.local].",
)
def init(data_dir: Path | None, trust_domain: str | None) -> None:
    """Create a root and an issuing CA under <data-dir>/ca (never overwrites one)."""
    from attestation._ca import CertificateAuthority

    settings = configured(data_dir=data_dir, trust_domain=trust_domain)
    directory, trust_domain = settings.ca_dir, settings.trust_domain
    try:
        CertificateAuthority.init(directory, trust_domain, datetime.now(UTC))
    except CAError as exc:
        raise InputError(str(exc)) from exc
    click.echo(f"created a CA for spiffe://{trust_domain} in {directory}")


@ca.command("bundle")
@data_dir_option
def bundle(data_dir: Path | None) -> None:
    """Print the trust bundle: root and issuing CA certificates, PEM."""
    click.echo(_load(data_dir).trust_bundle(datetime.now(UTC)).decode("ascii"), nl=False)


@ca.command("jwks")
@data_dir_option
def jwks(data_dir: Path | None) -> None:
    """Print the JWT-SVID verification keys as a JSON Web Key Set."""
    click.echo(json.dumps(_load(data_dir).jwks(datetime.now(UTC)), indent=2))


@ca.command("rotate")
@data_dir_option
def rotate(data_dir: Path | None) -> None:
    """Make a new issuing key and retire the current one at once: what it signs from now
    on is refused, and its private key is deleted. Its JWT-SVIDs stay verifiable for 5
    minutes, its X.509-SVIDs for 24 h (the longest each can live), then it leaves the
    JWKS and the bundle. A running `docket serve` starts issuing with the new key within
    revocation_poll_seconds (or on SIGHUP)."""
    from attestation._ca import MAX_JWT_TTL, MAX_SVID_TTL, jwk_thumbprint

    directory = ca_dir(data_dir)
    now = datetime.now(UTC)
    authority = _load(data_dir).prune(now)
    rotated = authority.rotate(now)
    try:
        rotated.save(directory)
    except CAError as exc:
        raise InputError(str(exc)) from exc
    (retired, *_) = rotated.retired
    assert retired.retired_at is not None  # rotate sets it
    kid = jwk_thumbprint(rotated.issuing.public_key)
    click.echo(f"new issuing key {kid} in {directory}")
    click.echo(
        f"the previous key is retired at {now:%Y-%m-%dT%H:%M:%SZ}: credentials it signs from "
        f"now on are refused; it leaves the JWKS at "
        f"{retired.retired_at + MAX_JWT_TTL:%Y-%m-%dT%H:%M:%SZ} and the bundle at "
        f"{retired.retired_at + MAX_SVID_TTL:%Y-%m-%dT%H:%M:%SZ}; "
        f"{len(rotated.retired)} retired key(s) kept"
    )


@ca.command("revoke")
@data_dir_option
@click.option(
    "--device",
    metavar="EKHASH",
    help="A device: hex SHA-256 of its EK (its SPIFFE ID's last segment).",
)
@click.option(
    "--spiffe-id", metavar="ID", help="Every credential issued so far for this SPIFFE ID."
)
@click.option("--serial", metavar="HEX", help="One X.509 certificate, by serial (hex).")
@click.option("--reason", required=True, help="Why (kept in the list and in every refusal).")
def revoke(
    data_dir: Path | None,
    device: str | None,
    spiffe_id: str | None,
    serial: str | None,
    reason: str,
) -> None:
    """Revoke a device (it cannot attest again and all its credentials are refused), a
    SPIFFE ID (its credentials issued up to now) or a certificate serial. The list is
    signed by the CA's root and a running `docket serve` applies it within seconds."""
    from attestation._ca import describe, load_revocations

    named: tuple[tuple[RevocationKind, str | None], ...] = (
        ("device", device),
        ("spiffe_id", spiffe_id),
        ("serial", serial),
    )
    given = [(kind, value) for kind, value in named if value is not None]
    if len(given) != 1:
        raise InputError("give exactly one of --device, --spiffe-id or --serial")
    ((kind, value),) = given
    directory = ca_dir(data_dir)
    authority = _load(data_dir)
    try:
        current, _ = load_revocations(directory, authority)
        updated = current.revoke(kind, value, reason, datetime.now(UTC))
        authority.save_revocations(directory, updated)
    except CAError as exc:
        raise InputError(str(exc)) from exc
    click.echo(
        f"revoked {describe(updated.revoked[-1])} (revocation list version {updated.version})"
    )


@ca.command("revocations")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the verified list as JSON.")
def revocations(data_dir: Path | None, as_json: bool) -> None:
    """Print the revocation list, after checking its signature by the CA's root."""
    from attestation._ca import describe, load_revocations

    try:
        listed, _ = load_revocations(ca_dir(data_dir), _load(data_dir))
    except CAError as exc:
        raise InputError(str(exc)) from exc
    if as_json:
        click.echo(listed.model_dump_json(indent=2))
        return
    click.echo(f"revocation list version {listed.version}, {len(listed.revoked)} revoked")
    for revocation in listed.revoked:
        click.echo(describe(revocation))


@ca.command("issue-server")
@data_dir_option
@click.option("--dns", "dns_names", multiple=True, metavar="NAME", help="DNS name (repeatable).")
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="IP address (repeatable).")
@_issued_options("server.pem and server.key", ttl=24.0 * 90)
def issue_server(
    data_dir: Path | None,
    dns_names: tuple[str, ...],
    ips: tuple[str, ...],
    out: Path | None,
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
    out = out or _data_dir(data_dir) / ISSUED
    key_path = _write_key_and_chain(out, "server", credential.key_pem(), credential.chain_pem())
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
@_issued_options("client.pem (leaf + intermediate) and client.key", ttl=24.0, most="at most 24, ")
def issue_client(data_dir: Path | None, spiffe_id: str, out: Path | None, ttl: float) -> None:
    """Issue an X.509-SVID (clientAuth) and a new key for a service that calls Docket
    over mTLS, e.g. Envoy listed in trusted_peps. It carries no device posture."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from attestation._ca import MAX_SVID_TTL

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
    out = out or _data_dir(data_dir) / ISSUED
    key_path = _write_key_and_chain(
        out,
        "client",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        leaf.public_bytes(pem) + issuer.public_bytes(pem),
    )
    click.echo(f"wrote {out / 'client.pem'} and {key_path} for {spiffe_id}")
