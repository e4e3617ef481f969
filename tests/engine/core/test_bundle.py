"""Loading bundles: every problem placed at its file:line, ids, versions, archives, signatures."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import time
import tracemalloc
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from archive_bombs import long_name_bomb, many_members_bomb, tar_header
from sample_bundle import ACCESS, ENTITIES, PLACEMENT, SCHEMA, SITES, bundle_files, write_bundle

from attestation._tpm import ALG_SHA256
from audit.note import SignerKey, parse_note, sign_note
from engine import BundleError, Engine, PolicyBundle, Request, SignatureError
from engine._core.bundle import (
    MAX_DEPTH,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_NAME_BYTES,
    MAX_PAX_BYTES,
    MAX_RATIO,
)
from engine._core.signing import sign_bundle

NOW = datetime(2026, 1, 1, tzinfo=UTC)

TEMPLATE = """\
// Templates need linking, which bundles do not do.

@id("template")
permit (principal == ?principal, action, resource);
"""

MISMATCHED_ENTITY = """\
[
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "finance"}, "parents": []},
  {"uid": {"type": "User", "id": "mallory"}, "attrs": {"department": 7}, "parents": []}
]
"""

UNKNOWN_ENTITY_TYPE = """\
[
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "finance"}, "parents": []},
  {"uid": {"type": "Robot", "id": "r2"}, "attrs": {}, "parents": []}
]
"""

# The bad group's id also appears, as a parent and as a value, in the entity above it.
BAD_ENTITY_NAMED_EARLIER = """\
[
  {"uid": {"type": "User", "id": "dave"}, "attrs": {"department": "ops"},
   "parents": [{"type": "Group", "id": "ops"}]},
  {"uid": {"type": "Group", "id": "ops"}, "attrs": {},
   "parents": [{"type": "Data", "id": "ledger"}]}
]
"""

DUPLICATE_ENTITY = """\
[
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "finance"}, "parents": []},
  {"uid": {"type": "User", "id": "bob"}, "attrs": {"department": "finance"}, "parents": []},
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "hr"}, "parents": []}
]
"""

SECOND_PARIS = """\
[[site]]
name = "edge-paris"
region = "eu-west"
jurisdiction = "eu"
tier = "cloud"
cost_per_hour = 1.0
latency_ms = { eu = 1 }
"""

LAB_REFERENCE = f"""\
# A measured lab machine.
secure_boot = true
measured_boot = true
region = "eu"

