"""``docket policy derive-boot``: a measured-boot class from known-good event logs, shown
for review, written only with ``--write`` once confirmed."""

from __future__ import annotations

from pathlib import Path

import eventlogs

from attestation import parse_reference
from tests.engine.cli.test_cli import assert_one_line_error, docket


def logs(tmp_path: Path) -> list[str]:
    """Two known-good logs of one fleet: the second boots a newer kernel."""
    paths = []
    for number, kernel in enumerate((eventlogs.KERNEL, b"vmlinuz 6.9")):
        events = eventlogs.standard_boot(images=(eventlogs.SHIM, eventlogs.GRUB, kernel))
        path = tmp_path / f"machine{number}.bin"
        path.write_bytes(eventlogs.crypto_agile(events))
        paths.append(str(path))
    return paths


def test_derive_boot_shows_the_class_and_a_summary_and_writes_nothing(tmp_path: Path) -> None:
    result = docket("policy", "derive-boot", "--class", "fleet", *logs(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "[event_log]" in result.stdout
    assert "2 logs, Secure Boot on in every one" in result.stdout
    assert "boot stage 3 (kernel): 2 digests" in result.stdout
    assert list(tmp_path.glob("*.toml")) == []


def test_derive_boot_writes_the_class_once_confirmed(tmp_path: Path) -> None:
    target = tmp_path / "reference" / "fleet.toml"
    target.parent.mkdir()
    paths = logs(tmp_path)
    refused = docket(
        "policy", "derive-boot", "--class", "fleet", "--write", str(target), *paths, stdin="n\n"
    )
    assert refused.returncode == 1, refused.stderr
    assert not target.exists()
    done = docket(
        "policy", "derive-boot", "--class", "fleet", "--write", str(target), *paths, stdin="y\n"
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {target}" in done.stdout
    fleet = parse_reference({"fleet.toml": target.read_bytes()}).classes[0]
    assert fleet.secure_boot
    assert fleet.event_log is not None
    assert len(fleet.event_log.boot[2].digests) == 2


def test_derive_boot_refuses_a_malformed_log_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 10)
    assert_one_line_error(docket("policy", "derive-boot", str(bad)), 2, f"{bad}:")
