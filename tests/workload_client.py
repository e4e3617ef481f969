"""A raw gRPC client of the SPIFFE Workload API, for what py-spiffe never sends (a call
without the security header) and for reading a status code as it is: one call on the
agent's Unix socket, the first message of a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from sdk.workload import workload_pb2 as pb

HEADER = ("workload.spiffe.io", "true")

METHODS: dict[type[Message], tuple[str, type[Message], bool]] = {
    pb.X509SVIDRequest: ("FetchX509SVID", pb.X509SVIDResponse, True),
    pb.X509BundlesRequest: ("FetchX509Bundles", pb.X509BundlesResponse, True),
    pb.JWTSVIDRequest: ("FetchJWTSVID", pb.JWTSVIDResponse, False),
    pb.JWTBundlesRequest: ("FetchJWTBundles", pb.JWTBundlesResponse, True),
    pb.ValidateJWTSVIDRequest: ("ValidateJWTSVID", pb.ValidateJWTSVIDResponse, False),
}
"""Each request message: its method, its response, whether the response streams."""


def call(
    socket: Path,
    request: Message,
    metadata: tuple[tuple[str, str], ...] = (HEADER,),
    timeout: float = 30.0,
) -> Any:
    """The answer to ``request`` (a stream's first message); ``grpc.RpcError`` on a
    status."""
    method, response, streams = METHODS[type(request)]
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        kind = channel.unary_stream if streams else channel.unary_unary
        invoke = kind(
            f"/SpiffeWorkloadAPI/{method}", type(request).SerializeToString, response.FromString
        )
        answer = invoke(request, metadata=metadata, timeout=timeout)
        return next(iter(answer)) if streams else answer