[pcrs.sha256]
0 = "{"11" * 32}"
7 = "{"22" * 32}"
"""

SHADOWED_POSITIONAL_ID = """\
@id("policy1")
permit (principal, action == Docket::Action::"read", resource);
permit (principal, action == Docket::Action::"read", resource);
"""


def locations(problems: tuple[str, ...]) -> list[str]:
    return sorted(problem.split(": ", 1)[0] for problem in problems)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"20-placement.cedar": PLACEMENT.replace("resource is Docket::Site);", "resource);;")},
            {"20-placement.cedar:3": "unexpected token `;`"},
            id="syntax-error-in-second-policy-file",
        ),
        pytest.param(
            {
                "20-placement.cedar": PLACEMENT.replace(
                    "!resource.attested", "!resource.attested &&"
                )
            },
            {"20-placement.cedar:7": "unexpected token `}`"},
            id="syntax-error-on-a-condition-line",
        ),
        pytest.param(
            {"10-access.cedar": ACCESS + "\npermit (principal, action, resource)"},
            {"10-access.cedar:21": "unexpected end of input"},
            id="trailing-policy-without-semicolon",
        ),
        pytest.param(
            {"10-access.cedar": ACCESS.replace("owner.department ==", "owner.dept ==")},
            {"10-access.cedar:13": "policy 'same-department-writes': attribute `dept`"},
            id="unknown-attribute-at-its-policy",
        ),
        pytest.param(
            {"20-placement.cedar": PLACEMENT.replace('@id("no-data-at-edge")', '@id("read-own")')},
            {"20-placement.cedar:9": "policy id 'read-own' is already used at 10-access.cedar:2"},
            id="duplicate-id-across-files",
        ),
        pytest.param(
            {"00-first.cedar": SHADOWED_POSITIONAL_ID},
            {"00-first.cedar:3": "policy id 'policy1' is already used at 00-first.cedar:1"},
            id="id-annotation-shadows-a-positional-id",
        ),
        pytest.param(
            {"schema.cedarschema": None},
            {"schema.cedarschema:1": "missing"},
            id="missing-schema",
        ),
        pytest.param(
            {"schema.cedarschema": SCHEMA.replace("entity Site {", "entity Site {{")},
            {"schema.cedarschema:15": "unexpected token `{`"},
            id="schema-syntax-error",
        ),
        pytest.param(
            {"entities.json": ENTITIES.replace('"department": "ops"}', '"department": "ops",}')},
            {"entities.json:11": "invalid JSON"},
            id="entities-invalid-json",
        ),
        pytest.param(
            {"entities.json": "{}"},
            {"entities.json:1": "expected a JSON array"},
            id="entities-not-an-array",
        ),
        pytest.param(
            {"entities.json": DUPLICATE_ENTITY},
            {"entities.json:2": 'duplicate entity entry `Docket::User::"alice"`'},
            id="entities-duplicate-uid",
        ),
        pytest.param(
            {"entities.json": MISMATCHED_ENTITY},
            {"entities.json:3": 'User::"mallory": entity does not conform to the schema'},
            id="entity-not-matching-schema",
        ),
        pytest.param(
            {"entities.json": UNKNOWN_ENTITY_TYPE},
            {"entities.json:3": 'Robot::"r2"'},
            id="entity-of-unknown-type",
        ),
        pytest.param(
            {"entities.json": BAD_ENTITY_NAMED_EARLIER},
            {"entities.json:4": 'Group::"ops": entity does not conform to the schema'},
            id="entity-not-matching-schema-whose-id-appears-earlier",
        ),
        pytest.param(
            {"sites.toml": SITES.replace('tier = "cloud"', 'tier = "sky"')},
            {"sites.toml:10": "tier: Input should be 'edge', 'cloud' or 'onprem'"},
            id="sites-bad-tier-at-its-site-header",
        ),
        pytest.param(
            {"sites.toml": SITES + "\n" + SECOND_PARIS},
            {"sites.toml:27": "duplicate site name 'edge-paris'"},
            id="sites-duplicate-name",
        ),
        pytest.param(
            {"reference/lab.toml": LAB_REFERENCE.replace('"22', '"2')},
            {"reference/lab.toml:8": "pcrs.sha256.7: must be 64 hex digits (a sha256 digest)"},
            id="reference-bad-digest-at-its-line",
        ),
        pytest.param(
            {"reference/lab.toml": LAB_REFERENCE.replace("secure_boot = true", "secure_boot =")},
            {"reference/lab.toml:2": "invalid TOML"},
            id="reference-invalid-toml",
        ),
        pytest.param(
            {"reference/lab.toml": LAB_REFERENCE + "colour = 1\n"},
            {"reference/lab.toml:9": "pcrs.sha256.colour: a PCR index must be a decimal"},
            id="reference-key-in-the-wrong-table",
        ),
        pytest.param(
            {
                "reference/lab.toml": LAB_REFERENCE,
                "reference/lab2.toml": 'class = "lab"\n' + LAB_REFERENCE,
            },
            {"reference/lab2.toml:1": "class: 'lab' is already defined in reference/lab.toml"},
            id="reference-duplicate-class",
        ),
        pytest.param(
            {"30-templates.cedar": TEMPLATE},
            {"30-templates.cedar:3": "templates (?principal/?resource slots) are not supported"},
            id="template-refused",
        ),
        pytest.param(
            {"10-access.cedar": b"permit (principal, action, resource);\n\xff\n"},
            {"10-access.cedar:1": "not UTF-8 text"},
            id="policy-not-utf8",
        ),
        pytest.param(
            {"10-access.cedar": None, "20-placement.cedar": None},
            {"<memory>": "no *.cedar policy files"},
            id="no-policy-files",
        ),
        pytest.param(
            {"bundle.toml": '# settings\n[evaluation]\nforbid_errors = "allow"\n'},
            {"bundle.toml:3": 'evaluation.forbid_errors: \'allow\' is not "deny" or "cedar"'},
            id="settings-unknown-value",
        ),
        pytest.param(
            {"bundle.toml": '[evaluation]\nforbid_errors = "deny"\npermit_errors = "deny"\n'},
            {"bundle.toml:3": "unknown key evaluation.permit_errors"},
            id="settings-unknown-key",
        ),
        pytest.param(
            {"bundle.toml": '[evaluation]\nforbid_errors = "cedar"\n\n[limits]\ndepth = 9\n'},
            {"bundle.toml:4": "unknown setting 'limits' (expected [bundle], [evaluation])"},
            id="settings-unknown-table",
        ),
        pytest.param(
            {"bundle.toml": "[evaluation]\nforbid_errors = true\n"},
            {"bundle.toml:2": "evaluation.forbid_errors: True is not"},
            id="settings-value-not-a-string",
        ),
        pytest.param(
            {"bundle.toml": "[evaluation\n"},
            {"bundle.toml:1": "Expected ']'"},
            id="settings-invalid-toml",
        ),
        pytest.param(
            {
                "schema.cedarschema": SCHEMA.replace("entity Site {", "entity Site {{"),
                "20-placement.cedar": PLACEMENT.replace("(principal is", "(principal iz"),
                "30-templates.cedar": TEMPLATE,
                "entities.json": "[\n  {,\n]\n",
                "sites.toml": "[[site]\n",
            },
            {
                "schema.cedarschema:15": "unexpected token `{`",
                "20-placement.cedar:10": "unexpected token `iz`",
                "30-templates.cedar:3": "templates",
                "entities.json:2": "invalid JSON",
                "sites.toml:1": "Expected ']]'",
            },
            id="several-problems-at-once",
        ),
    ],
)
def test_broken_bundle_is_refused_with_every_problem_located(
    changes: Mapping[str, str | bytes | None], expected: Mapping[str, str]
) -> None:
    with pytest.raises(BundleError) as refused:
        PolicyBundle.from_files(bundle_files(changes))
    problems = refused.value.problems
    assert locations(problems) == sorted(expected), problems
    for problem in problems:
        location, message = problem.split(": ", 1)
        assert expected[location] in message, problem


def test_error_message_counts_the_other_problems() -> None:
    files = bundle_files({"schema.cedarschema": None, "sites.toml": "[[site]\n"})
    with pytest.raises(BundleError, match=r"^schema\.cedarschema:1: .* \(and 1 more\)$"):
        PolicyBundle.from_files(files)


# --- policy ids ---------------------------------------------------------------------------

READ = 'action == Docket::Action::"read"'


def test_positional_ids_count_across_files_sorted_by_name_and_id_annotations_win() -> None:
    files = bundle_files(
        {
            "10-access.cedar": None,
            "20-placement.cedar": None,
            # Written out of order on purpose: positions follow sorted file names.
            "b.cedar": f'@id("named")\npermit (principal, {READ}, resource);\n'
            f"permit (principal, {READ}, resource);\n",
            "a.cedar": f"permit (principal, {READ}, resource);\n\n"
            f"// second\npermit (principal, {READ}, resource);\n",
        }
    )
    bundle = PolicyBundle.from_files(files)
    assert [(p.id, p.position, p.where) for p in bundle.policies] == [
        ("policy0", 0, "a.cedar:1"),
        ("policy1", 1, "a.cedar:4"),
        ("named", 2, "b.cedar:1"),
        ("policy3", 3, "b.cedar:3"),
    ]
    request = Request.model_validate(
        {
            "principal": {"type": "User", "id": "bob"},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Data", "id": "ledger"},
        }
    )
    decision = Engine(bundle).decide(request, now=NOW)
    assert decision.reasons == ("policy0", "policy1", "named", "policy3")


# --- versions -------------------------------------------------------------------------------


def documented_version(files: Mapping[str, bytes]) -> str:
    """sha256 over every file but bundle.sig, sorted, each as ``path NUL length NUL bytes``."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if name != "bundle.sig":
            digest.update(b"%s\0%d\0%s" % (name.encode(), len(files[name]), files[name]))
    return "sha256:" + digest.hexdigest()


