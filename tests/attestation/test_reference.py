"""Reference values: one TOML file per device class, parsed strictly, tried in class-name
order; and the posture claims a match yields, round-tripped strictly."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attestation._errors import AttestationError, EvidenceError, ParseError, ReferenceError
from attestation._posture import Posture
from attestation._reference import ReferenceValues, load_reference, parse_reference
from attestation._tpm import ALG_SHA1, ALG_SHA256, ClockInfo, PcrSelection
from attestation._verifier import VerifiedAttestation, appraise_any

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "policies" / "reference"
ZERO = "00" * 32
MEASURED = {i: hashlib.sha256(b"boot %d" % i).hexdigest() for i in range(8)}
EK_HASH = hashlib.sha256(b"ek").digest()


def toml_class(
    *,
    pcrs: Mapping[int, str] | None = None,
    bank: str = "sha256",
    header: str = "secure_boot = false\nmeasured_boot = false\n",
) -> bytes:
    """A reference file: ``header`` lines, then one ``[pcrs.<bank>]`` table."""
    values = {0: ZERO} if pcrs is None else pcrs
    lines = "".join(f'{index} = "{value}"\n' for index, value in values.items())
    return f"{header}\n[pcrs.{bank}]\n{lines}".encode()


def verified(
    values: Mapping[int, str], *, firmware: int = 0x2000_0001, manufacturer: str = "IBM"
) -> VerifiedAttestation:
    """A verified attestation (as finish_attestation returns) quoting sha256 ``values``."""
    pcrs = {(ALG_SHA256, i): bytes.fromhex(v) for i, v in values.items()}
    return VerifiedAttestation(
        ek_hash=EK_HASH,
        ak_name=b"\x00\x0b" + bytes(32),
        pcrs=MappingProxyType(pcrs),
        selection=(PcrSelection(ALG_SHA256, frozenset(values)),),
        firmware_version=firmware,
        clock_info=ClockInfo(clock=1, reset_count=0, restart_count=0, safe=True),
        tpm_manufacturer=manufacturer,
    )


# --- parsing -------------------------------------------------------------------------------

FULL = b"""\
class = "lab"
description = "lab machines, measured boot with secure boot"
secure_boot = true
measured_boot = true
min_firmware = 0x20000000
region = "eu"

[pcrs.sha256]
0 = "%s"
7 = "%s"

