"""``docket admission audit``: the drift audit of what already runs in a cluster
(:mod:`engine._service.admission.drift`)."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from audit.cli import InputError
from engine.cli.common import bundle_option, key_option, load_bundle, public_key, settings_of

if TYPE_CHECKING:
    from engine._core.evaluate import Engine
    from engine._runtime.settings import Settings
    from engine._service.admission.drift import Audit, Drift


@click.group()
def admission() -> None:
    """Kubernetes admission beyond the webhook."""


def _read_source(
    from_file: Path | None, kubeconfig: Path | None
) -> tuple[list[dict[str, Any]], str]:
    """The objects to audit and how their source is named: the file, else the cluster
    of ``kubeconfig``, else the one this runs in."""
    from engine._errors import AdmissionInputError
    from engine._service.admission.drift import MAX_BYTES, list_cluster, read_list

    try:
        if from_file is None:
            return list_cluster(kubeconfig)
        source = str(from_file)
        try:
            with from_file.open("rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as exc:
            raise InputError(f"{source}: cannot be read ({exc.strerror})") from exc
        return read_list(data, source), source
    except AdmissionInputError as exc:
        raise InputError(str(exc)) from exc


def _run(engine: Engine, items: list[dict[str, Any]], source: str, settings: Settings) -> Audit:
    from engine._service.admission.drift import audit_objects, listed_namespaces

    return audit_objects(
        engine,
        items,
        source=source,
        namespaces=listed_namespaces(items, source),
        trust_domain=settings.trust_domain,
        cluster=settings.admission_cluster,
        now=datetime.now(UTC),
    )


def _devices(settings: Settings, now: datetime) -> list[Drift]:
    """The revoked devices and credentials of the CA under the data directory, and the
    attested devices whose last posture expired (from the audit log)."""
    from attestation import CAError, CertificateAuthority, load_revocations
    from audit import AuditError, AuditLog
    from engine._service.admission.drift import expired_postures, revoked

    found: list[Drift] = []
    if (settings.ca_dir / "ca.json").exists():
        try:
            listed, _ = load_revocations(
                settings.ca_dir, CertificateAuthority.load(settings.ca_dir)
            )
        except CAError as exc:
            raise InputError(f"revocation list: {exc}") from exc
        found += revoked(listed)
    try:
        log = AuditLog.open(settings.database_url, keys=None, create=False)
    except AuditError:
        return found  # no log yet: no device was ever attested
    try:
        payloads = (
            json.loads(row.payload)
            for row in log.store.entries()
            if row.kind == "certificate" and row.payload is not None
        )
        found += expired_postures(payloads, now)
    finally:
        log.store.close()
    return found


def _record(audit: Audit, settings: Settings) -> str:
    """Write the run and its drifts to the audit log of ``settings``; what was written."""
    from audit import AuditError
    from engine._errors import ServeError
    from engine._runtime.prepare import open_audit
    from engine._service.admission.drift import audit_entries

    entries = audit_entries(audit, run_id=uuid.uuid4().hex, now=datetime.now(UTC))
    try:
        log = open_audit(settings).start()
    except ServeError as exc:
        raise InputError(str(exc)) from exc
    try:
        log.record(entries)
    except AuditError as exc:
        raise InputError(f"audit log: {exc}") from exc
    finally:
        log.close()
    return f"{len(entries)} entries written to {settings.database_url}"


def _table(audit: Audit) -> list[str]:
    """The drifts as aligned columns, the reason last and whole."""
    header = ("KIND", "NAMESPACE", "NAME", "RULE", "REASON")
    rows = [
        (d.kind, d.namespace or "-", d.name or "-", ",".join(d.rules) or "-", d.reason)
        for d in audit.drifts
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]])
        for row in [header, *rows]
    ]


def _report(audit: Audit, logged: str | None, as_json: bool) -> None:
    if as_json:
        document = {
            "source": audit.source,
            "bundle_version": audit.bundle_version,
            "objects": audit.objects,
            "inspected": audit.inspected,
            "drifts": [d.row() for d in audit.drifts],
            "audit_log": logged,
        }
        click.echo(json.dumps(document, sort_keys=True))
        return
    if audit.drifts:
        for line in _table(audit):
            click.echo(line.rstrip())
    from engine._service.admission.drift import DEVICE_KINDS

    devices = sum(d.kind in DEVICE_KINDS for d in audit.drifts)
    found = len(audit.drifts) - devices
    click.echo(
        f"{found} violation{'s' if found != 1 else ''} in {audit.inspected} of "
        f"{audit.objects} objects from {audit.source} (bundle {audit.bundle_version}); "
        f"{f'{devices} revoked or expired devices; ' if devices else ''}"
        f"audit log: {logged or 'nothing written (no --data-dir)'}"
    )


_A_FILE = click.Path(path_type=Path, dir_okay=False)


@admission.command("audit")
@click.option(
    "--from-file",
    type=_A_FILE,
    help="The output of `kubectl get -A -o json` (a List of objects of any kinds).",
)
@click.option(
    "--kubeconfig",
    type=_A_FILE,
    help="List the objects from the cluster of this kubeconfig (needs list on "
    "namespaces, pods and the workload kinds).",
)
@click.option(
    "--in-cluster",
    is_flag=True,
    help="List the objects from the cluster this runs in (the pod's service account).",
)
@bundle_option
@key_option
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The server's data directory: the run and each violation are written to its "
    "audit log. Without it nothing is written.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per audit.")
@click.option(
    "--watch",
    is_flag=True,
    help="Audit again (re-reading the objects) each time the bundle changes, until "
    "SIGTERM or Ctrl-C; the exit code is the last audit's.",
)
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.05),
    default=None,
    help="With --watch: how often the bundle is checked for a change [bundle_poll_seconds, 1].",
)
@click.pass_context
def audit_command(
    ctx: click.Context,
    from_file: Path | None,
    kubeconfig: Path | None,
    in_cluster: bool,
    bundle_path: Path | None,
    bundle_key: Path | None,
    data_dir: Path | None,
    as_json: bool,
    watch: bool,
    poll_seconds: float | None,
) -> None:
    """Decide the objects already in a cluster (from a file, a kubeconfig or in-cluster)
    against the bundle, as the validating
    webhook would decide their creation, and list every one it would refuse: kind,
    namespace, name, the rule and the reason (the Cedar policies, the Pod Security
    checks). Pods and the pod templates of Deployments, StatefulSets, DaemonSets,
    ReplicaSets, Jobs and CronJobs are inspected; Namespaces listed with them classify
    them (docket.io/classification).

    Exits 0 when nothing is refused, 1 when something is, 2 on bad input.
    """
    from engine._core.evaluate import Engine
    from engine._service.bundle_watch import BundleWatcher

    if (from_file is not None) + (kubeconfig is not None) + in_cluster != 1:
        raise click.UsageError("give exactly one of --from-file, --kubeconfig or --in-cluster")
    settings = settings_of(ctx)
    if data_dir is not None:
        settings = settings.with_flags(data_dir=data_dir)
    path, key = bundle_path or settings.bundle, bundle_key or settings.bundle_public_key
    engine = Engine(None)
    interval = poll_seconds or settings.bundle_poll_seconds
    # Stamped before the first load: a change made meanwhile is seen at the first poll.
    watcher = BundleWatcher(engine, path, interval=interval, public_key=public_key(key))
    engine.swap(load_bundle(path, key))

    def once() -> int:
        items, source = _read_source(from_file, kubeconfig)
        audit = _run(engine, items, source, settings)
        if data_dir is not None:
            devices = _devices(settings, datetime.now(UTC))
            audit = dataclasses.replace(audit, drifts=(*audit.drifts, *devices))
        logged = _record(audit, settings) if data_dir is not None else None
        _report(audit, logged, as_json)
        return 1 if audit.drifts else 0

    code = once()
    if watch:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(interval):
            if watcher.check():
                code = once()
    ctx.exit(code)
