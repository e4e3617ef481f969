"""``Agent``: the renewal loop and the Workload API together, what ``docket agent run``
runs until it is stopped."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sdk._closing import Closing
from sdk.agent._renewal import Attest, IdentityState, JwtSvids, Log, Mint, Renewer, StdLog
from sdk.agent._workload_api import WorkloadApi, WorkloadApiServer, socket_path

__all__ = ["Agent"]


class Agent(Closing):
    """Keeps the device's SVID current and serves it on the SPIFFE Workload API.

    ``attest(out, audience)`` attests the TPM and writes the credentials into ``out``
    (``sdk.agent.attest`` bound to the server, the TPM and the TLS settings). ``run()``
    listens on ``socket`` (a path or ``unix:PATH``), attests, writes the credentials
    into ``out`` and renews them at half their lifetime, until ``close()`` (from another
    thread) or an exception. ``audience`` is the JWT-SVID's written to ``out/jwt``;
    ``mint(identity, audiences)`` has Docket mint a JWT-SVID of the served SVID for the
    audiences a workload asks (``sdk.agent.mint_jwt_svid`` bound to the server and TLS
    settings), without the TPM.

    Raises ``ConfigurationError`` for an unusable socket or settings.
    """

    def __init__(
        self,
        attest: Attest,
        out: Path,
        socket: str | Path,
        *,
        mint: Mint,
        audience: str = "docket",
        log: Log | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.socket = socket_path(socket)
        self.state = IdentityState()
        tpm = threading.Lock()
        self._log: Log = log if log is not None else StdLog()
        self.jwts = JwtSvids(mint, clock)
        self.renewer = Renewer(
            attest, out, audience, self.state, self.jwts, tpm=tpm, log=log, clock=clock, rand=rand
        )
        self._api = WorkloadApi(self.state, self.jwts, clock)
        self._server: WorkloadApiServer | None = None

    def run(self) -> None:
        """Serve and renew until ``close()``. Raises ``ConfigurationError``."""
        self._server = WorkloadApiServer(self._api, self.socket)
        self._log.info(
            "agent: Workload API listening",
            socket=f"unix:{self.socket}",
            hint=f"export SPIFFE_ENDPOINT_SOCKET=unix:{self.socket}",
        )
        try:
            self.renewer.run()
        finally:
            self.close()

    def close(self) -> None:
        """Stop renewing and serving; remove the socket. Idempotent."""
        self.renewer.stop()
        if self._server is not None:
            self._server.close()
