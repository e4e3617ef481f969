"""Measured-boot appraisal: verify a quote and appraise a 40 KB boot event log against it.

The issue's target: a 40 KB log plus its quote appraised at least 300 times a second on
one core. Each call is ``verify_answer`` as an Attest makes it, for a class with an
``[event_log]`` section (tests/eventlogs.py's standard boot, with a dbx of 400 hashes and
boot-variable events to make 40 KB): the activated secret, the quote's signature (ECDSA
P-256), nonce, PCR selection (sha256 0-9) and digest, then the log parsed, replayed against
the quoted PCRs and appraised (every rule of ``attestation._measured_boot``). The evidence
is made in Python with the verifier tests' helpers (tests/attestation/test_verifier.py and
tests/eventlogs.py, imported by path, as bench_attest imports tests/swtpm.py). The process
is pinned to one core; the same answer is verified again each call (the pure path keeps
no replay state). Prints MET / NOT MET.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from attestation._reference import ReferenceClass, ReferenceValues
from attestation._verifier import TrustRoots, UnverifiedEnrollment, begin_enrollment, verify_answer
from benchmarks._common import as_dict, import_path, summarize, table, time_calls

TESTS = Path(__file__).resolve().parents[1] / "tests"
TARGET_PER_S = 300
LOG_BYTES = 40_000
CALLS = 2000
QUICK_CALLS = 200
LOG_PCRS = list(range(10))


def forty_kb_log(logs: ModuleType) -> tuple[list[Any], bytes, bytes]:
    """The standard boot with a 400-hash dbx, padded with EV_EFI_VARIABLE_BOOT events of
    PCR 1 (Boot#### variables) to about :data:`LOG_BYTES`."""
    dbx = logs.signature_list(
        logs.EFI_CERT_SHA256, [hashlib.sha256(b"revoked %d" % i).digest() for i in range(400)]
    )
    events = [
        logs.variable("dbx", dbx) if b"d\x00b\x00x\x00" in e.data[16:40] else e
        for e in logs.standard_boot()
    ]
    number = 0
    while len(logs.crypto_agile(events)) < LOG_BYTES:
        boot = logs.variable_data(logs.EFI_GLOBAL_VARIABLE, f"Boot{number:04X}", bytes(160))
        events.insert(1, logs.LogEvent(1, 0x80000002, boot))
        number += 1
    return events, logs.crypto_agile(events), dbx


def run(*, quick: bool = False) -> dict[str, Any]:
    """Time ``verify_answer`` with a 40 KB log; print the table; return the figures."""
    logs = import_path("eventlogs", TESTS / "eventlogs.py")
    helpers = import_path(
        "docket_bench_verifier_helpers", TESTS / "attestation" / "test_verifier.py"
    )
    events, log, dbx = forty_kb_log(logs)
    ek = rsa.generate_private_key(65537, 2048)
    ak = ec.generate_private_key(ec.SECP256R1())
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = helpers.certificate("EK Root", root_key.public_key(), "EK Root", root_key, ca=True)
    ek_cert = helpers.certificate("", ek.public_key(), "EK Root", root_key, ca=False)
    enrollment = UnverifiedEnrollment(
        helpers.rsa_ek_public(ek), ek_cert.public_bytes(Encoding.DER), helpers.ecc_ak_public(ak)
    )
    now = helpers.NOW
    challenge, pending = begin_enrollment(enrollment, TrustRoots([root]), now=now)
    replayed = logs.replay(events)
    values = {i: replayed.get(i, bytes(32)) for i in LOG_PCRS}
    secret = helpers.activate(ek, helpers.ak_name(enrollment.ak_public), challenge.credential)
    quote = helpers.attest(challenge.nonce, helpers.digest_of(values, LOG_PCRS), pcrs=LOG_PCRS)
    signature = helpers.sign(ak, quote)
    policy = helpers.BOOT_CLASS.event_log.model_dump()
    policy["dbx_revisions"] = {hashlib.sha256(dbx).hexdigest(): 400}
    fleet = {"class": "fleet", "secure_boot": True, "measured_boot": True, "event_log": policy}
    reference = ReferenceValues(classes=(ReferenceClass.model_validate(fleet),))
    pcr_values = {(0x000B, i): v for i, v in values.items()}

    def once(_: int) -> object:
        return verify_answer(
            pending,
            activated_secret=secret,
            quote=quote,
            signature=signature,
            pcr_values=pcr_values,
            reference=reference,
            last_clock=None,
            now=now + timedelta(seconds=1),
            event_log=log,
        )

    posture = once(0).posture  # type: ignore[attr-defined]
    assert posture.device_class == "fleet"
    assert posture.boot_chain is not None
    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})
    calls = QUICK_CALLS if quick else CALLS
    once(0)
    gc.collect()
    samples, seconds = time_calls(once, range(calls))
    per_s = calls / seconds
    summary = summarize(samples)
    met = "MET" if per_s >= TARGET_PER_S else "NOT MET"
    print(
        table(
            ("log bytes", "events", "calls", "per s (1 core)", "p50 µs", "p99 µs"),
            [(len(log), len(events), calls, round(per_s), summary.p50_us, summary.p99_us)],
        )
    )
    print(f"  quote + 40 KB log appraised ≥ {TARGET_PER_S}/s on one core: {met}")
    return {
        "log_bytes": len(log),
        "calls": calls,
        "per_s": per_s,
        **as_dict(summary),
        "target_per_s": TARGET_PER_S,
        "met": per_s >= TARGET_PER_S,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