[pcrs.sha1]
"4" = "%s"
""" % (MEASURED[0].upper().encode(), MEASURED[7].encode(), b"ab" * 20)


def test_a_full_class_parses() -> None:
    values = parse_reference({"reference/whatever.toml": FULL})
    (lab,) = values.classes
    assert lab.name == "lab"  # the class key wins over the file name
    assert lab.description == "lab machines, measured boot with secure boot"
    assert (lab.secure_boot, lab.measured_boot) == (True, True)
    assert lab.min_firmware == 0x2000_0000
    assert lab.region == "eu"
    assert lab.pcrs == {
        "sha256": {0: MEASURED[0], 7: MEASURED[7]},  # hex normalized to lowercase
        "sha1": {4: "ab" * 20},
    }
    assert lab.golden() == {
        (ALG_SHA256, 0): bytes.fromhex(MEASURED[0]),
        (ALG_SHA256, 7): bytes.fromhex(MEASURED[7]),
        (ALG_SHA1, 4): bytes.fromhex("ab" * 20),
    }


def test_optional_fields_default_and_the_class_is_the_file_stem() -> None:
    (cls,) = parse_reference({"reference/edge-v2.toml": toml_class()}).classes
    assert cls.name == "edge-v2"
    assert (cls.description, cls.min_firmware, cls.region) == ("", 0, None)


def test_no_files_no_classes() -> None:
    assert parse_reference({}) == ReferenceValues()
    assert ReferenceValues().classes == ()


def test_classes_are_sorted_by_class_name_not_file_name() -> None:
    files = {
        "a.toml": b'class = "zeta"\n' + toml_class(),
        "b.toml": b'class = "alpha"\n' + toml_class(),
        "c.toml": toml_class(),  # class "c"
    }
    values = parse_reference(files)
    assert values.names() == ("alpha", "c", "zeta")
    assert values.get("c") is values.classes[1]
    assert values.get("missing") is None


def test_built_directly_the_classes_are_sorted_and_unique() -> None:
    (one,) = parse_reference({"one.toml": toml_class()}).classes
    two = one.model_copy(update={"name": "two"})
    assert ReferenceValues(classes=(two, one)).names() == ("one", "two")
    with pytest.raises(ValueError, match="duplicate reference class 'one'"):
        ReferenceValues(classes=(one, one))


def test_the_toml_name_key_is_not_an_alias_for_class() -> None:
    with pytest.raises(ReferenceError, match=r"x\.toml:1: name: Extra inputs"):
        parse_reference({"x.toml": b'name = "other"\n' + toml_class()})


BOOTS = b"secure_boot = false\nmeasured_boot = false\n"


def _cls(header: str, **kwargs: Any) -> bytes:
    return toml_class(header=BOOTS.decode() + header, **kwargs)


# (files, expected problems: each a substring of one problem, in order)
REFUSALS: list[Any] = [
    pytest.param({"r/dev.toml": b"secure_boot = \xff\n"}, ["r/dev.toml:1: not UTF-8"], id="utf8"),
    pytest.param(
        {"r/dev.toml": b"secure_boot = false\nmeasured_boot = \n"},
        ["r/dev.toml:2: invalid TOML"],
        id="toml-syntax",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(header="measured_boot = false\n")},
        ["r/dev.toml:1: secure_boot: Field required"],
        id="missing-secure-boot",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(header="secure_boot = false\n")},
        ["r/dev.toml:1: measured_boot: Field required"],
        id="missing-measured-boot",
    ),
    pytest.param(
        {"r/dev.toml": b"secure_boot = false\nmeasured_boot = false\n"},
        [
            "r/dev.toml:1: pcrs: a class needs golden PCR values ([pcrs.<bank>]) or an "
            "[event_log] section"
        ],
        id="missing-pcrs",
    ),
    pytest.param(
        {"r/dev.toml": _cls('colour = "blue"\n')},
        ["r/dev.toml:3: colour: Extra inputs are not permitted"],
        id="unknown-field",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(header='secure_boot = "no"\nmeasured_boot = 1\n')},
        [
            "r/dev.toml:1: secure_boot: Input should be a valid boolean",
            "r/dev.toml:2: measured_boot: Input should be a valid boolean",
        ],
        id="booleans-are-booleans",
    ),
    pytest.param(
        {"r/dev.toml": _cls("min_firmware = -1\n")},
        ["r/dev.toml:3: min_firmware: Input should be greater than or equal to 0"],
        id="negative-min-firmware",
    ),
    pytest.param(
        {"r/dev.toml": _cls('min_firmware = "1"\n')},
        ["r/dev.toml:3: min_firmware: Input should be a valid integer"],
        id="string-min-firmware",
    ),
    pytest.param(
        {"r/dev.toml": _cls('region = "eu west"\n')},
        ["r/dev.toml:3: region: 'eu west' must be 1-64 letters"],
        id="bad-region",
    ),
    pytest.param(
        {"r/dev.toml": _cls("description = 3\n")},
        ["r/dev.toml:3: description: Input should be a valid string"],
        id="description-not-a-string",
    ),
    pytest.param(
        {"r/dev.toml": b'class = "a/b"\n' + toml_class()},
        ["r/dev.toml:1: class: 'a/b' must be 1-64 letters"],
        id="bad-class-name",
    ),
    pytest.param(
        {"r/my dev.toml": toml_class()},
        ["r/my dev.toml:1: class: 'my dev' must be 1-64 letters", "defaults to the file name"],
        id="bad-file-stem",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(bank="md5")},
        ["r/dev.toml:4: pcrs.md5: unknown PCR bank; expected one of sha1, sha256"],
        id="unknown-bank",
    ),
    pytest.param(
        {"r/dev.toml": BOOTS + b"pcrs = { sha256 = 3 }\n"},
        ["r/dev.toml:3: pcrs.sha256: must be a non-empty table"],
        id="bank-not-a-table",
    ),
    pytest.param(
        {"r/dev.toml": BOOTS + b"pcrs = 3\n"},
        ["r/dev.toml:3: pcrs: must be a table of banks"],
        id="pcrs-not-a-table",
    ),
    pytest.param(
        {"r/dev.toml": BOOTS + b"[pcrs]\n"},
        ["r/dev.toml:3: pcrs: no golden PCR values"],
        id="no-banks",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(pcrs={})},
        ["r/dev.toml:4: pcrs.sha256: must be a non-empty table"],
        id="empty-bank",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(pcrs={0: ZERO, 24: ZERO})},
        ["r/dev.toml:6: pcrs.sha256.24: a PCR index must be a decimal number 0..23"],
        id="index-out-of-range",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(pcrs={"07": ZERO})},  # type: ignore[dict-item]
        ["r/dev.toml:5: pcrs.sha256.07: a PCR index must be a decimal number"],
        id="index-leading-zero",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(pcrs={"x": ZERO})},  # type: ignore[dict-item]
        ["r/dev.toml:5: pcrs.sha256.x: a PCR index must be a decimal number"],
        id="index-not-a-number",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(pcrs={3: "00" * 20})},
        ["r/dev.toml:5: pcrs.sha256.3: must be 64 hex digits (a sha256 digest), got 40"],
        id="digest-of-another-bank",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(pcrs={3: "zz" * 32})},
        ["r/dev.toml:5: pcrs.sha256.3: must be 64 hex digits"],
        id="digest-not-hex",
    ),
    pytest.param(
        {"r/dev.toml": BOOTS + b"[pcrs.sha256]\n0 = 0\n"},
        ["r/dev.toml:4: pcrs.sha256.0: must be 64 hex digits (a sha256 digest), got int"],
        id="digest-not-a-string",
    ),
    pytest.param(
        {"r/dev.toml": toml_class(header="secure_boot = true\nmeasured_boot = true\n")},
        ["r/dev.toml:1: secure_boot = true needs PCR 7 among the golden values"],
        id="secure-boot-without-pcr7",
    ),
    pytest.param(
        {"r/a.toml": b'class = "dev"\n' + toml_class(), "r/dev.toml": toml_class()},
        ["r/dev.toml:1: class: 'dev' is already defined in r/a.toml"],
        id="duplicate-class",
    ),
    pytest.param(
        {"r/a.toml": b"secure_boot = \n", "r/b.toml": toml_class(bank="md5")},
        ["r/a.toml:1: invalid TOML", "r/b.toml:4: pcrs.md5: unknown PCR bank"],
        id="every-file-reported",
    ),
]


@pytest.mark.parametrize(("files", "expected"), REFUSALS)
def test_malformed_reference_is_refused_naming_file_line_and_field(
    files: dict[str, bytes], expected: list[str]
) -> None:
    with pytest.raises(ReferenceError) as refused:
        parse_reference(files)
    error = refused.value
    assert isinstance(error, AttestationError)
    joined = "\n".join(error.problems)
    for fragment in expected:
        assert fragment in joined, joined
    assert str(error) == "; ".join(error.problems)
    assert len(error.problems) == len([f for f in expected if f.startswith("r/")])


MEASURED_BOOT = b"""\
class = "fleet"
secure_boot = true
measured_boot = true

