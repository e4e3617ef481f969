"""The `docket` command as a user runs it: exit codes, output, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
POLICIES = ROOT / "policies"
QUICKSTART = ROOT / "examples" / "quickstart"
DOCKET = [sys.executable, "-c", "from engine.cli import run; run()"]


def docket(
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    environment: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DOCKET, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        check=False,
        timeout=120,
        env={**os.environ, **(environment or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("docket: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_validate_default_bundle() -> None:
    result = docket("policy", "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok — 20 policies" in result.stdout or "ok —" in result.stdout


def test_validate_broken_bundle_lists_file_line_problems(tmp_path: Path) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(POLICIES, broken)
    (broken / "zz-broken.cedar").write_text(
        '// fine\n@id("fine")\npermit(principal, action, resource);\n\n'
        '@id("bad")\npermit(principal ==, action, resource);\n'
    )
    result = docket("policy", "validate", str(broken))
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == ["zz-broken.cedar:6: unexpected token `,`"]
    assert_one_line_error(result, 1, "1 problem")


def test_policy_test_passes_and_writes_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = docket("policy", "test", "--junit", str(junit))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 failed" in result.stdout
    assert "every policy determines at least one case" in result.stdout
    assert 'failures="0"' in junit.read_text()


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(POLICIES, bundle)
    case_file = bundle / "tests" / "access.yaml"
    text = case_file.read_text()
    case_file.write_text(text.replace("decision: allow", "decision: deny", 1))
    result = docket("policy", "test", str(bundle))
    assert result.returncode == 1
    assert "1 failed" in result.stdout
    assert "decision: expected deny, got allow" in result.stdout
    # By default the failures and a summary, not every case.
    assert "pass" not in result.stdout.replace("passed", "")
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    verbose = docket("policy", "test", "--verbose", str(bundle))
    assert verbose.returncode == 1
    assert verbose.stdout.count("pass") > result.stdout.count("pass")


@pytest.mark.parametrize(
    ("request_file", "code", "decision"),
    [
        pytest.param("allow.json", 0, "allow", id="allow-exits-0"),
        pytest.param("deny.json", 1, "deny", id="deny-exits-1"),
    ],
)
def test_decide_json(request_file: str, code: int, decision: str) -> None:
    result = docket("decide", "--json", str(QUICKSTART / request_file))
    assert result.returncode == code, result.stderr
    answer = json.loads(result.stdout)
    assert answer["decision"] == decision
    assert answer["reasons"]
    assert answer["errors"] == []


OVERFLOWING_BUNDLE = {
    "schema.cedarschema": "entity User; entity Data;\n"
    "action read appliesTo { principal: User, resource: Data, context: { n: Long } };\n",
    "policies.cedar": '@id("read-anything")\npermit (principal, action, resource);\n'
    '@id("forbid-big")\nforbid (principal, action, resource)\n'
    "when { context.n + 9223372036854775807 > 0 };\n",
}
OVERFLOWING_REQUEST = json.dumps(
    {
        "principal": {"type": "User", "id": "a"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Data", "id": "d"},
        "context": {"n": 1},
    }
)


@pytest.mark.parametrize(
    ("settings", "code", "decision", "reasons", "semantics"),
    [
        pytest.param(None, 1, "deny", ["forbid-big"], "deny", id="default-deny"),
        pytest.param('forbid_errors = "deny"', 1, "deny", ["forbid-big"], "deny", id="deny"),
        pytest.param('forbid_errors = "cedar"', 0, "allow", ["read-anything"], "cedar", id="cedar"),
    ],
)
def test_decide_says_what_an_erroring_forbid_did(
    tmp_path: Path,
    settings: str | None,
    code: int,
    decision: str,
    reasons: list[str],
    semantics: str,
) -> None:
    files = dict(OVERFLOWING_BUNDLE)
    if settings is not None:
        files["bundle.toml"] = f"[evaluation]\n{settings}\n"
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    args = ["decide", "--bundle", str(tmp_path)]
    answer = docket(*args, "--json", stdin=OVERFLOWING_REQUEST)
    assert answer.returncode == code, answer.stderr
    found = json.loads(answer.stdout)
    assert (found["decision"], found["reasons"]) == (decision, reasons)
    assert found["forbid_errors"] == semantics
    assert [e["policy"] for e in found["errors"]] == ["forbid-big"]
    assert "integer overflow" in found["errors"][0]["message"]
    text = docket(*args, stdin=OVERFLOWING_REQUEST)
    assert text.returncode == code, text.stderr
    assert f"{decision.upper()}  {reasons[0]}  (forbid errors: {semantics})" in text.stdout
    assert "error in forbid-big: integer overflow" in text.stdout


def test_decide_json_lines_in_order() -> None:
    allow = json.dumps(json.loads((QUICKSTART / "allow.json").read_text()))
    deny = json.dumps(json.loads((QUICKSTART / "deny.json").read_text()))
    result = docket("decide", "--json", stdin=f"{deny}\n{allow}\n{deny}\n")
    assert result.returncode == 1
    decisions = [json.loads(line)["decision"] for line in result.stdout.splitlines()]
    assert decisions == ["deny", "allow", "deny"]


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        pytest.param(["decide"], "{bad", "<stdin>:1: invalid JSON", id="malformed-json"),
        pytest.param(
            ["decide"],
            '{"principal": {"type": "Robot", "id": "r"}, "action": {"type": "Action", "id": '
            '"read"}, "resource": {"type": "Data", "id": "x"}}',
            "Docket::Robot` is not declared",
            id="unknown-entity-type",
        ),
        pytest.param(
            ["decide"],
            '{"principal": {"type": "User", "id": "a"}, "action": {"type": "Action"}, '
            '"resource": {"type": "Data", "id": "x"}}',
            "action.id: Field required",
            id="missing-field",
        ),
        pytest.param(
            ["decide"],
            '{"principal": {"type": "User", "id": "u"}, "action": {"type": "Action", "id": '
            '"read"}, "resource": {"type": "Data", "id": "x"}, "entities": ['
            + ",".join(
                f'{{"uid": {{"type": "Group", "id": "g{i}"}}, "parents": '
                f'[{{"type": "Group", "id": "g{i + 1}"}}]}}'
                for i in range(40)
            )
            + "]}",
            "<stdin>:1: entities: chain depth 41 exceeds the limit of 32",
            id="over-a-limit",
        ),
        pytest.param(["decide", "missing.json"], None, "No such file", id="missing-file"),
        pytest.param(["decide", "--bundle", "nowhere"], "{}", "nowhere", id="missing-bundle"),
        pytest.param(
            ["place"],
            '{"workload": {"id": "w"}, "sites": ["atlantis"]}',
            "unknown site 'atlantis'",
            id="unknown-site",
        ),
        pytest.param(["frobnicate"], None, "No such command", id="unknown-command"),
        pytest.param(["fleet", "status"], None, "no collector", id="fleet-without-collector"),
        pytest.param(
            ["fleet", "status", "--collector", "http://127.0.0.1:9"],
            None,
            "collector http://127.0.0.1:9: no answer",
            id="fleet-collector-unreachable",
        ),
        pytest.param(
            ["collector", "serve", "--database-url", "sqlite://", "--key", "no-such.key"],
            None,
            "no-such.key",
            id="collector-without-its-key",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], stdin: str | None, needle: str) -> None:
    assert_one_line_error(docket(*args, stdin=stdin or ""), 2, needle)


def test_place_ranks_allowed_sites() -> None:
    result = docket("place", "--json", str(QUICKSTART / "workload.json"))
    assert result.returncode == 0, result.stderr
    placement = json.loads(result.stdout)
    allowed = placement["allowed"]
    assert allowed
    assert all(s["jurisdiction"] in ("eu", "uk") for s in allowed)
    costs = [s["cost_per_hour"] for s in allowed if s["within_latency_budget"]]
    assert costs == sorted(costs)
    assert all(d["reasons"] for d in placement["denied"])


def test_keygen_sign_and_verified_load(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(POLICIES, bundle)
    assert docket("policy", "keygen", "--out", str(tmp_path / "k")).returncode == 0
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert_one_line_error(docket("policy", "keygen", "--out", str(tmp_path / "k")), 2, "exists")
    pub = str(tmp_path / "k.pub")
    unsigned = docket("policy", "validate", str(bundle), "--bundle-key", pub)
    assert unsigned.returncode == 1
    assert "bundle.sig: missing" in unsigned.stdout
    assert_one_line_error(
        docket("policy", "sign", str(bundle), "--key", str(tmp_path / "k.key")),
        2,
        "a signed bundle needs [bundle] name and revision",
    )
    (bundle / "bundle.toml").write_text('[bundle]\nname = "acme"\nrevision = 3\n')
    signed = docket("policy", "sign", str(bundle), "--key", str(tmp_path / "k.key"))
    assert signed.returncode == 0, signed.stderr
    assert "signed acme revision 3 (sha256:" in signed.stdout
    ok = docket("policy", "validate", str(bundle), "--bundle-key", pub)
    assert ok.returncode == 0, ok.stdout
    assert "signed by" in ok.stdout
    (bundle / "access.cedar").write_text((bundle / "access.cedar").read_text() + "\n// edit\n")
    tampered = docket("policy", "validate", str(bundle), "--bundle-key", pub)
    assert tampered.returncode == 1
    assert "does not match" in tampered.stdout


def test_settings_from_environment_and_toml(tmp_path: Path) -> None:
    (tmp_path / "docket.toml").write_text(f'bundle = "{POLICIES}"\n')
    result = docket("policy", "validate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (tmp_path / "docket.toml").write_text('bundel = "typo"\n')
    assert_one_line_error(docket("policy", "validate", cwd=tmp_path), 2, "bundel")


HEAVY = ("cedarpy", "sqlalchemy", "grpc", "cryptography", "kubernetes", "uvicorn")
"""What no command line that only asks for help or the version may load."""
SETTINGS = ("pydantic", "pydantic_settings", "structlog", "rich")
"""What reading the settings and setting up logging load: help needs neither."""


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["audit", "--help"],
        ["audit", "verify", "--help"],
        ["ca", "--help"],
        ["policy", "--help"],
        ["serve", "--help"],
    ],
    ids=" ".join,
)
def test_version_and_help_load_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    """`docket --version` and the auditor's help import no Cedar, database, gRPC or
    crypto library, and do not read the settings: each command's module is imported
    when that command runs (engine.cli.LazyGroup), and what a command needs, when it
    runs. (Modules, not milliseconds: benchmarks/bench_startup.py times them.)"""
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "try:\n"
        f"    main.main({argv!r}, prog_name='docket')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(','.join(m for m in {HEAVY + SETTINGS!r} if m in sys.modules))\n"
    )
    (tmp_path / "docket.toml").write_text("not toml")  # help reads no settings
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.stdout.splitlines()[-1] == "", done.stdout
    assert done.stdout.startswith("docket, version " if argv == ["--version"] else "Usage: docket")


BAD_CONFIGURATIONS = [
    pytest.param('log_level = "info\n', {}, "docket.toml:1:18: invalid TOML: Illegal character",
                 id="malformed-toml"),
    pytest.param('log_levl = "info"\n', {},
                 "log_levl: unknown setting (did you mean log_level?)", id="unknown-key"),
    pytest.param(None, {"DOCKET_CONFIG": "missing.toml"},
                 "DOCKET_CONFIG=missing.toml: no such file", id="named-file-missing"),
    pytest.param("workers = 0\n", {}, "configuration: workers: Input should be greater",
                 id="out-of-range"),
]  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [["decide", "--bundle", str(POLICIES)], ["serve"], ["audit", "verify"], ["ca", "bundle"]],
    ids=lambda command: " ".join(command[:2]).split(" /")[0],
)
@pytest.mark.parametrize(("config", "environment", "needle"), BAD_CONFIGURATIONS)
def test_a_bad_configuration_is_one_line_exit_2(
    tmp_path: Path, command: list[str], config: str | None, environment: dict[str, str], needle: str
) -> None:
    """Every command takes the one settings object, so a bad configuration is refused
    the same way by each (before it reads or writes anything)."""
    if config is not None:
        (tmp_path / "docket.toml").write_text(config)
    result = docket(*command, stdin="", cwd=tmp_path, environment=environment)
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "docket-data").exists()


@pytest.mark.parametrize(
    "command", [["audit", "verify", "--db", "--help"], ["ca", "init", "--trust-domain", "-h"]]
)
def test_a_help_word_given_as_a_value_still_reads_the_settings(
    tmp_path: Path, command: list[str]
) -> None:
    """Help reads no settings, but a help word that is an option's value is no help:
    the command runs, on the settings (here refused)."""
    (tmp_path / "docket.toml").write_text('log_levl = "info"\n')
    result = docket(*command, cwd=tmp_path)
    assert_one_line_error(result, 2, "log_levl: unknown setting")


@pytest.mark.parametrize(
    ("command", "setting", "flag", "value", "says", "code"),
    [
        (["audit", "verify"], "data_dir", "--data-dir", "{}-data",
         "no audit database at {}-data/docket.db", 2),
        (["audit", "key"], "data_dir", "--data-dir", "{}-data",
         "no audit signing key in {}-data/audit-keys", 2),
        (["ca", "bundle"], "data_dir", "--data-dir", "{}-data", "no CA at {}-data/ca", 2),
        (["audit", "verify"], "db_url", "--db", "sqlite:///{}.db", "no audit database at {}.db", 2),
        (["ca", "init"], "trust_domain", "--trust-domain", "{}.example",
         "created a CA for spiffe://{}.example in ", 0),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)  # fmt: skip
@pytest.mark.parametrize("source", ["toml", "env", "flag"])
def test_audit_and_ca_take_settings_from_toml_then_environment_then_flags(
    tmp_path: Path,
    command: list[str],
    setting: str,
    flag: str,
    value: str,
    says: str,
    code: int,
    source: str,
) -> None:
    """The order every command takes its settings in: docket.toml, then DOCKET_*, then
    the command's own flag (each source below names a different value)."""
    (tmp_path / "docket.toml").write_text(f'{setting} = "{value.format("toml")}"\n')
    environment = {} if source == "toml" else {f"DOCKET_{setting.upper()}": value.format("env")}
    flags = [flag, value.format("flag")] if source == "flag" else []
    result = docket(*command, *flags, cwd=tmp_path, environment=environment)
    assert result.returncode == code, result.stderr
    assert says.format(source) in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["decide", "place"])
def test_an_array_says_one_object_per_line(command: str) -> None:
    result = docket(command, stdin='[{"principal": {"type": "User", "id": "alice"}}]')
    assert_one_line_error(result, 2, "<stdin>:1: expected a JSON object")
    assert "JSON Lines (one object per line)" in result.stderr
    assert "(got list)" in result.stderr


def test_an_array_in_a_file_says_one_object_per_line(tmp_path: Path) -> None:
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"principal": {"type": "User", "id": "alice"}}], indent=2))
    result = docket("decide", str(requests))
    assert_one_line_error(result, 2, f"{requests}:1: expected a JSON object")
    assert "JSON Lines (one object per line)" in result.stderr


READ = {
    "principal": {"type": "User", "id": "alice"},
    "action": {"type": "Action", "id": "read"},
    "resource": {"type": "Data", "id": "payroll"},
}


def test_decide_names_the_wrong_context_field() -> None:
    result = docket("decide", stdin=json.dumps({**READ, "context": {"mfa": "yes"}}))
    assert_one_line_error(result, 2, "<stdin>:1: context.mfa: expected a boolean (got a string)")


def test_decide_names_the_line_and_the_missing_field(tmp_path: Path) -> None:
    """The exit code is that of any other input error (2), on the line at fault."""
    requests = tmp_path / "requests.jsonl"
    good = {**READ, "context": {"mfa": True}}
    bad = {**READ, "context": {"device": {"attested": True}}}
    requests.write_text(f"{json.dumps(good)}\n{json.dumps(bad)}\n")
    result = docket("decide", str(requests))
    assert_one_line_error(result, 2, f"{requests}:2: context.device.secure_boot: required")


