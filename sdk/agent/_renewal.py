"""Keeping the device's SVID current: when to renew (``renewal_time``), how long to back
off after a failure (``retry_delay``), what is served now (``IdentityState``), and the
driver that attests, publishes and waits (``Renewer``), with the JWT-SVIDs minted on
demand for any audiences with the served SVID's key (``JwtSvids``).

Every renewal is a full attestation (a fresh key, the PCRs quoted again, so the posture
in the new SVID is current). The schedule is SPIRE's: at half the lifetime, made earlier
by up to a tenth of it at random so that a fleet issued at once does not renew at once.
A failed renewal is retried with exponential backoff (1 s doubling to 60 s, jittered)
while the last SVID is still served; at its expiry it is withdrawn, and the Workload API
answers that there is none (PERMISSION_DENIED after a refusal, UNAVAILABLE otherwise).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from sdk._errors import ConfigurationError, DocketError, PermissionDeniedError
from sdk.agent._attest import AttestResult
from sdk.agent._credentials import JWT_FILE
from sdk.agent._identity import Identity, load_identity
from sdk.agent._jwt import MintedJwt

__all__ = [
    "FIRST_RETRY",
    "MAX_JWT_SETS",
    "MAX_RETRY",
    "IdentityState",
    "JwtSvids",
    "Log",
    "Mint",
    "Renewer",
    "Served",
    "renewal_time",
    "retry_delay",
]

RENEW_AT: Final = 0.5
"""The share of its lifetime after which an SVID is renewed..."""
JITTER: Final = 0.1
"""...made earlier by up to this share of the lifetime, at random."""
FIRST_RETRY: Final = timedelta(seconds=1)
MAX_RETRY: Final = timedelta(seconds=60)

Attest = Callable[[Path, str], AttestResult]
"""Attest the TPM and write the credentials into a directory, for a JWT audience."""
Mint = Callable[[Identity, tuple[str, ...]], MintedJwt]
"""Have Docket mint a JWT-SVID of an SVID for audiences, proven with its key."""
MAX_JWT_SETS: Final = 64
"""The most audience sets whose JWT-SVIDs the agent keeps."""
_JwtKey = tuple[int, tuple[str, ...]]


class Log(Protocol):
    """Where the agent says what it does: a structlog logger fits, as does ``StdLog``."""

    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...


class StdLog:
    """``Log`` over the standard library's ``logging`` (``sdk.agent``), for library use."""

    def __init__(self) -> None:
        self._log = logging.getLogger("sdk.agent")

    def info(self, event: str, **fields: Any) -> None:
        self._log.info("%s %s", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log.warning("%s %s", event, fields)


def renewal_time(received_at: datetime, expires_at: datetime, jitter: float) -> datetime:
    """When to renew an SVID received at ``received_at``: at half its remaining lifetime,
    earlier by ``jitter`` (0 to 1) tenths of it."""
    lifetime = max(expires_at - received_at, timedelta(0))
    return received_at + lifetime * (RENEW_AT - JITTER * jitter)


def retry_delay(failures: int, jitter: float) -> timedelta:
    """How long to wait after the ``failures``-th failure in a row (1, 2, ...): 1 s
    doubling up to 60 s, then scaled to between half and all of it by ``jitter`` (0-1)."""
    base = min(MAX_RETRY, FIRST_RETRY * (1 << min(max(failures - 1, 0), 16)))
    return base * (0.5 + 0.5 * jitter)


@dataclass(frozen=True)
class Served:
    """What the Workload API serves now. ``identity`` is the live SVID or None;
    ``last`` the last one received (its bundles stay served after it is withdrawn);
    ``reason`` why there is none; ``refused`` when Docket refused the device;
    ``generation`` grows with every change."""

    identity: Identity | None
    last: Identity | None
    reason: str
    refused: bool
    generation: int


class IdentityState:
    """The served identity, shared by the renewer (which changes it) and the Workload
    API's calls (which read it, or wait for its next change)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._served = Served(None, None, "no SVID yet: the agent is attesting", False, 0)

    def now(self) -> Served:
        with self._changed:
            return self._served

    def publish(self, identity: Identity) -> None:
        """Serve ``identity`` from now on; wake every waiting stream."""
        self._set(Served(identity, identity, "", False, 0))

    def withdraw(self, reason: str, *, refused: bool) -> None:
        """Serve no SVID, saying ``reason``; the last one's bundles stay served."""
        with self._changed:
            last = self._served.last
        self._set(Served(None, last, reason, refused, 0))

    def _set(self, served: Served) -> None:
        with self._changed:
            self._served = replace(served, generation=self._served.generation + 1)
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake every waiting stream (one of them was cancelled)."""
        with self._changed:
            self._changed.notify_all()

    def wait_after(self, generation: int, done: threading.Event) -> Served:
        """The served state once its generation is past ``generation`` or ``done`` is set
        (then whatever is served). ``done.set()`` must be followed by ``wake()``."""
        with self._changed:
            self._changed.wait_for(lambda: self._served.generation > generation or done.is_set())
            return self._served


class JwtSvids:
    """JWT-SVIDs for a set of audiences, minted on demand with the served X.509-SVID's key
    (``mint``, ``sdk.agent.mint_jwt_svid`` bound to the server: no attestation, no TPM).
    Tokens are kept per SVID and audience set (the order and repeats of the audiences
    aside) and reused while more than half their lifetime is left; at most
    :data:`MAX_JWT_SETS` are kept, the least recently used dropped first. A renewed SVID
    gets tokens of its own, with its posture."""

    def __init__(self, mint: Mint, clock: Callable[[], datetime]) -> None:
        self._mint = mint
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: OrderedDict[_JwtKey, tuple[str, datetime, datetime]] = OrderedDict()

    def remember(
        self, identity: Identity, audiences: tuple[str, ...], token: str, expires: datetime
    ) -> None:
        """Keep ``token`` of ``identity`` for ``audiences``, received now."""
        key = (identity.serial, tuple(sorted(set(audiences))))
        with self._lock:
            self._tokens[key] = (token, self._clock(), expires)
            self._tokens.move_to_end(key)
            while len(self._tokens) > MAX_JWT_SETS:
                self._tokens.popitem(last=False)

    def forget(self) -> None:
        """Drop every token (the device was refused: hand out none it held)."""
        with self._lock:
            self._tokens.clear()

    def _fresh(self, key: _JwtKey, now: datetime) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
            if found is not None:
                self._tokens.move_to_end(key)
        if found is None:
            return None
        token, issued, expires = found
        return token if now < issued + (expires - issued) * RENEW_AT else None

    def fetch(self, identity: Identity, audiences: Iterable[str]) -> str:
        """A JWT-SVID of ``identity`` for ``audiences`` with more than half its life left.
        Raises what ``mint`` raises (``PermissionDeniedError`` when Docket refuses,
        ``InvalidRequestError`` for audiences it does not accept)."""
        wanted = tuple(sorted(set(audiences)))
        token = self._fresh((identity.serial, wanted), self._clock())
        if token is not None:
            return token
        minted = self._mint(identity, wanted)
        self.remember(identity, wanted, minted.token, minted.expires_at)
        return minted.token


class Renewer:
    """Attests, publishes the SVID, and renews it before it expires, until ``stop()``.

    ``attest(out, audience)`` is ``sdk.agent.attest`` bound to the server and TPM;
    ``clock`` gives aware UTC datetimes; ``rand`` the jitter (0-1); ``wait(stop, s)``
    sleeps ``s`` seconds unless ``stop`` is set (True then). Each attestation
    holds ``tpm``, the lock that keeps the TPM to one caller at a time. A
    ``ConfigurationError`` (unusable settings: retrying cannot help) ends ``run``.
    """

    def __init__(
        self,
        attest: Attest,
        out: Path,
        audience: str,
        state: IdentityState,
        jwts: JwtSvids,
        *,
        tpm: threading.Lock,
        log: Log | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] = random.random,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        self._attest = attest
        self._out = out
        self._audience = audience
        self._state = state
        self._jwts = jwts
        self._tpm = tpm
        self._log: Log = log if log is not None else StdLog()
        self._clock = clock
        self._rand = rand
        self._wait = wait
        self._stop = threading.Event()
        self.renewals = 0
        """SVIDs received so far."""

    def stop(self) -> None:
        self._stop.set()

    def _wait_until(self, moment: datetime) -> bool:
        """Sleep until ``moment``; False when stopped first."""
        seconds = (moment - self._clock()).total_seconds()
        return not self._wait(self._stop, max(seconds, 0.0))

    def attest_once(self) -> datetime:
        """One attestation; publishes the SVID and returns when to renew it. Raises what
        ``attest`` raises."""
        with self._tpm:
            result = self._attest(self._out, self._audience)
            received = self._clock()
            identity = load_identity(self._out, received)
        token = (self._out / JWT_FILE).read_text().strip()
        self._jwts.remember(identity, (self._audience,), token, result.jwt_expires_at)
        self._state.publish(identity)
        self.renewals += 1
        renew_at = renewal_time(received, identity.expires_at, self._rand())
        self._log.info(
            "agent: SVID issued" if self.renewals == 1 else "agent: SVID renewed",
            spiffe_id=identity.spiffe_id,
            serial=f"{identity.serial:x}",
            expires=f"{identity.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            renew_at=f"{renew_at:%Y-%m-%dT%H:%M:%SZ}",
            device_class=result.device_class,
            audit_index=result.audit_index,
        )
        return renew_at

    def run(self) -> None:
        """Attest and renew until ``stop()``. Raises ``ConfigurationError``."""
        failures = 0
        while not self._stop.is_set():
            try:
                next_try = self.attest_once()
                failures = 0
            except ConfigurationError:
                raise
            except DocketError as exc:
                failures += 1
                refused = isinstance(exc, PermissionDeniedError)
                if refused:
                    self._jwts.forget()
                next_try = self._clock() + retry_delay(failures, self._rand())
                served = self._state.now().identity
                self._log.warning(
                    "agent: renewal refused" if refused else "agent: renewal failed",
                    reason=exc.message,
                    attempt=failures,
                    retry_at=f"{next_try:%Y-%m-%dT%H:%M:%SZ}",
                    serving=(
                        f"serial {served.serial:x} until {served.expires_at:%H:%M:%SZ}"
                        if served
                        else "nothing"
                    ),
                )
                if not self._expire_before(next_try, exc.message, refused=refused):
                    return
            if not self._wait_until(next_try):
                return

    def _expire_before(self, moment: datetime, reason: str, *, refused: bool) -> bool:
        """Withdraw the served SVID at its expiry when that comes before ``moment``; False
        when stopped first."""
        served = self._state.now().identity
        if served is None or served.expires_at > moment:
            return True
        if not self._wait_until(served.expires_at):
            return False
        self._state.withdraw(
            f"the SVID expired at {served.expires_at:%Y-%m-%dT%H:%M:%SZ} and its renewal "
            f"failed: {reason}",
            refused=refused,
        )
        self._log.warning("agent: SVID expired, no longer served", serial=f"{served.serial:x}")
        return True