def test_version_is_sha256_over_sorted_files() -> None:
    files = bundle_files({"reference/notes.md": "# why\n"})
    assert PolicyBundle.from_files(files).version == documented_version(files)


@pytest.mark.parametrize(
    ("changes", "same_version"),
    [
        *(
            pytest.param({name: data + b"\n"}, False, id=f"edit-{name}")
            for name, data in bundle_files().items()
        ),
        pytest.param({"reference/notes.md": "# why\n"}, False, id="add-reference-file"),
        pytest.param({"sites.toml": None}, False, id="remove-sites"),
        pytest.param(
            {"bundle.toml": '[evaluation]\nforbid_errors = "deny"\n'}, False, id="add-settings"
        ),
        pytest.param({"bundle.sig": "ed25519 0000 AAAA\n"}, True, id="add-signature"),
    ],
)
def test_version_changes_with_any_file_but_the_signature(
    changes: Mapping[str, str | bytes | None], same_version: bool
) -> None:
    before = PolicyBundle.from_files(bundle_files()).version
    after = PolicyBundle.from_files(bundle_files(changes)).version
    assert (after == before) is same_version


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(None, "deny", id="no-bundle-toml"),
        pytest.param("", "deny", id="empty-bundle-toml"),
        pytest.param("[evaluation]\n", "deny", id="empty-table"),
        pytest.param('[evaluation]\nforbid_errors = "deny"\n', "deny", id="deny"),
        pytest.param('[evaluation]\nforbid_errors = "cedar"\n', "cedar", id="cedar"),
        pytest.param('evaluation.forbid_errors = "cedar"\n', "cedar", id="dotted-key"),
    ],
)
def test_forbid_errors_setting(settings: str | None, expected: str) -> None:
    bundle = PolicyBundle.from_files(bundle_files({"bundle.toml": settings}))
    assert bundle.forbid_errors == expected