def test_keys_are_never_written_where_git_add_takes_them(tmp_path: Path) -> None:
    """Run as the docs say, from a checkout: the key lands under the data directory
    (which .gitignore covers), not in the working directory."""
    result = docket("policy", "keygen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "docket-data" / "keys" / "docket-bundle.key"
    assert key.is_file()
    assert key.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.key"))
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "docket-data/" in ignored
    assert "*.key" in ignored


def _commands() -> list[tuple[str, Any]]:
    import click

    from engine.cli import main

    found: list[tuple[str, Any]] = []

    def walk(command: click.Command, path: str) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            context = click.Context(command, info_name=path)
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None, f"{path} {name}"
                walk(sub, f"{path} {name}")

    walk(main, "docket")
    return found


def test_every_command_and_option_has_help() -> None:
    """`--help` of every command says what each option does."""
    import click

    missing = []
    for path, command in _commands():
        if not command.help:
            missing.append(f"{path}: no description")
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path} {'/'.join(param.opts)}")
    assert not missing, missing


def test_help_reads_at_80_columns() -> None:
    """Every command's help fits a terminal 80 columns wide, and the usage line names
    the command as it is typed (no stray prefix)."""
    for path, _ in _commands():
        words = path.split()[1:]
        done = subprocess.run(
            [*DOCKET, *words, "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "COLUMNS": "80"},
        )
        assert done.returncode == 0, (path, done.stderr)
        assert done.stdout.startswith(f"Usage: {path} ") or done.stdout.startswith(
            f"Usage: docket {' '.join(words)}"
        ), (path, done.stdout.splitlines()[0])
        wide = [line for line in done.stdout.splitlines() if len(line) > 80]
        assert not wide, (path, wide)


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "validate", "{missing}"],
        ["policy", "test", "{missing}"],
        ["decide", "--bundle", "{missing}"],
        ["place", "--bundle", "{missing}"],
    ],
)
def test_a_missing_bundle_is_the_same_input_error_everywhere(
    tmp_path: Path, args: list[str]
) -> None:
    missing = str(tmp_path / "nothing")
    result = docket(*(arg.format(missing=missing) for arg in args), stdin="{}")
    assert_one_line_error(
        result, 2, f"bundle {missing} refused: {missing}: no such bundle directory or .tar.gz file"
    )


