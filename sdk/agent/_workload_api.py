"""The SPIFFE Workload API on a Unix socket: what ``docket agent run`` serves to the
workloads of its device (SPIFFE_Workload_API.md; the messages in ``sdk/workload``).

    FetchX509SVID      stream: the device's SVID, key and bundle; again on every renewal
    FetchX509Bundles   stream: the trust bundle (DER), again when it changes
    FetchJWTSVID       a JWT-SVID for any audiences (minted by Docket with the SVID's key)
    FetchJWTBundles    stream: the JWT-SVID keys as a JWK Set, again when they change
    ValidateJWTSVID    a token of this trust domain checked for an audience

Every call must carry the metadata ``workload.spiffe.io: true`` (INVALID_ARGUMENT
without it: the header shows the call was made on purpose by a Workload API client, not
by a confused deputy such as a proxied browser request). The service is registered under
the package-less name SPIFFE clients call, ``/SpiffeWorkloadAPI/<method>``. With no
live SVID (before the first attestation, or after the last one expired unrenewed)
X.509 and JWT-SVID calls fail: PERMISSION_DENIED when Docket refused the device,
UNAVAILABLE otherwise; open FetchX509SVID streams end that way.

The socket is created 0600 in a directory the agent creates 0700; only this machine's
processes of the agent's user reach it unless the operator loosens that.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Final, NoReturn

import grpc
from google.protobuf import struct_pb2

from sdk._closing import Closing
from sdk._errors import ConfigurationError, DocketError, InvalidRequestError
from sdk._errors import PermissionDeniedError as Refused
from sdk.agent._identity import Identity, validate_jwt_svid
from sdk.agent._renewal import IdentityState, JwtSvids, Served
from sdk.workload import workload_pb2 as pb

__all__ = ["HEADER", "SERVICE", "WorkloadApi", "WorkloadApiServer", "socket_path"]

SERVICE: Final = "SpiffeWorkloadAPI"
HEADER: Final = ("workload.spiffe.io", "true")
_THREADS: Final = 64
"""Calls served at once (each open stream holds one); more are RESOURCE_EXHAUSTED."""


def socket_path(address: str | Path) -> Path:
    """The socket file of ``address``: a path, or ``unix:PATH`` / ``unix://PATH``, made
    absolute. Raises ``ConfigurationError`` for anything else (the Workload API is served
    on a Unix socket only)."""
    text = str(address)
    if text.startswith("unix:"):
        text = text.removeprefix("unix:")
        if text.startswith("//"):
            text = "/" + text.lstrip("/")
    elif ":" in text.split("/")[0] or text.startswith(("tcp:", "dns:", "ipv4:", "ipv6:")):
        raise ConfigurationError(
            f"the Workload API is served on a Unix socket only, not {address}: give a path"
        )
    if not text:
        raise ConfigurationError("the Workload API socket path is empty")
    return Path(text).absolute()


class WorkloadApi:
    """The servicer: each method reads ``state`` (the served SVID); JWT-SVIDs come from
    ``jwts``; ``clock`` gives aware UTC datetimes."""

    def __init__(self, state: IdentityState, jwts: JwtSvids, clock: Callable[[], datetime]) -> None:
        self._state = state
        self._jwts = jwts
        self._clock = clock

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _check_header(context: grpc.ServicerContext) -> None:
        if HEADER not in tuple(context.invocation_metadata()):
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "security header missing from request: send metadata workload.spiffe.io: true",
            )

    def _live(self, served: Served) -> Identity | None:
        """The served SVID, unless it has expired (the renewer withdraws it then)."""
        identity = served.identity
        if identity is None or identity.expires_at <= self._clock():
            return None
        return identity

    def _identity_or_abort(self, served: Served, context: grpc.ServicerContext) -> Identity:
        identity = self._live(served)
        if identity is not None:
            return identity
        code = grpc.StatusCode.PERMISSION_DENIED if served.refused else grpc.StatusCode.UNAVAILABLE
        return _abort(context, code, served.reason or "no SVID: it expired and is being renewed")

    def _changes(self, context: grpc.ServicerContext) -> Iterator[Served]:
        """The served state now, then at every change, until the call ends."""
        done = threading.Event()

        def ended() -> None:
            done.set()
            self._state.wake()

        if not context.add_callback(ended):
            return  # the call has already ended
        served = self._state.now()
        while not done.is_set():
            yield served
            served = self._state.wait_after(served.generation, done)

    def _bundle_stream(
        self, context: grpc.ServicerContext, make: Callable[[Identity], bytes]
    ) -> Iterator[dict[str, bytes]]:
        """``{trust domain: make(identity)}`` of the last SVID received, when it changes."""
        sent: dict[str, bytes] | None = None
        for served in self._changes(context):
            identity = served.last
            if identity is None:
                # nothing to send before the first SVID: say so, as for the SVID itself
                self._identity_or_abort(served, context)
                continue
            bundles = {identity.trust_domain: make(identity)}
            if bundles != sent:
                sent = bundles
                yield bundles

    # -- the X.509-SVID profile ----------------------------------------------------------

    def FetchX509SVID(
        self, request: pb.X509SVIDRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.X509SVIDResponse]:
        self._check_header(context)
        sent: int | None = None
        for served in self._changes(context):
            identity = self._identity_or_abort(served, context)
            if identity.serial == sent:
                continue
            sent = identity.serial
            yield pb.X509SVIDResponse(
                svids=[
                    pb.X509SVID(
                        spiffe_id=identity.spiffe_id,
                        x509_svid=identity.chain_der(),
                        x509_svid_key=identity.key_der,
                        bundle=identity.bundle_der(),
                    )
                ]
            )

    def FetchX509Bundles(
        self, request: pb.X509BundlesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.X509BundlesResponse]:
        self._check_header(context)
        for bundles in self._bundle_stream(context, Identity.bundle_der):
            yield pb.X509BundlesResponse(bundles=bundles)

    # -- the JWT-SVID profile ------------------------------------------------------------

    def FetchJWTSVID(
        self, request: pb.JWTSVIDRequest, context: grpc.ServicerContext
    ) -> pb.JWTSVIDResponse:
        self._check_header(context)
        audiences = list(request.audience)
        if not audiences or not all(audiences):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        identity = self._identity_or_abort(self._state.now(), context)
        if request.spiffe_id and request.spiffe_id != identity.spiffe_id:
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"this workload has no SVID for {request.spiffe_id}",
            )
        try:
            token = self._jwts.fetch(identity, audiences)
        except Refused as exc:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, exc.message)
        except InvalidRequestError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        except DocketError as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"cannot mint a JWT-SVID: {exc.message}")
        return pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=identity.spiffe_id, svid=token)])

    def FetchJWTBundles(
        self, request: pb.JWTBundlesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JWTBundlesResponse]:
        self._check_header(context)
        for bundles in self._bundle_stream(context, Identity.jwks):
            yield pb.JWTBundlesResponse(bundles=bundles)

    def ValidateJWTSVID(
        self, request: pb.ValidateJWTSVIDRequest, context: grpc.ServicerContext
    ) -> pb.ValidateJWTSVIDResponse:
        self._check_header(context)
        if not request.audience:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "svid must be specified")
        served = self._state.now()
        if served.last is None:
            self._identity_or_abort(served, context)
        assert served.last is not None
        try:
            spiffe_id, claims = validate_jwt_svid(
                request.svid, request.audience, served.last, self._clock()
            )
        except InvalidRequestError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        struct = struct_pb2.Struct()
        struct.update(claims)
        return pb.ValidateJWTSVIDResponse(spiffe_id=spiffe_id, claims=struct)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service under the name SPIFFE clients call."""

        def stream(method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_stream_rpc_method_handler(
                method, request.FromString, response.SerializeToString
            )

        def unary(method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                method, request.FromString, response.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "FetchX509SVID": stream(
                    self.FetchX509SVID, pb.X509SVIDRequest, pb.X509SVIDResponse
                ),
                "FetchX509Bundles": stream(
                    self.FetchX509Bundles, pb.X509BundlesRequest, pb.X509BundlesResponse
                ),
                "FetchJWTSVID": unary(self.FetchJWTSVID, pb.JWTSVIDRequest, pb.JWTSVIDResponse),
                "FetchJWTBundles": stream(
                    self.FetchJWTBundles, pb.JWTBundlesRequest, pb.JWTBundlesResponse
                ),
                "ValidateJWTSVID": unary(
                    self.ValidateJWTSVID, pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse
                ),
            },
        )


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class WorkloadApiServer(Closing):
    """``api`` served on the Unix socket ``path`` (mode 0600; its directory created 0700
    when missing). A stale socket file is replaced; a socket another process listens on,
    or a path that is not a socket, is refused with ``ConfigurationError``."""

    def __init__(self, api: WorkloadApi, path: Path) -> None:
        self.path = path
        _prepare_socket(path)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="workload-api"),
            handlers=[api.handler()],
            maximum_concurrent_rpcs=_THREADS,
        )
        previous = os.umask(0o177)  # the socket is born 0600: no moment it is wider
        try:
            bound = self._server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot listen on {path}: {exc}") from exc
        finally:
            os.umask(previous)
        if not bound:
            raise ConfigurationError(f"cannot listen on {path}")
        self._server.start()
        path.chmod(0o600)
        self._closed = False

    def close(self) -> None:
        """Stop serving (open streams are cancelled) and remove the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.stop(grace=1.0).wait()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()


def _prepare_socket(path: Path) -> None:
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
            path.parent.chmod(0o700)  # mkdir's mode is masked by the umask
        if not path.exists() and not path.is_symlink():
            return
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigurationError(f"{path} exists and is not a socket: refusing to replace it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # nobody listens: a stale socket of an agent that died
                return
        raise ConfigurationError(f"another process listens on {path}: is an agent running?")
    except OSError as exc:
        raise ConfigurationError(f"cannot prepare the socket {path}: {exc}") from exc