def test_hidden_files_and_caches_in_a_directory_are_not_part_of_the_bundle(
    tmp_path: Path,
) -> None:
    plain = PolicyBundle.load(write_bundle(tmp_path / "plain", bundle_files()))
    noisy_files = bundle_files(
        {".git/HEAD": "ref: main\n", ".editorconfig": "root = true\n", "__pycache__/x.pyc": b"\0"}
    )
    noisy = PolicyBundle.load(write_bundle(tmp_path / "noisy", noisy_files))
    assert noisy.version == plain.version


# --- archives ------------------------------------------------------------------------------


def write_tarball(path: Path, members: Mapping[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("", id="flat"),
        pytest.param("./", id="dot-slash"),
        pytest.param("policies/", id="top-level-folder"),
    ],
)
def test_tarball_has_the_same_version_as_the_directory(tmp_path: Path, prefix: str) -> None:
    files = bundle_files({"reference/notes.md": "# why\n"})
    directory = PolicyBundle.load(write_bundle(tmp_path / "bundle", files))
    archive = write_tarball(
        tmp_path / "bundle.tar.gz", {prefix + name: data for name, data in files.items()}
    )
    packed = PolicyBundle.load(archive)
    assert packed.version == directory.version
    assert [p.id for p in packed.policies] == [p.id for p in directory.policies]


