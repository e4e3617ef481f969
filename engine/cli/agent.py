"""``docket agent run``: the device agent as a daemon (``sdk.agent.Agent``).

It attests like ``docket attest`` (the same flags), keeps the credentials in --out
current by renewing them at half their lifetime, and serves them on the SPIFFE Workload
API on a Unix socket. It runs until SIGTERM or SIGINT (exit 0). Exit codes: 2 for unusable
settings (the socket, the output directory, TLS files); a refused or failed renewal is
logged and retried, never an exit.
"""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from audit.cli import InputError
from engine.cli.attest import _read_intermediates, _tls_config
from engine.cli.attest import attest as attest_command
from sdk import DocketError

if TYPE_CHECKING:
    from sdk.agent import AttestResult

__all__ = ["agent"]


class _Stop(Exception):
    """SIGTERM or SIGINT arrived: leave the renewal loop, close the socket."""


def _stop(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the close
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


@click.group()
def agent() -> None:
    """The device agent as a daemon: renewed SVIDs and the SPIFFE Workload API."""


@agent.command(
    "run",
    # the flags of `docket attest`, which this command runs again and again
    params=[p for p in attest_command.params if p.name != "help"],
)
@click.option(
    "--socket",
    "socket_address",
    metavar="PATH",
    default=None,
    help="The Workload API's Unix socket (created 0600; its directory 0700 when missing) "
    "[<out>/agent.sock]. Workloads find it in SPIFFE_ENDPOINT_SOCKET=unix:PATH.",
)
def run(socket_address: str | None, **flags: Any) -> None:
    """Attest this device, keep its SVIDs renewed, serve them on the Workload API.

    Attests as `docket attest` does and writes svid.pem, svid.key, bundle.pem and jwt
    into --out (each replaced atomically), then renews them at half their lifetime
    (less up to a tenth, at random), attesting again so the posture is current. A
    renewal that fails is retried with backoff (1 s doubling to 60 s) while the last
    SVID is served; once it expires it is no longer served. A device Docket refuses
    (revoked, or its PCRs no longer match) gets no new SVID.

    The SPIFFE Workload API (FetchX509SVID, FetchX509Bundles, FetchJWTSVID,
    FetchJWTBundles, ValidateJWTSVID) is served on --socket to clients that send the
    workload.spiffe.io: true header. A JWT-SVID for any audiences a workload asks is
    minted by Docket for the served SVID, proven with its key (no TPM); it is reused
    until half its life. Runs until SIGTERM or SIGINT.
    """
    import structlog

    from sdk.agent import Agent, mint_jwt_svid
    from sdk.agent import attest as run_attestation  # imports cryptography: only when used

    out: Path = flags["out"]
    tls = _tls_config(
        flags["use_tls"],
        flags["tls_ca"],
        flags["tls_cert"],
        flags["tls_key"],
        flags["tls_server_name"],
    )
    intermediates = _read_intermediates(flags["ek_intermediates"])

    def attest_into(directory: Path, audience: str) -> AttestResult:
        return run_attestation(
            flags["server"],
            flags["tcti"],
            directory,
            audience=audience,
            tls=tls,
            timeout=flags["timeout"],
            ek_intermediates=intermediates,
            insecure_plaintext=flags["insecure_plaintext"],
            backend=flags["tpm_backend"],
            event_log=flags["event_log"],
        )

    mint = functools.partial(
        mint_jwt_svid,
        flags["server"],
        tls=tls,
        timeout=flags["timeout"],
        insecure_plaintext=flags["insecure_plaintext"],
    )
    log = structlog.get_logger("docket.agent")
    try:
        daemon = Agent(
            attest_into,
            out,
            socket_address or out / "agent.sock",
            mint=mint,
            audience=flags["audience"],
            log=log,
        )
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            daemon.run()
        except _Stop as stop:
            log.info("agent: stopped", signal=str(stop))
        finally:
            daemon.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except DocketError as exc:
        raise InputError(exc.message) from exc
