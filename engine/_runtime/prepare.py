"""Preparing ``docket serve`` before anything listens: addresses, TLS, the settings
checks, the bundle (against the revisions this replica accepted), the audit log (and
the checkpoint kept outside it), the CA, the EK trust roots and the challenge store.
Each raises :class:`~engine.ServeError` (or a bundle error) with one line saying what is
wrong, so a serve that cannot start says why and writes nothing."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

from attestation import (
    CAError,
    CertificateAuthority,
    ChallengeStore,
    ReferenceValues,
    StoreUnavailable,
    TrustRoots,
)
from audit import KEPT_NAME, AuditError, AuditLog, Relay, RelayAddress, RequestKeys
from audit.note import VerifierKey
from engine._adapters.admission_http import server_context
from engine._core.bundle import PolicyBundle
from engine._core.signing import load_verifier
from engine._errors import BundleError, ServeError, TrustConfigError
from engine._runtime.settings import Settings
from engine._service.attest import (
    load_trust_roots,
)
from engine._service.bundle_revisions import RevisionGuard
from engine._service.bundle_source import Limits, Puller, open_source
from engine._service.bundle_source.pull import ARCHIVE, DIRECTORY
from engine._service.decisions import utcnow
from engine._service.shadow import load_candidate

log = structlog.get_logger("docket.serve")


@dataclass(frozen=True, slots=True)
class Address:
    """A ``HOST:PORT`` to listen on."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> Address:
        """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6). Raises :class:`ServeError`."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ServeError(f"{what} address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
        return cls(host.strip("[]"), int(port))

    @property
    def loopback(self) -> bool:
        """True for localhost and loopback IPs."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listening:
    """Where a started server listens."""

    grpc: Address
    metrics: Address
    tls: str  # "plaintext", "TLS" or "mTLS"
    bundle: PolicyBundle | None
    workers: int
    audit: str = ""
    """The audit database (password hidden)."""
    audit_key: str = ""
    """The verifier key of the audit log's checkpoints (``name+id+base64``)."""
    attestation: str = ""
    """What attestation trusts: the CA's trust domain, EK roots, reference classes."""
    admission: Address | None = None
    """Where the admission webhook listens (HTTPS), if it does."""
    admission_cert: str = ""
    """The webhook's certificate file."""
    shadow: PolicyBundle | None = None
    """The shadow (candidate) bundle decided beside the live one, if any."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, or None for plaintext. Raises :class:`ServeError`."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ServeError("tls_client_ca needs tls_cert and tls_key (mTLS is TLS first)")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ServeError("TLS needs both tls_cert and tls_key")
    try:
        cert = settings.tls_cert.read_bytes()
        key = settings.tls_key.read_bytes()
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    except OSError as exc:
        raise ServeError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def tls_mode(settings: Settings) -> str:
    if settings.tls_cert is None:
        return "plaintext"
    return "mTLS" if settings.tls_client_ca is not None else "TLS"


def admission_address(settings: Settings) -> Address | None:
    """The webhook's address, or None when ``admission`` is ``off``. Raises ServeError."""
    if settings.admission.strip().lower() == "off":
        return None
    return Address.parse(settings.admission, "admission")


def admission_tls(settings: Settings, ca: CertificateAuthority) -> tuple[Path, Path]:
    """The webhook's certificate and key files: the configured ones, else one issued now
    by the CA for localhost, 127.0.0.1, ::1 and the listening host, written (key 0600)
    to ``<data_dir>/admission/``. Raises :class:`ServeError`."""
    if (settings.admission_cert is None) != (settings.admission_key is None):
        raise ServeError("admission_cert and admission_key go together: give both or neither")
    if settings.admission_cert is not None and settings.admission_key is not None:
        return settings.admission_cert, settings.admission_key
    address = admission_address(settings)
    names = ["localhost", "127.0.0.1", "::1"]
    wildcard = ("0.0.0.0", "::")  # noqa: S104  (names, not binds: they get no SAN)
    if address is not None and address.host not in (*wildcard, *names):
        names.append(address.host)
    try:
        credential = ca.issue_server_cert(names, now=utcnow())
    except CAError as exc:
        raise ServeError(f"admission certificate: {exc}") from exc
    directory = settings.data_dir / "admission"
    cert, key = directory / "server.pem", directory / "server.key"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(credential.key_pem())
        cert.write_bytes(credential.chain_pem())
    except OSError as exc:
        raise ServeError(f"cannot write the admission certificate to {directory}: {exc}") from exc
    return cert, key


SEARCH_KEY = "authzen-search.key"
"""The key of AuthZEN search page tokens, in the data directory: every worker's."""