@pytest.mark.parametrize(
    "member",
    [
        pytest.param("../evil.cedar", id="parent-dir"),
        pytest.param("/etc/evil.cedar", id="absolute"),
        pytest.param("policies/../../evil.cedar", id="escapes-after-folder"),
    ],
)
def test_unsafe_tar_paths_are_refused(tmp_path: Path, member: str) -> None:
    archive = write_tarball(tmp_path / "bundle.tar.gz", {**bundle_files(), member: b""})
    with pytest.raises(BundleError, match="unsafe path in archive"):
        PolicyBundle.load(archive)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        pytest.param("bundle.tar.gz", b"not a tarball", "not a readable .tar.gz", id="garbage"),
        pytest.param("missing", None, "no such bundle directory", id="missing-path"),
    ],
)
def test_unreadable_bundle_paths_are_refused(
    tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    if data is not None:
        (tmp_path / name).write_bytes(data)
    with pytest.raises(BundleError, match=message):
        PolicyBundle.load(tmp_path / name)


# --- signatures ------------------------------------------------------------------------------


@pytest.fixture
def signing_key() -> SignerKey:
    return SignerKey.generate("docket-bundle")


@pytest.fixture
def signed_dir(tmp_path: Path, signing_key: SignerKey) -> Path:
    root = write_bundle(tmp_path / "bundle", bundle_files())
    version = PolicyBundle.load(root).version
    (root / "bundle.sig").write_text(sign_bundle(version, signing_key))
    return root


def test_signed_bundle_verifies_with_the_right_key(
    signed_dir: Path, signing_key: SignerKey
) -> None:
    bundle = PolicyBundle.load(signed_dir, public_key=signing_key.verifier())
    assert bundle.signed_by == f"docket-bundle+{signing_key.key_id.hex()}"
    # The signature is a C2SP signed note, as the audit log's checkpoints are.
    note = parse_note((signed_dir / "bundle.sig").read_text())
    assert note.text == f"docket-bundle/1\nversion {bundle.version}\n"


def test_signature_is_not_checked_without_a_key(signed_dir: Path) -> None:
    assert PolicyBundle.load(signed_dir).signed_by is None


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        pytest.param(None, "not signed by the configured key", id="wrong-key"),
        pytest.param(("20-placement.cedar", b"// edited\n"), "does not match", id="edited-file"),
        pytest.param(("99-extra.cedar", b"// added\n"), "does not match", id="added-file"),
        pytest.param(("bundle.sig", None), "missing", id="missing-signature"),
        pytest.param(("bundle.sig", b"ed25519 abc\n"), "bundle.sig: ", id="malformed"),
    ],
)
def test_signature_failures_are_refused(
    signed_dir: Path,
    signing_key: SignerKey,
    tamper: tuple[str, bytes | None] | None,
    message: str,
) -> None:
    key = signing_key.verifier()
    if tamper is None:
        key = SignerKey.generate("docket-bundle").verifier()
    else:
        name, data = tamper
        target = signed_dir / name
        if data is None:
            target.unlink()
        elif name == "bundle.sig":
            target.write_bytes(data)
        else:
            target.write_bytes(target.read_bytes() + data if target.exists() else data)
    with pytest.raises(SignatureError, match=message):
        PolicyBundle.load(signed_dir, public_key=key)


def test_a_note_by_the_right_key_over_something_else_is_refused(
    signed_dir: Path, signing_key: SignerKey
) -> None:
    """The key signing a note of another kind (a checkpoint, say) does not sign a bundle."""
    (signed_dir / "bundle.sig").write_text(sign_note("docket.local/x\n1\nAAAA\n", [signing_key]))
    with pytest.raises(SignatureError, match="not a docket-bundle/1 signature"):
        PolicyBundle.load(signed_dir, public_key=signing_key.verifier())


# --- reference values ------------------------------------------------------------------------

POLICIES = Path(__file__).resolve().parents[3] / "policies"


def test_the_default_bundle_has_the_dev_reference_class() -> None:
    bundle = PolicyBundle.load(POLICIES)
    assert bundle.reference.names() == ("dev",)
    dev = bundle.reference.classes[0]
    assert (dev.secure_boot, dev.measured_boot) == (False, False)
    assert dev.golden() == {(ALG_SHA256, i): bytes(32) for i in range(8)}
    assert bundle.reference.required_pcrs() == {ALG_SHA256: frozenset(range(8))}


def test_a_bundle_without_reference_values_has_none() -> None:
    bundle = PolicyBundle.from_files(bundle_files({"reference/notes.md": "# why\n"}))
    assert bundle.reference.classes == ()
    assert bundle.reference.required_pcrs() == {}


