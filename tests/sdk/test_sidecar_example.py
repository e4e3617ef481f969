"""examples/sidecar/app.py is wired as its README says: x-user header → principal,
/records/{id} → Data::"{id}", decided by the Docket at DOCKET_GRPC."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sdk_fakes import DENIED_PRINCIPAL, FakeDecisions, Running

from sdk._convert import authorize_request_from_proto

APP = Path(__file__).resolve().parents[2] / "examples" / "sidecar" / "app.py"


def load_example(monkeypatch: pytest.MonkeyPatch, target: str) -> ModuleType:
    monkeypatch.setenv("DOCKET_GRPC", target)
    spec = importlib.util.spec_from_file_location("sidecar_example_app", APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_allows_denies_and_demands_an_identity(
    docket: Running, fake: FakeDecisions, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example(monkeypatch, docket.target)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=example.app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http:
                return [
                    await http.get("/records/employee-directory", headers={"x-user": who})
                    for who in ("dave", DENIED_PRINCIPAL)
                ] + [await http.get("/records/employee-directory")]
        finally:
            await example.docket.close()

    allowed, denied, anonymous = asyncio.run(main())

    assert allowed.status_code == 200
    assert allowed.json() == {"id": "employee-directory", "kind": "dataset", "entries": 1204}
    assert allowed.headers["x-docket-decision-id"] == "dec-1"
    assert denied.status_code == 403
    assert denied.json()["decision"] == "deny"
    assert anonymous.status_code == 401
    sent = [authorize_request_from_proto(m) for m in fake.calls("Authorize")]
    assert [(r.principal.id, r.action.id, str(r.resource)) for r in sent] == [
        ("dave", "read", 'Data::"employee-directory"'),
        (DENIED_PRINCIPAL, "read", 'Data::"employee-directory"'),
    ]
