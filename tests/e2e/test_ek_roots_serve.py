"""``docket serve`` with every vendor's EK roots (issue 14, finding 11).

The roots are real vendor certificates (tests/attestation/fixtures/ek-roots/, from Keylime);
seven of them, Nuvoton's, are not strict DER. With all of them and one garbage file in the
EK roots directory, the service starts, loads every vendor certificate, skips the garbage
with a one-line reason naming the file, and says how many it loaded and skipped.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from e2e.docket_process import start_docket

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "attestation" / "fixtures" / "ek-roots"


def test_nuvoton_roots_and_a_garbage_file_do_not_stop_serve(tmp_path: Path) -> None:
    roots = tmp_path / "ek-roots"
    roots.mkdir()
    vendor = sorted(FIXTURES.glob("*.pem"))
    assert len(vendor) >= 17, vendor
    for path in vendor:
        shutil.copy(path, roots / path.name)
    (roots / "zz-garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a cert\n")

    docket = start_docket(tmp_path / "serve", "--ek-roots", str(roots))
    try:
        text = docket.log.read_text()
        assert docket.process.poll() is None, text
        assert re.search(r"ek_root_skipped.*zz-garbage\.pem.*reason=", text), text
        assert f"{len(vendor)} EK roots" in text, text
        counts = re.search(r"ek_roots_loaded\S*\s.*loaded=(\d+).*skipped=(\d+)", text)
        assert counts is not None, text
        assert (int(counts[1]), int(counts[2])) == (len(vendor), 1), text
        for nuvoton in ("NTC1.pem", "NUVO_2111.pem"):
            assert not re.search(rf"ek_root_skipped.*{nuvoton}", text), text
    finally:
        assert docket.stop() == 0, docket.log.read_text()