def test_only_toml_files_directly_in_reference_are_classes() -> None:
    files = bundle_files(
        {
            "reference/lab.toml": LAB_REFERENCE,
            "reference/old/retired.toml": "not even TOML [",
            "reference/README.md": "# classes\n",
            "lab.toml": "not a class either [",
        }
    )
    assert PolicyBundle.from_files(files).reference.names() == ("lab",)


def test_reference_values_load_from_a_tarball(tmp_path: Path) -> None:
    files = bundle_files({"reference/lab.toml": LAB_REFERENCE})
    archive = write_tarball(
        tmp_path / "bundle.tar.gz", {f"policies/{name}": data for name, data in files.items()}
    )
    bundle = PolicyBundle.load(archive)
    (lab,) = bundle.reference.classes
    assert (lab.name, lab.secure_boot, lab.region) == ("lab", True, "eu")


def test_a_broken_reference_in_a_tarball_is_refused(tmp_path: Path) -> None:
    files = bundle_files({"reference/lab.toml": LAB_REFERENCE.replace("region", "regoin")})
    archive = write_tarball(tmp_path / "bundle.tar.gz", files)
    with pytest.raises(BundleError, match=r"^reference/lab\.toml:4: regoin: Extra inputs"):
        PolicyBundle.load(archive)


def test_policy_validate_reports_a_broken_reference(tmp_path: Path) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(POLICIES, broken)
    dev = broken / "reference" / "dev.toml"
    dev.write_text(dev.read_text().replace("measured_boot = false", "measured_boot = no"))
    result = subprocess.run(
        [sys.executable, "-c", "from engine.cli import run; run()", "policy", "validate", broken],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith("reference/dev.toml:"), line
    assert "invalid TOML" in line
    assert "1 problem" in result.stderr
    assert "Traceback" not in result.stderr


# --- archive limits, enforced while streaming (issue 14, finding 9) ------------------------


def member(name: str, data: bytes, typeflag: bytes = b"0") -> bytes:
    return tar_header(name.encode(), len(data), typeflag) + data + bytes(-len(data) % 512)


def gzipped(*blocks: bytes) -> bytes:
    return gzip.compress(b"".join(blocks) + bytes(1024))


def good_members() -> list[bytes]:
    return [member(name, data) for name, data in bundle_files().items()]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            [tar_header(b"././@LongLink", MAX_NAME_BYTES + 1, b"L")],
            f"a GNU long name of {MAX_NAME_BYTES + 1} bytes",
            id="gnu-long-name",
        ),
        pytest.param(
            [tar_header(b"pax", MAX_PAX_BYTES + 1, b"x")],
            f"a pax header of {MAX_PAX_BYTES + 1} bytes",
            id="pax-header",
        ),
        pytest.param(
            [member("pax", b"99 path=" + b"a" * 17 + b"\n", b"x"), member("x", b"")],
            "malformed pax header",
            id="pax-malformed",
        ),
        pytest.param(
            [tar_header(b"huge.cedar", MAX_MEMBER_BYTES + 1, b"0")],
            f"huge.cedar: larger than {MAX_MEMBER_BYTES} bytes",
            id="member-size",
        ),
        pytest.param(
            [tar_header(b"link.cedar", 0, b"2", link=b"/etc/passwd")],
            "is a symbolic link (refused)",
            id="symlink",
        ),
        pytest.param(
            [tar_header(b"hard.cedar", 0, b"1", link=b"10-access.cedar")],
            "is a hard link (refused)",
            id="hard-link",
        ),
        pytest.param(
            [tar_header(b"dev", 0, b"3")], "is a character device (refused)", id="char-device"
        ),
        pytest.param([tar_header(b"blk", 0, b"4")], "is a block device (refused)", id="block"),
        pytest.param([tar_header(b"fifo", 0, b"6")], "is a FIFO (refused)", id="fifo"),
        pytest.param(
            [member("/".join(["d"] * (MAX_DEPTH + 1)), b"")],
            f"nested deeper than {MAX_DEPTH} folders",
            id="depth",
        ),
        pytest.param(
            [member("10-access.cedar", b"// again\n")],
            "10-access.cedar: in the archive twice",
            id="duplicate",
        ),
        pytest.param(
            [tar_header(b"x", 0, b"0")[:148] + b"0000000\0" + tar_header(b"x", 0, b"0")[156:]],
            "bad header checksum",
            id="checksum",
        ),
        pytest.param(
            [tar_header(b"cut.cedar", 4096, b"0") + b"permit"],
            "archive ends inside cut.cedar",
            id="truncated",
        ),
    ],
)
def test_archive_limits_are_refused_with_one_line(
    tmp_path: Path, extra: list[bytes], message: str
) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(gzipped(*good_members(), *extra))
    with pytest.raises(BundleError) as refused:
        PolicyBundle.load(archive)
    (problem,) = refused.value.problems
    assert "\n" not in problem
    assert message in problem


@pytest.mark.parametrize(
    "pack",
    [
        pytest.param(lambda tar: tar, id="plain-tar"),
        pytest.param(lambda tar: gzip.compress(tar) + bytes(4096), id="zero-padded-gzip"),
        pytest.param(
            lambda tar: gzip.compress(tar[:1000]) + gzip.compress(tar[1000:]),
            id="two-gzip-members",
        ),
    ],
)
def test_archive_forms_that_gzip_and_tar_allow_are_read(
    tmp_path: Path, pack: Callable[[bytes], bytes]
) -> None:
    files = bundle_files()
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(pack(b"".join(good_members()) + bytes(1024)))
    assert PolicyBundle.load(archive).version == PolicyBundle.from_files(files).version


def test_archive_with_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    folders = [tar_header(f"d{n}/".encode(), 0, b"5") for n in range(MAX_MEMBERS)]
    archive.write_bytes(gzipped(*good_members(), *folders))
    with pytest.raises(BundleError, match=f"more than {MAX_MEMBERS} members"):
        PolicyBundle.load(archive)


def test_archive_that_expands_too_much_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(gzipped(member("entities.json", b" " * (8 << 20))))
    with pytest.raises(BundleError, match=f"expands more than {MAX_RATIO} times"):
        PolicyBundle.load(archive)


def test_directory_limits_are_refused(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "bundle", bundle_files())
    with (root / "big.json").open("wb") as out:
        out.truncate(MAX_MEMBER_BYTES + 1)
    with pytest.raises(BundleError, match=f"big.json: larger than {MAX_MEMBER_BYTES} bytes"):
        PolicyBundle.load(root)


def test_pax_and_gnu_archives_read_like_the_directory(tmp_path: Path) -> None:
    files = bundle_files({"reference/notes.md": "# why\n"})
    directory = PolicyBundle.load(write_bundle(tmp_path / "bundle", files))
    for form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        archive = tmp_path / f"bundle-{form}.tar.gz"
        with tarfile.open(archive, "w:gz", format=form) as out:
            for name, data in files.items():
                info = tarfile.TarInfo("a-folder-with-a-long-name-" * 6 + "/" + name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
        assert PolicyBundle.load(archive).version == directory.version


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    return {
        "gnu-long-name": long_name_bomb(root / "long-name.tar.gz", 256 << 20),
        "million-members": many_members_bomb(root / "members.tar.gz", 1_000_000),
    }


@pytest.mark.parametrize("bomb", ["gnu-long-name", "million-members"])
def test_archive_bomb_is_refused_quickly_in_bounded_memory(
    bombs: dict[str, Path], bomb: str
) -> None:
    """The attack took 1.1 GiB (a 1 MiB long-name archive) or 101 s of CPU (a million
    empty members) before the signature was checked."""
    started = time.process_time()
    with pytest.raises(BundleError):
        PolicyBundle.load(bombs[bomb])
    assert time.process_time() - started < 1.0
    tracemalloc.start()
    try:
        with pytest.raises(BundleError):
            PolicyBundle.load(bombs[bomb])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