# -- docket bundle push / pull (issue 16) -----------------------------------------------


def test_bundle_push_refuses_an_unsigned_bundle(tmp_path: Path) -> None:
    result = docket("bundle", "push", str(POLICIES), "--to", "http://127.0.0.1:9/b.tar.gz")
    assert_one_line_error(result, 2, "is not signed with a name and revision")


def test_bundle_push_to_an_unreachable_url_is_one_line(tmp_path: Path) -> None:
    from bundle_servers import free_port, signed_files
    from sample_bundle import write_bundle

    bundle = write_bundle(tmp_path / "b", signed_files(1))
    url = f"http://127.0.0.1:{free_port()}/b.tar.gz"
    assert_one_line_error(docket("bundle", "push", str(bundle), "--to", url), 2, "unreachable")


def test_bundle_push_then_pull_checks_the_signature(tmp_path: Path) -> None:
    from bundle_servers import OTHER_SIGNER, SIGNER, StaticServer, signed_files
    from sample_bundle import write_bundle

    server = StaticServer()
    key, other = tmp_path / "bundle.pub", tmp_path / "other.pub"
    key.write_text(f"{SIGNER.verifier()}\n")
    other.write_text(f"{OTHER_SIGNER.verifier()}\n")
    try:
        bundle = write_bundle(tmp_path / "b", signed_files(4))
        pushed = docket(
            "bundle", "push", str(bundle), "--to", server.url(), "--bundle-key", str(key)
        )
        assert pushed.returncode == 0, pushed.stderr
        assert "pushed acme revision 4 (sha256:" in pushed.stdout
        out = tmp_path / "pulled.tar.gz"
        pulled = docket(
            "bundle", "pull", "--from", server.url(), "--bundle-key", str(key), "-o", str(out)
        )
        assert pulled.returncode == 0, pulled.stderr
        assert "bundle acme revision 4" in pulled.stdout
        assert f"signed by {SIGNER.verifier().name}" in pulled.stdout
        assert out.read_bytes() == server.files["/bundle.tar.gz"]
        forged = docket("bundle", "pull", "--from", server.url(), "--bundle-key", str(other))
        assert forged.returncode == 1
        assert "not signed by the configured key" in forged.stderr
    finally:
        server.stop()