[event_log]
db = ["%s"]
min_dbx_revision = 7
dbx_revisions = { "%s" = 7 }
allowed_actions = ["Booting BIOS"]

[[event_log.boot]]
name = "shim"
digests = ["%s", "%s"]

[[event_log.boot]]
name = "kernel"
digests = ["%s"]
""" % (b"AA" * 32, b"bb" * 32, b"11" * 32, b"22" * 32, b"33" * 32)


def test_a_measured_boot_class_needs_no_golden_pcrs_and_requires_pcrs_0_to_9() -> None:
    values = parse_reference({"r/fleet.toml": MEASURED_BOOT})
    fleet = values.classes[0]
    assert fleet.pcrs == {}
    assert fleet.event_log is not None
    assert fleet.event_log.db == ("aa" * 32,)  # lowercase
    assert [stage.name for stage in fleet.event_log.boot] == ["shim", "kernel"]
    assert fleet.event_log.dbx_revisions == {"bb" * 32: 7}
    assert values.required_pcrs() == {ALG_SHA256: frozenset(range(10))}
    with_golden = parse_reference(
        {"a.toml": MEASURED_BOOT, "b.toml": toml_class(pcrs={10: "00" * 20}, bank="sha1")}
    )
    assert with_golden.required_pcrs() == {
        ALG_SHA1: frozenset({10}),
        ALG_SHA256: frozenset(range(10)),
    }


MEASURED_BOOT_REFUSALS = [
    pytest.param(
        MEASURED_BOOT.replace(b"measured_boot = true", b"measured_boot = false"),
        "r/x.toml:3: measured_boot: an [event_log] class is a measured boot: set it true",
        id="not-measured",
    ),
    pytest.param(
        MEASURED_BOOT.replace(
            b'name = "kernel"\ndigests = ["' + b"33" * 32,
            b'name = "kernel"\ndigests = ["' + b"33" * 20,
        ),
        "r/x.toml:5: event_log: boot stage 2 (kernel): 3333333333333333… is not a sha256 digest",
        id="stage-digest-size",
    ),
    pytest.param(
        MEASURED_BOOT.replace(b"dbx_revisions = {", b"other = {"),
        "event_log.other: Extra inputs are not permitted",
        id="unknown-key",
    ),
    pytest.param(
        MEASURED_BOOT.replace(b'db = ["', b'db = ["0'),
        "event_log.db.0: String should match pattern",
        id="db-digest",
    ),
    pytest.param(
        MEASURED_BOOT.replace(b"dbx_revisions = {", b"xx = {").replace(b"xx = {", b"#"),
        "min_dbx_revision needs dbx_revisions",
        id="revision-without-table",
    ),
]


@pytest.mark.parametrize(("data", "message"), MEASURED_BOOT_REFUSALS)
def test_a_malformed_event_log_section_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ReferenceError) as refused:
        parse_reference({"r/x.toml": data})
    assert message in str(refused.value)


def test_secure_boot_with_pcr7_in_any_bank_is_accepted() -> None:
    header = "secure_boot = true\nmeasured_boot = true\n"
    data = toml_class(header=header, pcrs={7: "11" * 20}, bank="sha1")
    assert parse_reference({"x.toml": data}).classes[0].secure_boot


# --- required PCRs -------------------------------------------------------------------------


def test_required_pcrs_are_the_union_of_every_class() -> None:
    files = {
        "a.toml": toml_class(pcrs={0: ZERO, 2: ZERO}),
        "b.toml": toml_class(pcrs={2: ZERO, 7: ZERO}),
        "c.toml": toml_class(pcrs={10: "00" * 20}, bank="sha1"),
    }
    values = parse_reference(files)
    assert values.required_pcrs() == {
        ALG_SHA1: frozenset({10}),
        ALG_SHA256: frozenset({0, 2, 7}),
    }
    assert values.pcr_selection() == [("sha1", [10]), ("sha256", [0, 2, 7])]


def test_no_classes_require_nothing() -> None:
    assert ReferenceValues().required_pcrs() == {}
    assert ReferenceValues().pcr_selection() == []


# --- appraising against every class ----------------------------------------------------------


@pytest.fixture(scope="module")
def estate() -> ReferenceValues:
    """dev (all zero), lab (measured PCRs 0-7, secure boot, eu), old (PCR 0 measured)."""
    measured = "secure_boot = true\nmeasured_boot = true\n"
    return parse_reference(
        {
            "dev.toml": toml_class(pcrs=dict.fromkeys(range(8), ZERO)),
            "lab.toml": toml_class(header=measured + 'region = "eu"\n', pcrs=MEASURED),
            "old.toml": toml_class(
                header="secure_boot = false\nmeasured_boot = true\nmin_firmware = 0x30000000\n",
                pcrs={0: MEASURED[0]},
            ),
        }
    )


def test_the_matching_class_gives_the_posture(estate: ReferenceValues) -> None:
    posture = appraise_any(verified(MEASURED), estate)
    assert posture == Posture(
        attested=True,
        device_class="lab",
        secure_boot=True,
        measured_boot_ok=True,
        firmware_version=0x2000_0001,
        tpm_manufacturer="IBM",
        ek_hash=EK_HASH,
        region="eu",
    )


def test_the_first_matching_class_in_name_order_wins(estate: ReferenceValues) -> None:
    # Firmware new enough: both "lab" and "old" match; "lab" sorts first.
    posture = appraise_any(verified(MEASURED, firmware=0x4000_0000), estate)
    assert posture.device_class == "lab"
    only_old = ReferenceValues(classes=(estate.classes[2],))
    posture = appraise_any(verified(MEASURED, firmware=0x4000_0000), only_old)
    assert (posture.device_class, posture.secure_boot, posture.region) == ("old", False, None)


def test_an_unmeasured_tpm_is_dev(estate: ReferenceValues) -> None:
    posture = appraise_any(verified(dict.fromkeys(range(8), ZERO)), estate)
    assert (posture.device_class, posture.secure_boot, posture.measured_boot_ok) == (
        "dev",
        False,
        False,
    )


def test_matching_no_class_says_why_for_each(estate: ReferenceValues) -> None:
    values = {**MEASURED, 3: ZERO}
    with pytest.raises(EvidenceError) as refused:
        appraise_any(verified(values), estate)
    assert str(refused.value) == (
        "matches no reference class: "
        "dev: PCR sha256:0 does not match its reference value; "
        "lab: PCR sha256:3 does not match its reference value; "
        "old: firmware version 0x20000001 is below the minimum 0x30000000"
    )


def test_a_pcr_that_was_not_quoted_matches_no_class(estate: ReferenceValues) -> None:
    with pytest.raises(EvidenceError, match="lab: PCR sha256:1 has a reference value but was not"):
        appraise_any(verified({0: MEASURED[0]}), estate)


def test_no_classes_appraise_nothing() -> None:
    with pytest.raises(
        EvidenceError, match=r"^no reference values are configured: no device can be appraised$"
    ):
        appraise_any(verified({0: ZERO}), ReferenceValues())


# --- the default bundle's dev class ---------------------------------------------------------


def test_the_default_bundle_has_the_dev_class_only() -> None:
    values = load_reference(DEFAULT_REFERENCE)
    assert values.names() == ("dev",)
    (dev,) = values.classes
    assert (dev.secure_boot, dev.measured_boot, dev.region) == (False, False, None)
    assert dev.golden() == {(ALG_SHA256, i): bytes(32) for i in range(8)}
    text = (DEFAULT_REFERENCE / "dev.toml").read_text()
    assert "swtpm" in text
    assert "Production bundles leave this file out" in text


def test_load_reference_reads_toml_files_of_a_directory(tmp_path: Path) -> None:
    assert load_reference(tmp_path / "missing") == ReferenceValues()
    (tmp_path / "one.toml").write_bytes(toml_class())
    (tmp_path / "notes.md").write_text("not a class\n")
    assert load_reference(tmp_path).names() == ("one",)
    (tmp_path / "two.toml").write_bytes(toml_class(bank="md5"))
    with pytest.raises(ReferenceError, match=r"two\.toml:4: pcrs\.md5"):
        load_reference(tmp_path)


# --- posture claims -------------------------------------------------------------------------

POSTURE = Posture(
    attested=True,
    device_class="lab",
    secure_boot=True,
    measured_boot_ok=True,
    firmware_version=0xFFFF_FFFF_FFFF_FFFF,
    tpm_manufacturer="IBM",
    ek_hash=EK_HASH,
    region="eu",
)
CLAIMS: dict[str, Any] = {
    "attested": True,
    "device_class": "lab",
    "secure_boot": True,
    "measured_boot_ok": True,
    "firmware_version": "0xffffffffffffffff",
    "tpm_manufacturer": "IBM",
    "ek_hash": EK_HASH.hex(),
    "region": "eu",
}


def test_claims_are_json_ready_with_exactly_these_keys() -> None:
    assert POSTURE.claims() == CLAIMS
    assert json.loads(json.dumps(POSTURE.claims())) == CLAIMS
    no_region = Posture(**{**POSTURE.__dict__, "region": None, "firmware_version": 0x2A})
    claims = no_region.claims()
    assert "region" not in claims
    assert claims["firmware_version"] == "0x000000000000002a"


def test_claims_round_trip() -> None:
    assert Posture.from_claims(POSTURE.claims()) == POSTURE
    assert Posture.from_claims({k: v for k, v in CLAIMS.items() if k != "region"}).region is None


BAD_CLAIMS: list[Any] = [
    pytest.param([], "expected an object", id="not-an-object"),
    pytest.param({**CLAIMS, "extra": 1}, "extra: Extra inputs", id="extra-key"),
    pytest.param({k: v for k, v in CLAIMS.items() if k != "ek_hash"}, "ek_hash", id="missing"),
    pytest.param({**CLAIMS, "attested": 1}, "attested", id="int-for-bool"),
    pytest.param({**CLAIMS, "secure_boot": "true"}, "secure_boot", id="string-for-bool"),
    pytest.param({**CLAIMS, "firmware_version": 42}, "firmware_version", id="firmware-int"),
    pytest.param({**CLAIMS, "firmware_version": "0x2a"}, "firmware_version", id="firmware-short"),
    pytest.param(
        {**CLAIMS, "firmware_version": "0xFFFFFFFFFFFFFFFF"}, "firmware_version", id="upper-hex"
    ),
    pytest.param({**CLAIMS, "ek_hash": EK_HASH.hex().upper()}, "ek_hash", id="ek-hash-upper"),
    pytest.param({**CLAIMS, "ek_hash": "ab"}, "ek_hash", id="ek-hash-short"),
    pytest.param({**CLAIMS, "device_class": ""}, "device_class", id="empty-class"),
    pytest.param({**CLAIMS, "tpm_manufacturer": None}, "tpm_manufacturer", id="null-maker"),
    pytest.param({**CLAIMS, "tpm_manufacturer": "a\nb"}, "tpm_manufacturer", id="maker-newline"),
    pytest.param({**CLAIMS, "region": None}, "region: null", id="null-region"),
    pytest.param({**CLAIMS, "region": "e u"}, "region", id="bad-region"),
]


BOOT = Posture(
    **{
        **POSTURE.__dict__,
        "boot_chain": "ab" * 32,
        "dbx_revision": 371,
        "crtm_version": "1.2.3 (2024-05-01)",
    }
)
BOOT_CLAIMS: dict[str, Any] = {
    **CLAIMS,
    "boot_chain": "ab" * 32,
    "dbx_revision": 371,
    "crtm_version": "1.2.3 (2024-05-01)",
}


def test_boot_facts_are_claims_only_when_an_event_log_was_appraised() -> None:
    assert BOOT.claims() == BOOT_CLAIMS
    assert Posture.from_claims(BOOT_CLAIMS) == BOOT
    assert not {"boot_chain", "dbx_revision", "crtm_version"} & set(POSTURE.claims())


BAD_CLAIMS += [
    pytest.param({**BOOT_CLAIMS, "boot_chain": None}, "boot_chain: null", id="null-chain"),
    pytest.param({**BOOT_CLAIMS, "boot_chain": "AB" * 32}, "boot_chain", id="chain-upper"),
    pytest.param({**BOOT_CLAIMS, "dbx_revision": -1}, "dbx_revision", id="dbx-negative"),
    pytest.param({**BOOT_CLAIMS, "dbx_revision": "3"}, "dbx_revision", id="dbx-string"),
    pytest.param({**BOOT_CLAIMS, "crtm_version": "a\nb"}, "crtm_version", id="crtm-newline"),
]


@pytest.mark.parametrize(("claims", "message"), BAD_CLAIMS)
def test_from_claims_refuses_anything_off(claims: Any, message: str) -> None:
    with pytest.raises(ParseError, match=f"^posture claims: .*{message}"):
        Posture.from_claims(claims)


NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
POSTURES = st.builds(
    Posture,
    attested=st.booleans(),
    device_class=NAMES,
    secure_boot=st.booleans(),
    measured_boot_ok=st.booleans(),
    firmware_version=st.integers(0, 2**64 - 1),
    tpm_manufacturer=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64),
    ek_hash=st.binary(min_size=32, max_size=32),
    region=st.none() | NAMES,
    boot_chain=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex),
    dbx_revision=st.none() | st.integers(0, 2**32 - 1),
    crtm_version=st.none()
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=128),
)


@given(POSTURES)
def test_any_posture_round_trips_through_json_claims(posture: Posture) -> None:
    claims = json.loads(json.dumps(posture.claims()))
    assert Posture.from_claims(claims) == posture


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*CLAIMS, "other"]), JSON) | JSON)
def test_from_claims_raises_only_parse_error(claims: Any) -> None:
    try:
        posture = Posture.from_claims(claims)
    except ParseError:
        return
    assert posture.claims() == claims


@given(st.sampled_from(sorted(CLAIMS)), JSON)
def test_changing_one_claim_to_another_json_value(key: str, value: Any) -> None:
    claims = {**CLAIMS, key: value}
    try:
        posture = Posture.from_claims(claims)
    except ParseError:
        return
    assert posture.claims() == claims


TOML_VALUES = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=70),
    lambda inner: st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["class", "description", "secure_boot", "measured_boot", "min_firmware", "region", "pcrs"]
)


def _toml(value: Any) -> str:
    """A TOML inline value (json.dumps strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _outcome(data: bytes) -> tuple[ReferenceValues | None, tuple[str, ...]]:
    """(values, ()) or (None, problems): any other exception escapes and fails the test."""
    try:
        return parse_reference({"x.toml": data}), ()
    except ReferenceError as exc:
        return None, exc.problems


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_reference_error(data: bytes) -> None:
    values, problems = _outcome(data)
    assert (values is None) == bool(problems)
    assert all(problem.startswith("x.toml:") for problem in problems)


@given(st.dictionaries(FIELDS | st.text(max_size=8), TOML_VALUES, max_size=8))
def test_arbitrary_tables_parse_or_raise_reference_error(table: dict[str, Any]) -> None:
    text = "".join(f"{json.dumps(key)} = {_toml(value)}\n" for key, value in table.items())
    values, problems = _outcome(text.encode())
    assert all(problem.startswith("x.toml:") for problem in problems)
    if values is not None:
        assert values.classes[0].golden()
