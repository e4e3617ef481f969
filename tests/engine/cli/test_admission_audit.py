"""``docket admission audit``: the drift audit over recorded ``kubectl get -A -o json``
output (fixtures/drift/cluster.json), its table, JSON, exit codes and bad input."""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admission_reviews import FakeKubernetes
from click.testing import CliRunner, Result

from engine.cli import main

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "tests" / "engine" / "fixtures" / "drift" / "cluster.json"
POLICIES = ROOT / "policies"

RESTRICTED = (
    'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container '
    '"{c}" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod '
    'or container "{c}" must set securityContext.runAsNonRoot=true), seccompProfile (pod or '
    'container "{c}" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
    '"Localhost"), unrestricted capabilities (container "{c}" must set '
    'securityContext.capabilities.drop=["ALL"])'
)
EXPECTED = [
    (
        "Pod",
        "web",
        "debug-shell",
        ["admit-pod-security-baseline"],
        "denied by Docket policy admit-pod-security-baseline; violates PodSecurity "
        '"baseline:latest": host namespaces (hostNetwork=true)',
    ),
    (
        "Pod",
        "web",
        "log-collector-x2k9q",
        ["admit-pod-security-baseline"],
        "denied by Docket policy admit-pod-security-baseline; violates PodSecurity "
        '"baseline:latest": hostPath volumes (volume "varlog")',
    ),
    (
        "Pod",
        "web",
        "metrics-exporter",
        ["admit-allowed-registries"],
        "denied by Docket policy admit-allowed-registries",
    ),
    (
        "Pod",
        "payments",
        "ledger-0",
        [
            "admit-no-host-access-for-confidential",
            "admit-pod-security-baseline",
            "admit-pod-security-restricted",
        ],
        "denied by Docket policy admit-no-host-access-for-confidential, "
        "admit-pod-security-baseline, admit-pod-security-restricted; "
        + RESTRICTED.format(c="ledger").replace(
            'violates PodSecurity "restricted:latest": ',
            'violates PodSecurity "restricted:latest": privileged (container "ledger" must '
            "not set securityContext.privileged=true), ",
        ),
    ),
    (
        "Deployment",
        "payments",
        "reporting",
        ["admit-pod-security-restricted"],
        "denied by Docket policy admit-pod-security-restricted; "
        + RESTRICTED.format(c="reporting"),
    ),
]