def search_key(settings: Settings) -> bytes:
    """The data directory's key for AuthZEN search page tokens, made (32 random bytes,
    0600) the first time; whichever process makes it first wins a race, the others read
    it. Raises :class:`ServeError`."""
    path = settings.data_dir / SEARCH_KEY
    try:
        if not path.exists():
            temporary = path.with_name(f".{SEARCH_KEY}.{os.getpid()}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(32))
            try:
                os.link(temporary, path)  # fails if another process made it first
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        key = path.read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read or make the search key {path}: {exc}") from exc
    if len(key) < 32:
        raise ServeError(f"{path}: shorter than 32 bytes; delete it to make a new one")
    return key


def http_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTP listener's TLS context (``http_tls``; None: plain HTTP), asking for a
    client certificate from ``http_client_ca`` when it is set. Raises
    :class:`ServeError` when a file does not load."""
    if not settings.http_tls or settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        context = server_context(settings.tls_cert, settings.tls_key)
        if settings.http_client_ca is not None:
            context.load_verify_locations(cafile=settings.http_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"HTTP listener TLS: {exc}") from exc
    return context


def check_settings(settings: Settings) -> tuple[Address, Address]:
    """The gRPC and metrics addresses, after the checks that keep a server safe to start.

    Raises :class:`ServeError`: plaintext off loopback without ``insecure_plaintext``;
    ``trusted_peps`` without mTLS (nobody could be authenticated as one).
    """
    grpc_address = Address.parse(settings.grpc, "gRPC")
    metrics_address = Address.parse(settings.metrics, "metrics")
    admission_address(settings)
    server_credentials(settings)
    if settings.trusted_peps and settings.tls_client_ca is None:
        raise ServeError(
            "trusted_peps needs mTLS: an enforcement point is trusted only when its client "
            "certificate says who it is; configure tls_cert, tls_key and tls_client_ca"
        )
    if settings.tls_cert is None and not grpc_address.loopback and not settings.insecure_plaintext:
        raise ServeError(
            f"refusing plaintext gRPC on {grpc_address}, which is not loopback: configure "
            "tls_cert and tls_key (and tls_client_ca for mTLS), or set insecure_plaintext"
        )
    if settings.http_client_ca is not None and not settings.http_tls:
        raise ServeError(
            "http_client_ca needs http_tls: a client certificate is asked for only over HTTPS"
        )
    if settings.http_tls and (settings.tls_cert is None or settings.tls_key is None):
        raise ServeError("http_tls needs tls_cert and tls_key (the HTTP listener's certificate)")
    if settings.bundle_url is not None and settings.bundle_public_key is None:
        raise ServeError(
            f"bundle_url {settings.bundle_url} needs bundle_public_key: a bundle pulled over "
            "the network is used only once its signature verifies"
        )
    return grpc_address, metrics_address


def bundle_key(settings: Settings) -> VerifierKey | None:
    path = settings.bundle_public_key
    return load_verifier(path) if path else None


def revision_guard(settings: Settings) -> RevisionGuard:
    """The anti-rollback state of this replica (``<data_dir>/bundle-state.json``)."""
    return RevisionGuard(settings.data_dir, signed=settings.bundle_public_key is not None)


def bundle_path(settings: Settings) -> Path:
    """What the workers load and watch: ``bundle``, or with ``bundle_url`` the last good
    bundle pulled (``<data_dir>/bundle-pulled/bundle.tar.gz``)."""
    if settings.bundle_url is None:
        return settings.bundle
    return settings.data_dir / DIRECTORY / ARCHIVE


def bundle_puller(settings: Settings) -> Puller | None:
    """The puller of ``bundle_url`` (None without one). Raises :class:`~engine.BundleError`."""
    if settings.bundle_url is None:
        return None
    return Puller(
        source=open_source(settings.bundle_url),
        directory=settings.data_dir / DIRECTORY,
        public_key=bundle_key(settings),
        guard=revision_guard(settings),
        limits=Limits(
            settings.bundle_max_bytes,
            settings.bundle_pull_timeout_seconds,
            settings.bundle_long_poll_seconds,
        ),
        interval=settings.bundle_pull_seconds,
    )


def pull_at_start(settings: Settings) -> None:
    """With ``bundle_url``, pull the bundle once before anything listens. When the source
    cannot be reached, or serves a bundle that is refused, the last good bundle is used
    (logged, with its age); without one the start fails. Raises
    :class:`~engine.BundleError`."""
    puller = bundle_puller(settings)
    if puller is None:
        return
    # Never a long poll (the start would wait for the next release); the audit log is not
    # open yet: a refusal or an outage is reported by a worker's next pull.
    quick = dataclasses.replace(puller.limits, long_poll=None)
    pulled = dataclasses.replace(puller, limits=quick).pull(report=False)
    url = puller.source.url
    if pulled.outcome in ("new", "unchanged"):
        log.info("bundle.pulled", source=url, outcome=pulled.outcome, version=pulled.version)
        return
    event = "bundle.pull_unreachable" if pulled.outcome == "unreachable" else "bundle.pull_refused"
    log.error(event, source=url, reason=pulled.reason, problems=list(pulled.problems))
    if not puller.archive.exists():
        raise BundleError(
            [
                f"{url}: no bundle: {pulled.problems[0] if pulled.problems else pulled.outcome}, "
                f"and no last good bundle in {puller.directory}"
            ]
        )
    state = puller.read_state()
    age = puller.age(utcnow())
    log.warning(
        "bundle.last_good",
        source=url,
        path=str(puller.archive),
        version=state.version,
        revision=state.revision,
        age_seconds=None if age is None else round(age, 1),
        pulled_at=None if state.pulled_at is None else state.pulled_at.isoformat(),
    )


def load_bundle(settings: Settings) -> PolicyBundle:
    """The configured bundle (:func:`bundle_path`), checked against the revisions this
    replica accepted (not yet recorded: a worker does that). Raises
    :class:`~engine.BundleError`."""
    bundle = PolicyBundle.load(bundle_path(settings), public_key=bundle_key(settings))
    revision_guard(settings).check(bundle)
    return bundle


def load_shadow(settings: Settings) -> PolicyBundle | None:
    """The shadow bundle (``shadow_bundle``; None without one), verified as the live one
    is and its policy tests passed, never held to the live revisions. Raises
    :class:`~engine.ServeError` saying why it was refused, in one line."""
    path = settings.shadow_bundle
    if path is None:
        return None
    try:
        return load_candidate(path, public_key=bundle_key(settings), now=utcnow())
    except BundleError as exc:
        raise ServeError(f"shadow bundle {path} refused: {exc}") from exc


def open_audit(settings: Settings, relay: RelayAddress | None = None) -> AuditLog:
    """The audit log the settings name (created, with its signing key, on first use),
    keeping its latest checkpoint in ``<data-dir>/audit-checkpoint`` too. A log that
    does not contain the checkpoint kept there (an older or another database) is
    refused. With ``relay`` (a worker process) it commits through the writer of the
    process that owns the log. Raises :class:`ServeError` with one line saying what is
    wrong."""
    try:
        request_keys = None
        if settings.record_requests:
            request_keys = RequestKeys.in_dir(settings.data_dir)
            request_keys.current()  # made now, before any worker starts, or refused now
        audit = AuditLog.open(
            settings.database_url,
            keys=settings.audit_keys_dir,
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_interval=settings.audit_checkpoint_seconds,
            max_queue=settings.audit_queue,
            kept=settings.data_dir / KEPT_NAME,
            relay=None if relay is None else Relay(relay),
            request_keys=request_keys,
            request_retention_days=settings.request_retention_days,
        )
    except (AuditError, OSError) as exc:
        raise ServeError(f"audit log: {exc}") from exc
    try:
        audit.check_kept()
    except AuditError as exc:
        audit.store.close()
        raise ServeError(f"audit log: {exc}") from exc
    return audit


def prepare_ca(settings: Settings) -> CertificateAuthority:
    """The CA under the data directory, created on first start. Raises :class:`ServeError`."""
    directory = settings.ca_dir
    try:
        if (directory / "ca.json").exists():
            return CertificateAuthority.load(directory)
        ca = CertificateAuthority.init(directory, settings.trust_domain, utcnow())
    except CAError as exc:
        raise ServeError(f"CA: {exc}") from exc
    log.info("serve.ca_created", directory=str(directory), trust_domain=ca.trust_domain)
    return ca


def trust_roots(settings: Settings) -> TrustRoots:
    """The EK roots and allow-list the settings name. Raises :class:`ServeError`."""
    try:
        return load_trust_roots(settings.ek_roots_dir, settings.ek_allowlist_file)
    except TrustConfigError as exc:
        raise ServeError(str(exc)) from exc


def open_challenges(settings: Settings) -> ChallengeStore:
    """The challenge store (in the audit database). Raises :class:`ServeError`."""
    try:
        return ChallengeStore(settings.database_url)
    except StoreUnavailable as exc:
        raise ServeError(f"challenge store: {exc}") from exc


def describe_attestation(
    ca: CertificateAuthority, roots: TrustRoots, reference: ReferenceValues
) -> str:
    """One line on what attestation trusts, for the start-up banner."""
    classes = ", ".join(c.name for c in reference.classes) or "none: no device can attest"
    trusted = f"{len(roots.ek_roots)} EK roots, {len(roots.ek_allowlist)} allow-listed EKs"
    if not roots.ek_roots and not roots.ek_allowlist:
        trusted += " (no device is trusted)"
    return f"trust domain {ca.trust_domain}; {trusted}; reference classes: {classes}"
