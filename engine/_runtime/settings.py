"""Settings: defaults, then ``docket.toml``, then ``DOCKET_*`` environment variables,
then command-line flags (applied by the CLI)."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from engine._errors import ConfigError

CONFIG_ENV = "DOCKET_CONFIG"
DEFAULT_CONFIG = Path("docket.toml")
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def check_config_file(path: Path, *, named: bool) -> None:
    """Refuse a configuration file that cannot be used, in one line: ``named`` (by
    ``DOCKET_CONFIG``) but missing or unreadable, or not TOML (``docket.toml:1:24:
    invalid TOML: …``). Raises :class:`~engine._errors.ConfigError`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError(f"{CONFIG_ENV}={path}: no such file") from None
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from exc
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_WHERE.search(message)
        if where is None:
            raise ConfigError(f"{path}: invalid TOML: {message}") from exc
        line, column = where.groups()
        raise ConfigError(
            f"{path}:{line}:{column}: invalid TOML: {message[: where.start()]}"
        ) from exc


def describe_error(exc: ValidationError) -> str:
    """The first problem of invalid settings as one line naming the setting; an unknown
    one suggests the nearest known name (``log_levl: unknown setting (did you mean
    log_level?)``)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        near = difflib.get_close_matches(where, list(Settings.model_fields), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        return f"configuration: {where}: unknown setting{hint}"
    return f"configuration: {where}: {first['msg']}"


class Settings(BaseSettings):
    """Docket's settings. Environment variables are ``DOCKET_<NAME>``.

    The configuration file is ``$DOCKET_CONFIG`` if set, else ``./docket.toml`` if
    present; its keys are the field names below.
    """

    model_config = SettingsConfigDict(env_prefix="DOCKET_", extra="forbid", frozen=True)
    _read_sources: ClassVar[bool] = True

    data_dir: Path = Path("docket-data")
    db_url: str | None = None
    bundle: Path = Path("policies")
    bundle_public_key: Path | None = None
    """A file holding the bundle verifier key (``<name>+<id>+<base64>``, as ``docket policy
    keygen`` writes ``PREFIX.pub``): every bundle must then carry a ``bundle.sig`` signed
    note by it."""
    bundle_url: str | None = None
    """Pull the bundle from here instead of reading ``bundle``: ``https://…`` or
    ``http://…`` (any static server or object store; ETag/If-None-Match) or
    ``oci://HOST[:PORT]/REPOSITORY[:TAG]`` (an OCI registry; plain HTTP on loopback). Needs
    ``bundle_public_key``: every pulled bundle is verified, and checked against the
    revisions accepted, before it is used; the last good one is kept in
    ``<data_dir>/bundle-pulled/`` and used when the source cannot be reached at start."""
    bundle_pull_seconds: float = Field(default=30.0, gt=0, le=86_400)
    """How often a replica asks ``bundle_url`` for a new bundle (give or take 10 %, so
    that replicas started together spread out)."""
    bundle_long_poll_seconds: float | None = Field(default=None, ge=1, le=3600)
    """With an HTTP source that supports it (OPA's long polling: ``Prefer: wait=N``,
    answered with ``Preference-Applied``), hold each pull up to this long until a new
    bundle is there, then ask again at once: a bundle arrives as soon as it is published.
    A source that does not support it answers at once, and ``bundle_pull_seconds`` stays
    the interval. None: ordinary polling."""
    bundle_pull_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """Deadline of each socket operation of a pull, and of the whole download."""
    bundle_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """A download larger than this is refused (before it is read when its size is
    announced; cut off past it when not)."""
    max_bundle_staleness: float | None = Field(default=None, gt=0)
    """Seconds after which a pulled bundle whose source has not confirmed it is stale:
    health (``docket.bundle``) and metrics (``docket_bundle_stale``) say so, and permits
    annotated ``@fresh_policy`` stop allowing (the rest keeps working). None: never."""
    shadow_bundle: Path | None = None
    """A candidate bundle (directory or archive) decided beside the live one on every
    request, never answering: its disagreements are counted
    (``docket_shadow_decisions_total``) and annotated on the decision's audit entry
    (``docket policy shadow-report``). Verified as the live bundle is, and its policy
    tests must pass; watched and reloaded as the live one is."""

    revocations_url: str | None = None
    """Pull the CA's signed revocation list from here (``http://…``/``https://…``: another
    replica's ``/.well-known/docket-revocations.json``, or a static copy): verified with
    this replica's CA, never older than the list in force, installed in the CA directory
    (every process applies it within ``revocation_poll_seconds``). None: only ``docket ca
    revoke`` on this replica's CA directory changes it."""
    revocations_pull_seconds: float = Field(default=30.0, gt=0, le=86_400)
    """How often ``revocations_url`` is asked (give or take 10 %)."""
    max_revocation_staleness: float | None = Field(default=None, gt=0)
    """Seconds after which a pulled revocation list the source has not confirmed is stale:
    health (``docket.revocations``) and metrics (``docket_revocations_stale``) say so, and
    permits annotated ``@fresh_policy`` stop allowing. None: never."""

    @field_validator("revocations_url")
    @classmethod
    def _revocations_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: expected http://… or https://…")
        return value

    @field_validator("bundle_url")
    @classmethod
    def _bundle_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "oci://")):
            raise ValueError(f"{value!r}: expected http://…, https://… or oci://host/repo:tag")
        return value

    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    bundle_poll_seconds: float = Field(default=1.0, gt=0)
    grpc: str = "127.0.0.1:50051"
    """``HOST:PORT`` of the gRPC service (Decisions, ext_authz, health, reflection)."""
    metrics: str = "127.0.0.1:9464"
    """``HOST:PORT`` of the HTTP listener: Prometheus ``/metrics``, the CA's JWKS and
    revocation list, and the AuthZEN API."""
    authzen_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    """The AuthZEN PDP identifier (``policy_decision_point`` of the metadata, and the
    base of its endpoint URLs) when the listener is reached through a proxy; by default
    ``http://`` and the request's ``Host``."""
    http_max_connections: int = Field(default=256, ge=1, le=4096)
    """Connections the HTTP listener serves at once (per process); past it an idle
    kept-alive connection is let go, else the new request gets 503."""
    admission: str = "127.0.0.1:8443"
    """``HOST:PORT`` of the Kubernetes admission webhook (HTTPS), or ``off``."""
    admission_cert: Path | None = None
    admission_key: Path | None = None
    """The webhook's certificate chain and key (PEM). Without them ``docket serve``
    issues one from its CA for ``localhost``, 127.0.0.1 and the listening host, in
    ``<data_dir>/admission/`` (the API server's caBundle is then ``docket ca bundle``)."""
    admission_cluster: str = Field(default="kubernetes", min_length=1)
    """The ``Cluster`` entity admission decisions are about (its registries and
    jurisdictions are in the bundle's entities)."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the gRPC port (SO_REUSEPORT); cedarpy holds the GIL,
    so one per core is how decisions scale."""
    connection_balancing: Literal["round-robin", "hash"] = "round-robin"
    """With ``workers > 1``, how new gRPC connections are dealt to the workers: in turn
    (a kernel program on the shared port, where the process may load one: root or
    ``CAP_BPF``; else the kernel's hash, saying why once per worker), or by the kernel's
    hash of the connection's addresses, which gives 16 connections 11/5 as often as 8/8
    (benchmarks/README.md, "the tail, balanced")."""
    grpc_threads: int = Field(default=4, ge=1, le=256)
    """Threads per process for the RPCs that are not served on the event loop (Place,
    ReloadBundle, attestation, audit proofs, health); Authorize, BatchAuthorize and
    Check need none. cedarpy holds the GIL: more threads only add switching."""
    max_concurrent_rpcs: int = Field(default=512, ge=1)
    """Past this many RPCs in flight in one process (waiting for their audit commit
    included), callers get RESOURCE_EXHAUSTED."""
    memo_entries: int = Field(default=50_000, ge=0)
    """Decisions each process remembers (the decision memo: a request decided before under
    the bundle in force is not evaluated again), and the bound on the Authorize messages
    it remembers having read (the request memo: at most 4,096). 0 turns both off: every
    request is read and evaluated, and answer times no longer tell a repeated request
    (SECURITY.md, "Out of scope")."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """With it, clients must present a certificate from this CA (mTLS)."""
    http_tls: bool = False
    """Serve the HTTP listener (``metrics``: ``/metrics``, the JWKS, the revocation list,
    AuthZEN) over HTTPS with ``tls_cert``/``tls_key``. A replica pulling this one's
    revocation list (``revocations_url``) then needs their CA trusted (``SSL_CERT_FILE``)."""
    http_client_ca: Path | None = None
    """With ``http_tls``: every caller of the HTTP listener (a Prometheus scraper, an
    AuthZEN PEP, a replica pulling the revocation list) must present a certificate from
    this CA; anyone else is refused at the handshake."""
    insecure_plaintext: bool = False
    """Allow plaintext gRPC on an address other than loopback (never the default)."""
    trusted_peps: tuple[str, ...] = ()
    """SPIFFE IDs of the enforcement points (Envoy, a gateway) that may name the subject
    of an ext_authz Check — ``source.principal``, ``source.certificate``, jwt_authn
    metadata, ``context.*`` route extensions — when they call over mTLS
    (``tls_client_ca``). Anyone else's Check carrying such a field is refused. In
    ``docket.toml`` a list; ``DOCKET_TRUSTED_PEPS`` takes a JSON list."""

    @field_validator("trusted_peps")
    @classmethod
    def _spiffe_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spiffe_id in value:
            if not spiffe_id.startswith("spiffe://") or len(spiffe_id) <= len("spiffe://"):
                raise ValueError(f"{spiffe_id!r} is not a SPIFFE ID (spiffe://trust-domain/…)")
        return value

    audit_keys: Path | None = None
    """Directory of the audit checkpoint signing keys [``<data_dir>/audit-keys``]; every
    process sharing one database must use the same keys."""
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    """Sign a checkpoint once this many entries were added since the last…"""
    audit_checkpoint_seconds: float = Field(default=1.0, gt=0)
    """…or after this many seconds with anything new."""
    audit_queue: int = Field(default=50_000, ge=1)
    """Audit entries waiting for a commit before callers get RESOURCE_EXHAUSTED."""
    retention_days: int | None = Field(default=None, ge=1)
    """How long entries stay in the live log before `docket audit archive --retention`
    archives them (None: keep everything; docs/retention.md)."""
    record_requests: bool = False
    """Keep the full input of every decision and placement (principal, action, resource,
    context with the verified posture, the caller's entities, the provenance) beside its
    audit entry, encrypted under ``<data_dir>/request-keys``, so that ``docket policy diff``
    can replay it against a candidate bundle. Off by default: the log itself keeps only
    each request's digest, and a recorded request is personal data (who asked for what,
    from which device) that the log would otherwise not hold; it also adds about a
    kilobyte per decision (benchmarks/README.md, "replay"). Redaction erases an entry's
    recorded request with its payload."""
    request_retention_days: int = Field(default=30, ge=1)
    """Recorded requests older than this are deleted (their entries stay in the log); a
    schedule of their own, shorter than the log's ``retention_days``. Archives never carry
    them."""
    audit_writer: Literal["per-worker", "supervisor"] = "per-worker"
    """With ``workers > 1``, who commits: each worker its own entries (its group commits
    take turns on the database's write lock), or the supervisor every worker's (one
    writer for the log, fed over a Unix socket: ``audit._relay``). Measured on 2 cores
    with SQLite (benchmarks/README.md, "one writer per log"): the same throughput and CPU
    per call, but fewer entries per commit and a higher median latency with the
    supervisor's writer, hence the default."""

    trust_domain: str = "docket.local"
    """The SPIFFE trust domain of the CA that ``docket serve`` creates on first start."""
    ek_roots: Path | None = None
    """Directory of TPM manufacturer (EK CA) certificates, ``*.pem``
    [``<data_dir>/trust/ek-roots``]. With none, no device is trusted."""
    ek_allowlist: Path | None = None
    """File of EK hashes (hex SHA-256 of the EK's SubjectPublicKeyInfo, one per line)
    trusted without a certificate [``<data_dir>/trust/ek-allowlist``, if present]."""
    quote_hashes: tuple[Literal["sha1", "sha256", "sha384", "sha512"], ...] = Field(
        default=("sha256", "sha384", "sha512"), min_length=1
    )
    """Hashes an attestation quote may be signed with and its PCR banks may use; a quote
    or bank in another is refused ("quote signed with sha1, which this appraisal does not
    accept"). SHA-1 is off unless listed. In ``docket.toml`` a list;
    ``DOCKET_QUOTE_HASHES`` takes a JSON list."""
    svid_ttl_seconds: int = Field(default=3600, ge=10, le=86_400)
    """Lifetime of the X.509-SVIDs issued on attestation (JWT-SVIDs live 5 minutes, at
    most as long as the SVID they are minted for), 10 s to a day."""
    jwt_audience: str = Field(default="docket", min_length=1)
    """The audience Docket accepts on JWT-SVIDs presented with decision requests."""
    revocation_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    """How often ``docket serve`` checks the CA directory (``ca.json`` after ``docket ca
    rotate``, ``revocations.json`` after ``docket ca revoke``) for changes; SIGHUP
    reloads at once. A revoked credential is refused within about this long."""
    # -- admission (issue 13) ---------------------------------------------------------------
    admission_namespaces: str = "none"
    """Where the webhook reads a namespace's ``docket.io/classification`` label:
    ``in-cluster`` (the Kubernetes API, the pod's service account), ``kubeconfig:<path>``,
    ``file:<path>`` (``kubectl get namespaces -o json`` output, re-read when it changes)
    or ``none`` (every namespace is ``internal`` and the object's label decides). With a
    source, a namespace it cannot find or read is denied."""
    admission_namespace_cache_seconds: float = Field(default=5.0, ge=0, le=3600)
    """How long a namespace read from the Kubernetes API is believed."""
    admission_max_connections: int = Field(default=64, ge=1, le=4096)
    """Webhook connections open at once (uvicorn's limit; reviews run in as many threads);
    past it an idle kept-alive connection is let go, else the new request gets 503."""
    admission_request_seconds: float = Field(default=5.0, gt=0, le=60)
    """Deadline for a webhook connection's TLS handshake, and for each request's headers
    and body from its first byte (the first request: from the end of the handshake): a
    client that trickles is cut off."""
    # -- an edge site and its collector (issue 16) -----------------------------------------
    site_name: str | None = Field(default=None, min_length=1, max_length=128)
    """This site's name at the collector (``docket collector serve --site NAME=VKEY``).
    With ``collector_url``, the process that owns the audit log pushes its entries and
    checkpoints there."""
    collector_url: str | None = None
    """The collector's ``http(s)://HOST:PORT``. Decisions never wait for it: the site keeps
    deciding and logging while it is unreachable, and its backlog follows."""
    witnesses: tuple[str, ...] = ()
    """The witnesses a checkpoint needs to be final, each ``URL=VKEY`` (a C2SP
    tlog-witness's URL prefix and cosignature/v1 verifier key; the collector, by its
    ``collector_url``, is one). In ``docket.toml`` a list; ``DOCKET_WITNESSES`` a JSON list."""
    witness_quorum: int | None = Field(default=None, ge=1)
    """How many of ``witnesses`` must cosign [all of them]."""
    site_push_seconds: float = Field(default=1.0, gt=0, le=3600)
    """How often the site pushes to the collector when it has a new checkpoint; while the
    collector is unreachable the wait doubles up to 60 s."""

    @field_validator("collector_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    # -- tracing (issue 18) ---------------------------------------------------------------
    otel_endpoint: str | None = None
    """Where ``docket serve`` sends its traces (OpenTelemetry, OTLP): a collector's URL,
    ``http://HOST:4317`` for ``otel_protocol = "grpc"`` (``https://`` for TLS),
    ``http://HOST:4318`` for ``"http"``. Unset (the default), nothing is traced or sent."""
    otel_protocol: Literal["grpc", "http"] = "grpc"
    """OTLP over gRPC, or over HTTP (protobuf bodies to ``/v1/traces``)."""
    otel_service_name: str = Field(default="docket", min_length=1)
    """The ``service.name`` Docket's spans carry."""
    otel_sampling_ratio: float = Field(default=1.0, ge=0, le=1)
    """The share of traces that start at Docket which are recorded; a caller's trace
    follows the caller's own sampling decision (its ``traceparent`` flags)."""

    @field_validator("otel_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @classmethod
    def load(cls, **flags: object) -> Settings:
        """The settings: defaults, then the configuration file, then ``DOCKET_*``, then
        ``flags`` (a flag left out, ``None``, keeps the setting). ``docket`` builds them
        once, at its root. Raises :class:`~engine._errors.ConfigError` in one line."""
        try:
            return cls(**_given(flags))
        except ValidationError as exc:
            raise ConfigError(describe_error(exc)) from exc

    def with_flags(self, **flags: object) -> Settings:
        """These settings with a command's ``flags`` on top (``None``: not given), checked
        as the rest are, without reading the file or the environment again. Raises
        :class:`~engine._errors.ConfigError` in one line."""
        given = _given(flags)
        if not given:
            return self
        try:
            return _OnTop(**{**self.model_dump(), **given})
        except ValidationError as exc:
            raise ConfigError(describe_error(exc)) from exc

    @property
    def database_url(self) -> str:
        """``db_url``, or SQLite under the data directory."""
        return self.db_url or f"sqlite:///{self.data_dir / 'docket.db'}"

    @property
    def audit_keys_dir(self) -> Path:
        """``audit_keys``, or ``audit-keys`` under the data directory."""
        return self.audit_keys or self.data_dir / "audit-keys"

    @property
    def ca_dir(self) -> Path:
        """Where the CA lives: ``<data_dir>/ca``."""
        return self.data_dir / "ca"

    @property
    def ek_roots_dir(self) -> Path:
        """``ek_roots``, or ``trust/ek-roots`` under the data directory."""
        return self.ek_roots or self.data_dir / "trust" / "ek-roots"

    @property
    def ek_allowlist_file(self) -> Path:
        """``ek_allowlist``, or ``trust/ek-allowlist`` under the data directory."""
        return self.ek_allowlist or self.data_dir / "trust" / "ek-allowlist"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls._read_sources:
            return (init_settings,)
        config = os.environ.get(CONFIG_ENV)
        path = Path(config) if config else DEFAULT_CONFIG
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        check_config_file(path, named=bool(config))
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class _OnTop(Settings):
    """Settings validated from what is given alone: :meth:`Settings.with_flags` puts a
    command's flags on settings already read, and must not read them again."""

    _read_sources: ClassVar[bool] = False


def _given(flags: dict[str, object]) -> dict[str, Any]:
    return {name: value for name, value in flags.items() if value is not None}
