"""A ``docket serve`` whose bundle has one device class, ``fleet``, that appraises the boot
event log of tests/eventlogs.py's standard boot (no golden PCR values), and a swtpm booted
with a log's events: what the measured-boot end-to-end and attack tests share."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import eventlogs
from e2e.docket_process import Docket, start_docket
from swtpm import ProvisionedState, SoftwareTpm

ROOT = Path(__file__).resolve().parents[2]
IMAGES = (eventlogs.SHIM, eventlogs.GRUB, eventlogs.KERNEL)
CHAIN = hashlib.sha256(b"".join(hashlib.sha256(i).digest() for i in IMAGES)).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FLEET = f"""\
class = "fleet"
description = "measured boot: shim, grub, kernel with Secure Boot on"
secure_boot = true
measured_boot = true

[event_log]
bank = "sha256"
db = ["{sha256(eventlogs.DB)}"]
dbx_revisions = {{ "{sha256(eventlogs.DBX)}" = 371 }}
min_dbx_revision = 300
min_crtm_version = "1.0"

[[event_log.boot]]
name = "shim"
digests = ["{sha256(eventlogs.SHIM)}"]

[[event_log.boot]]
name = "grub"
digests = ["{sha256(eventlogs.GRUB)}"]

[[event_log.boot]]
name = "kernel"
digests = ["{sha256(eventlogs.KERNEL)}", "{"ab" * 32}"]
"""


def serve_fleet(provisioned_tpm: ProvisionedState, tmp_path: Path) -> Iterator[Docket]:
    """``docket serve`` with the ``fleet`` class only, trusting the local TPM CA's root.
    One per test: every swtpm is a copy of one state (one EK), whose TPM clock starts
    again, and Docket refuses a device's clock going backwards."""
    root = tmp_path / "measured-boot"
    bundle = root / "bundle"
    shutil.copytree(ROOT / "policies", bundle)
    (bundle / "reference" / "dev.toml").unlink()
    (bundle / "reference" / "fleet.toml").write_text(FLEET)
    roots = root / "served" / "data" / "trust" / "ek-roots"
    roots.mkdir(parents=True)
    shutil.copy(provisioned_tpm.root_cert, roots / "swtpm-localca.pem")
    running = start_docket(root / "served", bundle=bundle)
    yield running  # pytest runs the rest as the fixture's teardown, whatever the test did
    assert running.stop() == 0, running.log.read_text()


def booted(swtpm: SoftwareTpm, events: list[eventlogs.LogEvent], cwd: Path) -> None:
    """Extend the swtpm's sha256 PCRs as ``events`` say (what the firmware would do)."""
    for command in eventlogs.extend_commands(events, banks=("sha256",)):
        swtpm.run(*command, cwd=cwd)
