"""TLS and mTLS channels: the server sees the client's SPIFFE ID; bad trust fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pki import PKI, Pair
from pydantic import ValidationError
from sdk_fakes import CLIENT_SPIFFE_ID, FakeDecisions, Running

from sdk import AsyncDecisionClient, ConfigurationError, DecisionClient, TLSConfig, TransportError

ALICE = {"type": "User", "id": "alice"}
RECORDS = {"type": "Data", "id": "patient-records-eu"}


def mtls(pki: PKI, client: Pair, **overrides: object) -> TLSConfig:
    settings: dict[str, object] = {
        "ca_cert": pki.ca,
        "client_cert": client.cert,
        "client_key": client.key,
    }
    return TLSConfig.model_validate({**settings, **overrides})


def test_mtls_presents_the_clients_spiffe_id(
    mtls_docket: Running, fake: FakeDecisions, pki: PKI, client_pair: Pair
) -> None:
    with DecisionClient(mtls_docket.target, tls=mtls(pki, client_pair)) as client:
        assert client.authorize(ALICE, "read", RECORDS).allowed

    assert [r.spiffe_id for r in fake.received] == [CLIENT_SPIFFE_ID]


def test_pem_bytes_and_str_paths_work_like_paths(
    mtls_docket: Running, fake: FakeDecisions, pki: PKI, client_pair: Pair
) -> None:
    tls = TLSConfig(
        ca_cert=pki.ca.read_bytes(),
        client_cert=str(client_pair.cert),
        client_key=client_pair.key.read_bytes(),
    )

    with DecisionClient(mtls_docket.target, tls=tls) as client:
        assert client.health() == "SERVING"


def test_server_name_overrides_the_name_checked(
    mtls_docket: Running, pki: PKI, client_pair: Pair
) -> None:
    good = mtls(pki, client_pair, server_name="localhost")
    wrong = mtls(pki, client_pair, server_name="elsewhere.example")

    with DecisionClient(mtls_docket.target, tls=good) as client:
        assert client.authorize(ALICE, "read", RECORDS).allowed
    with (
        DecisionClient(mtls_docket.target, tls=wrong, retries=0) as client,
        pytest.raises(TransportError, match="UNAVAILABLE"),
    ):
        client.authorize(ALICE, "read", RECORDS)


def test_a_server_signed_by_another_ca_is_refused(
    mtls_docket: Running, fake: FakeDecisions, pki: PKI, client_pair: Pair, other_ca: Path
) -> None:
    with (
        DecisionClient(
            mtls_docket.target, tls=mtls(pki, client_pair, ca_cert=other_ca), retries=0
        ) as c,
        pytest.raises(TransportError),
    ):
        c.authorize(ALICE, "read", RECORDS)

    assert fake.received == []


def test_without_a_client_certificate_the_mtls_server_refuses(
    mtls_docket: Running, fake: FakeDecisions, pki: PKI, client_pair: Pair
) -> None:
    with (
        DecisionClient(mtls_docket.target, tls=TLSConfig(ca_cert=pki.ca), retries=0) as c,
        pytest.raises(TransportError),
    ):
        c.authorize(ALICE, "read", RECORDS)

    assert fake.received == []


def test_plaintext_against_a_tls_server_fails(mtls_docket: Running) -> None:
    with (
        DecisionClient(mtls_docket.target, retries=0) as client,
        pytest.raises(TransportError),
    ):
        client.authorize(ALICE, "read", RECORDS)


def test_the_async_client_speaks_mtls_too(
    mtls_docket: Running, fake: FakeDecisions, pki: PKI, client_pair: Pair
) -> None:
    async def main() -> bool:
        async with AsyncDecisionClient(mtls_docket.target, tls=mtls(pki, client_pair)) as client:
            return (await client.authorize(ALICE, "read", RECORDS)).allowed

    assert asyncio.run(main())
    assert [r.spiffe_id for r in fake.received] == [CLIENT_SPIFFE_ID]


def test_a_certificate_needs_its_key(pki: PKI, client_pair: Pair) -> None:
    with pytest.raises(ValidationError, match="client_cert and client_key go together"):
        TLSConfig(ca_cert=pki.ca, client_cert=client_pair.cert)


def test_an_unreadable_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"

    with pytest.raises(ConfigurationError, match=r"cannot read the TLS ca_cert .*nope\.pem"):
        DecisionClient(tls=TLSConfig(ca_cert=missing))