def _rows(found: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(kind, namespace, name, rules, reason) of each drift of a JSON answer."""
    keys = ("kind", "namespace", "name", "rules", "reason")
    return [tuple(d[k] for k in keys) for d in found["drifts"]]


def audit(*args: str) -> Result:
    return CliRunner().invoke(
        main, ["admission", "audit", "--bundle", str(POLICIES), *args], catch_exceptions=False
    )


def test_json_lists_every_violation_and_nothing_compliant() -> None:
    result = audit("--from-file", str(CLUSTER), "--json")
    assert result.exit_code == 1, result.output
    found = json.loads(result.output)
    assert _rows(found) == EXPECTED
    assert (found["objects"], found["inspected"], found["audit_log"]) == (13, 8, None)
    assert found["source"] == str(CLUSTER)
    assert found["bundle_version"].startswith("sha256:")


def test_table_has_a_row_per_violation_and_says_nothing_was_written() -> None:
    result = audit("--from-file", str(CLUSTER))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["KIND", "NAMESPACE", "NAME", "RULE", "REASON"]
    reason_at = lines[0].index("REASON")
    rows = [(*line[:reason_at].split(), line[reason_at:]) for line in lines[1:-1]]
    assert rows == [(k, n, name, ",".join(r), why) for k, n, name, r, why in EXPECTED]
    assert lines[-1].startswith(f"5 violations in 8 of 13 objects from {CLUSTER} (bundle sha256:")
    assert lines[-1].endswith("audit log: nothing written (no --data-dir)")


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "objects.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_a_cluster_with_nothing_refused_exits_0(tmp_path: Path) -> None:
    items = [
        i
        for i in json.loads(CLUSTER.read_text())["items"]
        if i["metadata"].get("name")
        in (
            "frontend-7d9f8-abcde",
            "frontend",
            "web",
            "api",
        )
    ]
    result = audit("--from-file", str(_write(tmp_path, {"kind": "List", "items": items})))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0 violations in 2 of 4 objects")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not JSON"),
        ({"kind": "Pod"}, "expected the output of kubectl get -A -o json"),
        ({"kind": "List", "items": [3]}, "items[0]: expected an object with a kind"),
    ],
    ids=["not-json", "not-a-list", "item-not-an-object"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, document: Any, message: str) -> None:
    result = audit("--from-file", str(_write(tmp_path, document)))
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_more_objects_than_the_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine._service.admission import drift

    monkeypatch.setattr(drift, "MAX_OBJECTS", 3)
    result = audit("--from-file", str(CLUSTER))
    assert result.exit_code == 2
    assert "13 objects, more than 3" in result.output


def test_a_file_over_the_size_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine._service.admission import drift

    monkeypatch.setattr(drift, "MAX_BYTES", 100)
    result = audit("--from-file", str(CLUSTER))
    assert result.exit_code == 2
    assert "larger than 100 bytes" in result.output


def _log_entries(data_dir: Path) -> list[dict[str, Any]]:
    from audit import AuditLog

    log = AuditLog.open(f"sqlite:///{data_dir / 'docket.db'}", keys=None, create=False)
    try:
        found = []
        for index in range(log.store.head().size):
            row = log.store.entry(index)
            assert row is not None
            assert row.payload is not None
            found.append(json.loads(row.payload))
        return found
    finally:
        log.store.close()


def test_with_a_data_dir_the_run_and_each_violation_go_to_the_audit_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = audit("--from-file", str(CLUSTER), "--data-dir", str(data), "--json")
    assert result.exit_code == 1, result.output
    found = json.loads(result.output)
    entries = [e for e in _log_entries(data) if e["kind"] in ("audit", "admission")]
    assert found["audit_log"] == f"6 entries written to sqlite:///{data / 'docket.db'}"
    run, *violations = entries
    assert run["action"] == "drift-audit"
    assert run["resource"] == str(CLUSTER)
    assert run["bundle_version"] == found["bundle_version"]
    assert {k: run["detail"][k] for k in ("objects", "inspected", "violations", "devices")} == {
        "objects": 13,
        "inspected": 8,
        "violations": 5,
        "devices": 0,
    }
    assert [
        (
            v["kind"],
            v["decision"],
            v["detail"]["drift"],
            v["detail"]["run_id"],
            v["detail"]["object"]["name"],
            v["policies"],
            v["detail"]["reason"],
        )
        for v in violations
    ] == [
        ("admission", "deny", True, run["detail"]["run_id"], name, rules, why)
        for _, _, name, rules, why in EXPECTED
    ]
    table = audit("--from-file", str(CLUSTER), "--data-dir", str(data))
    assert table.output.splitlines()[-1].endswith(
        f"audit log: 6 entries written to sqlite:///{data / 'docket.db'}"
    )


DEVICE = "spiffe://docket.local/device/laptop-7"
FRESH = "spiffe://docket.local/device/laptop-8"


def _issued(subject: str, not_after: datetime, serial: str) -> Any:
    from audit import Entry

    return Entry(
        kind="certificate",
        time=not_after - timedelta(hours=1),
        subject=subject,
        action="issue",
        resource=f"x509-svid:{serial}",
        decision="allow",
        detail={"credential": "x509-svid", "serial": serial, "not_after": not_after.isoformat()},
    )


def test_revoked_credentials_and_expired_postures_are_drift_rows(tmp_path: Path) -> None:
    from attestation import CertificateAuthority, load_revocations
    from audit import AuditLog

    data = tmp_path / "data"
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(data / "ca", "docket.local", now)
    listed, _ = load_revocations(data / "ca", ca)
    ek = "ab" * 32
    listed = listed.revoke("device", ek, "stolen", now).revoke("serial", "1f2e", "leaked", now)
    ca.save_revocations(data / "ca", listed)
    log = AuditLog.open(f"sqlite:///{data / 'docket.db'}", keys=data / "audit-keys").start()
    try:
        log.record(
            [
                _issued(DEVICE, now - timedelta(days=2), "a1"),
                _issued(DEVICE, now - timedelta(hours=3), "a2"),  # its last: expired
                _issued(FRESH, now - timedelta(days=1), "b1"),
                _issued(FRESH, now + timedelta(hours=1), "b2"),  # re-attested: current
            ]
        )
    finally:
        log.close()
    empty = _write(tmp_path, {"kind": "List", "items": []})
    result = audit("--from-file", str(empty), "--data-dir", str(data), "--json")
    assert result.exit_code == 1, result.output
    rows = [(d["kind"], d["name"], d["rules"]) for d in json.loads(result.output)["drifts"]]
    assert rows == [
        ("Device", ek, ["revoked"]),
        ("Credential", "1f2e", ["revoked"]),
        ("Device", DEVICE, ["posture-expired"]),
    ]
    reasons = [d["reason"] for d in json.loads(result.output)["drifts"]]
    assert reasons[0].startswith(f"device {ek} revoked at ")
    assert reasons[0].endswith(": stolen")
    assert reasons[2] == (
        f"its last posture expired at {(now - timedelta(hours=3)).isoformat()} "
        "(x509-svid a2); it has not attested since"
    )
    written = [e for e in _log_entries(data) if e["detail"].get("drift")]
    assert [(e["kind"], e["subject"], e["policies"]) for e in written] == [
        ("attestation", ek, ["revoked"]),
        ("attestation", "1f2e", ["revoked"]),
        ("attestation", DEVICE, ["posture-expired"]),
    ]


WEB_FORBID = """
@id("admit-nothing-in-web")
forbid (principal, action == Docket::Action::"admit", resource is Docket::Cluster)
when { context.namespace == "web" };
"""


def _next_line(process: subprocess.Popen[str], within: float = 60.0) -> str:
    """The next line the process prints (a bound on a hung process, not a timing)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], within)
    assert ready, "no audit printed"
    return process.stdout.readline()


