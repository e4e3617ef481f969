"""The HTTP listener (``/metrics``, the JWKS, the revocation list, AuthZEN) over HTTPS
(``http_tls``), and with ``http_client_ca`` only for callers holding a certificate from
that CA, on a real ``docket serve``.

The attacks: a plaintext request to the HTTPS listener, an AuthZEN evaluation (or a
search of who may read what) from a caller with no certificate, or with one from another
CA, are refused at the handshake, before any decision or audit entry; a setting that
asks for client certificates without TLS, or TLS without a certificate, is one line and
exit 2."""

from __future__ import annotations

import os
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from e2e.docket_process import DOCKET, Docket, start_docket

from attestation import CertificateAuthority
from audit import Store

EVALUATION = {
    "subject": {"type": "User", "id": "alice"},
    "action": {"name": "read"},
    "resource": {"type": "Data", "id": "public-website"},
}


def now() -> datetime:
    return datetime.now(UTC)


def server_files(root: Path, ca: CertificateAuthority) -> tuple[Path, Path, Path]:
    """The server's certificate and key (for localhost, 127.0.0.1) and the CA's bundle."""
    credential = ca.issue_server_cert(["localhost", "127.0.0.1"], now=now())
    cert, key, bundle = root / "server.pem", root / "server.key", root / "bundle.pem"
    cert.write_bytes(credential.chain_pem())
    key.write_bytes(credential.key_pem())
    bundle.write_bytes(ca.trust_bundle())
    return cert, key, bundle


def client_files(root: Path, ca: CertificateAuthority, name: str) -> tuple[str, str]:
    """A client certificate (an X.509-SVID of ``ca``) and its key, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, issuer = ca.issue_svid(key.public_key(), f"spiffe://docket.local/{name}", now=now())
    pem = serialization.Encoding.PEM
    chain, key_file = root / f"{name}.pem", root / f"{name}.key"
    chain.write_bytes(leaf.public_bytes(pem) + issuer.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(chain), str(key_file)


def trusting(bundle: Path, client: tuple[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(bundle))
    if client is not None:
        context.load_cert_chain(*client)
    return context


def entries(server: Docket) -> int:
    """How many entries the server's log holds."""
    store = Store(f"sqlite:///{server.data_dir / 'docket.db'}", create=False)
    try:
        return store.count()
    finally:
        store.close()


def test_https_serves_every_document_and_plain_http_is_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "data" / "ca", "docket.local", now())
    cert, key, bundle = server_files(tmp_path, ca)
    server = start_docket(
        tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), env={"DOCKET_HTTP_TLS": "true"}
    )
    try:
        assert server.metrics_url.startswith("https://127.0.0.1:")
        base = server.metrics_url.removesuffix("/metrics")
        with httpx.Client(verify=trusting(bundle), timeout=10) as client:
            assert "docket_" in client.get(server.metrics_url).text
            assert client.get(base + "/.well-known/jwks.json").json() == ca.jwks()
            answer = client.post(base + "/access/v1/evaluation", json=EVALUATION)
            assert answer.status_code == 200
            assert answer.json() == {"decision": True}
            metadata = client.get(base + "/.well-known/authzen-configuration").json()
            assert metadata["policy_decision_point"].startswith("https://")
        with pytest.raises(httpx.HTTPError):  # plaintext to the TLS port: no answer
            httpx.get(server.metrics_url.replace("https://", "http://"), timeout=5)
        log = server.log.read_text()
        assert f"AuthZEN 1.0 on {base}/access/v1/evaluation" in log
    finally:
        assert server.stop() == 0


def test_with_a_client_ca_only_its_certificates_reach_a_decision(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "data" / "ca", "docket.local", now())
    other = CertificateAuthority.init(tmp_path / "other-ca", "docket.local", now())
    cert, key, bundle = server_files(tmp_path, ca)
    (tmp_path / "peps.pem").write_bytes(ca.trust_bundle())
    server = start_docket(
        tmp_path,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        env={"DOCKET_HTTP_TLS": "true", "DOCKET_HTTP_CLIENT_CA": str(tmp_path / "peps.pem")},
    )
    try:
        base = server.metrics_url.removesuffix("/metrics")
        before = entries(server)
        strangers = {
            "no certificate": trusting(bundle),
            "another CA's certificate": trusting(bundle, client_files(tmp_path, other, "x")),
        }
        for context in strangers.values():
            with httpx.Client(verify=context, timeout=10) as client:
                for path, body in (
                    ("/access/v1/evaluation", EVALUATION),
                    ("/access/v1/search/subject", {**EVALUATION, "subject": {"type": "User"}}),
                ):
                    with pytest.raises(httpx.HTTPError):  # the handshake fails
                        client.post(base + path, json=body)
        assert entries(server) == before  # nothing was decided for them

        pep = trusting(bundle, client_files(tmp_path, ca, "pep"))
        with httpx.Client(verify=pep, timeout=10) as client:
            answer = client.post(base + "/access/v1/evaluation", json=EVALUATION)
        assert answer.json() == {"decision": True}
        assert entries(server) == before + 1
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DOCKET_HTTP_TLS": "true"}, "http_tls needs tls_cert and tls_key"),
        ({"DOCKET_HTTP_CLIENT_CA": "peps.pem"}, "http_client_ca needs http_tls"),
    ],
    ids=["tls-without-a-certificate", "client-ca-without-tls"],
)
def test_an_incomplete_setting_is_one_line_exit_2(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    done = subprocess.run(
        [DOCKET, "serve", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr
