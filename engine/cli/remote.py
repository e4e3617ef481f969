"""``--server``: ``docket decide`` and ``docket place`` sent to a running ``docket serve``
through the Python SDK, so the decision is the server's — recorded in its audit log,
with a receipt — and can be proven from the shell (``docket audit prove INDEX``).

The request is the same JSON as offline. The server decides from what it verifies, not
what the request asserts: attested ``context.device`` fields are refused, and the
caller is the mTLS identity (``--tls-cert``/``--tls-key``), if any.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from audit.cli import InputError
from sdk import (
    AuthorizeRequest,
    AuthorizeResult,
    DecisionClient,
    DocketError,
    InvalidRequestError,
    Placement,
    PlacementRequest,
    TLSConfig,
)

T = TypeVar("T")

SERVER_TIMEOUT = 10.0
"""Seconds a remote decision may take, retries included."""


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--server`` and the TLS options that go with it."""
    options = [
        click.option(
            "--server",
            metavar="HOST:PORT",
            help="Send to a running `docket serve` (decided and recorded there, with a "
            "receipt) instead of deciding offline.",
        ),
        click.option("--tls-ca", type=click.Path(path_type=Path), help="CA for --server (PEM)."),
        click.option(
            "--tls-cert",
            type=click.Path(path_type=Path),
            help="Client certificate for --server (mTLS; the caller Docket sees).",
        ),
        click.option("--tls-key", type=click.Path(path_type=Path), help="Its key (PEM)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def connect(
    server: str, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None
) -> DecisionClient:
    """A client for ``server``; plaintext unless a TLS option is given. Raises
    :class:`~audit.cli.InputError` for unusable TLS options."""
    tls = None
    if tls_ca or tls_cert or tls_key:
        try:
            tls = TLSConfig(ca_cert=tls_ca, client_cert=tls_cert, client_key=tls_key)
        except ValidationError as exc:
            raise InputError(f"--tls-cert/--tls-key: {exc.errors()[0]['msg']}") from exc
    return DecisionClient(server, timeout=SERVER_TIMEOUT, tls=tls)


def call(where: str, server: str, send: Callable[[], T]) -> T:
    """Run one remote call; a refused request or an unreachable server is one line,
    exit 2 (the server's message names the field)."""
    try:
        return send()
    except InvalidRequestError as exc:
        raise InputError(f"{where}: {exc}") from exc
    except DocketError as exc:
        raise InputError(f"{server}: {exc}") from exc


def authorize(client: DecisionClient, document: dict[str, Any]) -> AuthorizeResult:
    """``document`` (the offline request shape) decided by the server."""
    return client.authorize(AuthorizeRequest.model_validate(document))


def place(client: DecisionClient, spec: dict[str, Any], sites: list[str] | None) -> Placement:
    """A workload (the offline shape, ``id`` and the rest) placed by the server."""
    fields = {key: value for key, value in spec.items() if key != "id"}
    request = PlacementRequest.model_validate(
        {"workload_id": spec.get("id"), **fields, "sites": sites or ()}
    )
    return client.place(request)


def result_json(result: AuthorizeResult) -> str:
    """One line of JSON for a remote decision."""
    return json.dumps(
        {
            "decision": result.decision,
            "reasons": list(result.reasons),
            "errors": [{"policy": p, "message": m} for p, m in result.errors],
            "decision_id": result.decision_id,
            "bundle_version": result.bundle_version,
            "audit_index": None if result.receipt is None else result.receipt.index,
        }
    )


def receipt_line(result: AuthorizeResult | Placement) -> str:
    """Where the server recorded it: the decision id and the audit entry."""
    index = "none" if result.receipt is None else str(result.receipt.index)
    return f"decision {result.decision_id}, audit entry {index} (docket audit prove {index})"