def test_watch_re_audits_when_the_bundle_changes_until_sigterm(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(POLICIES, bundle)
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from engine.cli import run; run()",
            "admission",
            "audit",
            "--from-file",
            str(CLUSTER),
            "--bundle",
            str(bundle),
            "--watch",
            "--poll-seconds",
            "0.1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            _watched(process, bundle)
        finally:
            if process.poll() is None:
                process.kill()


def _watched(process: subprocess.Popen[str], bundle: Path) -> None:
    """The first audit, a bundle change, the second audit, SIGTERM."""
    first = json.loads(_next_line(process))
    assert len(first["drifts"]) == 5
    with (bundle / "admission.cedar").open("a") as cedar:
        cedar.write(WEB_FORBID)
    second = json.loads(_next_line(process))
    assert second["bundle_version"] != first["bundle_version"]
    web = {d["name"] for d in second["drifts"] if "admit-nothing-in-web" in d["rules"]}
    assert web == {
        "frontend-7d9f8-abcde",
        "debug-shell",
        "log-collector-x2k9q",
        "metrics-exporter",
        "frontend",
    }
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 1  # the last audit found violations


# -- a live cluster: the kubernetes client against an API server that answers lists ----


@pytest.fixture
def kubernetes(tmp_path: Path) -> Iterator[tuple[FakeKubernetes, Path]]:
    with FakeKubernetes({}, json.loads(CLUSTER.read_text())["items"]) as fake:
        yield fake, fake.kubeconfig(tmp_path / "kubeconfig")


def test_a_live_cluster_is_audited_as_its_kubectl_output(
    kubernetes: tuple[FakeKubernetes, Path],
) -> None:
    _, kubeconfig = kubernetes
    result = audit("--kubeconfig", str(kubeconfig), "--json")
    assert result.exit_code == 1, result.output
    found = json.loads(result.output)
    # Listed kind by kind: the Deployment comes after the Pods, as in the file.
    assert _rows(found) == EXPECTED
    assert (found["objects"], found["inspected"]) == (11, 8)  # no Service, no ConfigMap
    assert found["source"] == f"kubeconfig {kubeconfig}"


def test_a_list_the_api_server_refuses_is_one_line_and_exit_2(
    kubernetes: tuple[FakeKubernetes, Path],
) -> None:
    fake, kubeconfig = kubernetes
    fake.forbidden.add("/apis/apps/v1/daemonsets")
    result = audit("--kubeconfig", str(kubeconfig))
    assert result.exit_code == 2
    assert f"cannot list DaemonSet objects from kubeconfig {kubeconfig} (403 Forbidden)" in (
        result.output
    )


def test_exactly_one_source_is_given(kubernetes: tuple[FakeKubernetes, Path]) -> None:
    _, kubeconfig = kubernetes
    both = audit("--kubeconfig", str(kubeconfig), "--from-file", str(CLUSTER))
    none = audit()
    for result in (both, none):
        assert result.exit_code == 2
        assert "give exactly one of --from-file, --kubeconfig or --in-cluster" in result.output


def test_in_cluster_outside_a_cluster_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = audit("--in-cluster")
    assert result.exit_code == 2
    assert "cannot configure the Kubernetes client (the in-cluster Kubernetes API)" in (
        result.output
    )
    assert len(result.output.strip().splitlines()) == 1
