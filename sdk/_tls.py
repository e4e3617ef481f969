"""TLS and mTLS settings for a client's channel."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict, model_validator

from sdk._errors import ConfigurationError

__all__ = ["PemSource", "TLSConfig"]

PemSource = bytes | str | os.PathLike[str]
"""PEM given as its bytes, or as a path (``str`` or ``Path``) to a file holding it."""


def _read_pem(source: PemSource | None, what: str) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the TLS {what} {source}: {exc.strerror}") from exc


class TLSConfig(BaseModel):
    """Server verification and, optionally, the client's own certificate (mTLS).

    ``ca_cert`` is the trust root for the server's certificate (the system roots when
    ``None``); ``client_cert`` and ``client_key`` (both or neither) make the channel
    present the client's identity, e.g. an X.509 SVID whose URI SAN is its SPIFFE ID;
    ``server_name`` overrides the name checked against the server certificate (when the
    target is an IP address or a load balancer). Each PEM is bytes or a file path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: bytes | str | Path | None = None
    client_cert: bytes | str | Path | None = None
    client_key: bytes | str | Path | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TLSConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both for mTLS")
        return self

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for ``grpc.secure_channel``; reads the files now.

        Raises ``ConfigurationError`` when a file cannot be read.
        """
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.ca_cert, "ca_cert"),
            private_key=_read_pem(self.client_key, "client_key"),
            certificate_chain=_read_pem(self.client_cert, "client_cert"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel options this configuration needs (the server name override)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]
