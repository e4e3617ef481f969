"""``docket attest``: the device agent on the command line (``sdk.agent.attest``).

Exit codes: 0 credentials written; 1 Docket refused the attestation (a check failed);
2 usage or input error, including a TPM that fails, an unreachable server or unusable TLS
settings. Errors are one line on stderr.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from audit.cli import CheckFailed, InputError
from sdk import DEFAULT_TARGET, DocketError, PermissionDeniedError, TLSConfig

if TYPE_CHECKING:
    from sdk.agent import TpmBackend

__all__ = ["attest"]


def _tls_config(
    tls: bool,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
) -> TLSConfig | None:
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together (mTLS): give both")
    if not (tls or ca or cert or server_name):
        return None
    return TLSConfig(ca_cert=ca, client_cert=cert, client_key=key, server_name=server_name)


def _read_intermediates(paths: tuple[Path, ...]) -> list[bytes]:
    """DER bytes of each certificate file (PEM or DER), in order."""
    from cryptography import x509  # the agent's dependency; `docket` has it installed
    from cryptography.hazmat.primitives.serialization import Encoding

    certs: list[bytes] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            if b"-----BEGIN" in data:
                certs += [
                    c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(data)
                ]
            else:
                certs.append(x509.load_der_x509_certificate(data).public_bytes(Encoding.DER))
        except ValueError as exc:
            raise InputError(f"{path}: not a PEM or DER certificate: {exc}") from exc
    return certs


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command()
@click.option(
    "--server",
    metavar="HOST:PORT",
    default=DEFAULT_TARGET,
    show_default=True,
    help="Docket's gRPC address.",
)
@click.option(
    "--tcti",
    envvar="TPM2TOOLS_TCTI",
    required=True,
    metavar="TCTI",
    help="The TPM, as tpm2-tools names it: device:/dev/tpmrm0, "
    "swtpm:host=127.0.0.1,port=2321, ... [env TPM2TOOLS_TCTI].",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for svid.pem, svid.key, bundle.pem and jwt (created 0700).",
)
@click.option("--audience", default="docket", show_default=True, help="The JWT-SVID's audience.")
@click.option("--tls", "use_tls", is_flag=True, help="Use TLS with the system's roots.")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA certificate (PEM) for Docket's server certificate; implies --tls.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Client certificate (PEM) for mTLS; implies --tls.",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Client private key (PEM)."
)
@click.option("--tls-server-name", metavar="NAME", help="Name to check the server certificate for.")
@click.option(
    "--ek-intermediate",
    "ek_intermediates",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Certificate (PEM or DER) between the EK certificate and its root; repeatable.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds each call to Docket may take, retries included.",
)
@click.option(
    "--tpm-backend",
    type=click.Choice(["auto", "tpm2-tools", "tpm2-pytss"]),
    default="auto",
    show_default=True,
    help="How to drive the TPM: tpm2-tools, tpm2-pytss (pip install 'docket[tpm]'), or "
    "auto (tpm2-tools when on PATH, else tpm2-pytss).",
)
@click.option(
    "--event-log",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A recorded TCG boot event log to send (binary_bios_measurements format) "
    "[default: /sys/kernel/security/tpm0/binary_bios_measurements when readable].",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Allow plaintext gRPC to a non-loopback server (never do this in production).",
)
def attest(
    server: str,
    tcti: str,
    out: Path,
    audience: str,
    use_tls: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_server_name: str | None,
    ek_intermediates: tuple[Path, ...],
    timeout: float,
    tpm_backend: TpmBackend,
    event_log: Path | None,
    insecure_plaintext: bool,
) -> None:
    """Attest this device's TPM to Docket and write its credentials into --out.

    Creates the EK and a fresh AK, answers Docket's challenge with a quote of the PCRs it
    asks for, and writes the X.509 SVID (svid.pem, svid.key), the trust bundle
    (bundle.pem) and the JWT-SVID (jwt). Run it again to renew: every run attests anew
    with a fresh key. The firmware's boot event log goes with the quote (the kernel's,
    or --event-log FILE), for classes that appraise it. Exits 1 when Docket refuses the
    device.
    """
    from sdk.agent import attest as run_attestation  # imports cryptography: only when used

    tls = _tls_config(use_tls, tls_ca, tls_cert, tls_key, tls_server_name)
    try:
        result = run_attestation(
            server,
            tcti,
            out,
            audience=audience,
            tls=tls,
            timeout=timeout,
            ek_intermediates=_read_intermediates(ek_intermediates),
            insecure_plaintext=insecure_plaintext,
            backend=tpm_backend,
            event_log=event_log,
        )
    except PermissionDeniedError as exc:
        raise CheckFailed(exc.message) from exc
    except DocketError as exc:
        raise InputError(exc.message) from exc
    click.echo(f"docket: attested {result.spiffe_id}")
    dev = "  (a software TPM: not for production)" if result.device_class == "dev" else ""
    click.echo(f"  device class  {result.device_class}{dev}")
    boot_chain = result.posture.get("boot_chain")
    if boot_chain:
        secure = "on" if result.posture.get("secure_boot") else "off"
        click.echo(f"  boot          Secure Boot {secure}, boot chain {boot_chain[:16]}…")
    click.echo(f"  X.509 SVID    expires {_when(result.svid_expires_at)}")
    click.echo(f"  JWT-SVID      expires {_when(result.jwt_expires_at)} (audience {audience})")
    click.echo(f"  audit index   {result.audit_index}")
    files = (result.svid_path, result.key_path, result.bundle_path, result.jwt_path)
    click.echo(f"  wrote         {', '.join(str(p) for p in files)}")
