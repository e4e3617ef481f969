"""Authorize messages as callers send them, for tests across the suite."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from sdk.v1 import decisions_pb2 as pb


def alice_reads(
    resource: str, context: Mapping[str, Any] | None = None, device_token: str = ""
) -> pb.AuthorizeRequest:
    """alice reads the Data ``resource`` with ``context`` (always set, empty or not) and,
    when given, a device token."""
    values = struct_pb2.Struct()
    values.update(dict(context or {}))
    return pb.AuthorizeRequest(
        principal=pb.EntityRef(type="User", id="alice"),
        action=pb.EntityRef(type="Action", id="read"),
        resource=pb.EntityRef(type="Data", id=resource),
        context=values,
        device_token=device_token,
    )
