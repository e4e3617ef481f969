"""``engine/_runtime/settings.py`` is where Docket's configuration is read: defaults,
``docket.toml``, ``DOCKET_*``, then a command's flags on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine._errors import ConfigError
from engine._runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = ROOT / "engine" / "_runtime" / "settings.py"


def environment_reads(path: Path) -> list[str]:
    """Where ``path`` reads a ``DOCKET_*`` variable itself: ``os.environ.get(…)``,
    ``os.getenv(…)``, ``os.environ[…]`` or click's ``envvar=…``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[ast.expr] = []
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("get", "getenv", "pop"):
                names += node.args[:1]
            names += [k.value for k in node.keywords if k.arg == "envvar"]
        elif isinstance(node, ast.Subscript):
            names.append(node.slice)
        for name in names:
            if isinstance(name, ast.Constant) and str(name.value).startswith("DOCKET_"):
                found.append(f"{path}:{name.lineno}: {name.value!s}")
    return found


def test_only_the_settings_read_docket_variables() -> None:
    """Every command takes its settings from the one object ``docket`` builds at its
    root; no CLI reads ``DOCKET_DATA_DIR`` (or any other) on its own."""
    reads = [
        read
        for package in ("engine", "attestation", "audit", "sdk")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != SETTINGS
        for read in environment_reads(path)
    ]
    assert not reads, reads


@pytest.mark.parametrize(
    "code",
    [
        'os.environ.get("DOCKET_DATA_DIR")',
        'os.getenv("DOCKET_DB_URL", "")',
        'os.environ["DOCKET_AUDIT_KEYS"]',
        'click.option("--data-dir", envvar="DOCKET_DATA_DIR")',
    ],
)
def test_a_read_is_found(tmp_path: Path, code: str) -> None:
    module = tmp_path / "reads.py"
    module.write_text(f"import os\n{code}\n")
    assert len(environment_reads(module)) == 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param({}, Path("settled"), id="no-flag"),
        pytest.param({"data_dir": None}, Path("settled"), id="flag-not-given"),
        pytest.param({"data_dir": Path("flagged")}, Path("flagged"), id="flag-given"),
    ],
)
def test_flags_go_on_top(flags: dict[str, object], expected: Path) -> None:
    settings = Settings.load(data_dir=Path("settled")).with_flags(**flags)
    assert settings.data_dir == expected
    assert settings.database_url == f"sqlite:///{expected / 'docket.db'}"


def test_flags_do_not_read_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load()
    monkeypatch.setenv("DOCKET_WORKERS", "7")
    assert settings.with_flags(data_dir=Path("x")).workers == settings.workers


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"workers": 0}, "configuration: workers: Input should be greater",
                     id="out-of-range"),
        pytest.param({"wrkers": 2}, "wrkers: unknown setting (did you mean workers?)",
                     id="unknown"),
        pytest.param({"bundle_url": "file:///srv/bundle.tar.gz"},
                     "bundle_url: Value error, 'file:///srv/bundle.tar.gz': expected http://",
                     id="bundle-url-scheme"),
        pytest.param({"max_bundle_staleness": 0}, "max_bundle_staleness: Input should be greater",
                     id="staleness-zero"),
        pytest.param({"collector_url": "127.0.0.1:7390"},
                     "collector_url: Value error, '127.0.0.1:7390' is not an http(s) URL",
                     id="collector-without-scheme"),
        pytest.param({"witness_quorum": 0}, "witness_quorum: Input should be greater",
                     id="no-quorum"),
    ],
)  # fmt: skip
def test_a_bad_flag_is_one_line(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^configuration: ") as raised:
        Settings.load().with_flags(**flags)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        pytest.param({"DOCKET_OTEL_ENDPOINT": "127.0.0.1:4317"},
                     "'127.0.0.1:4317' is not an http:// or https:// URL",
                     id="endpoint-without-scheme"),
        pytest.param({"DOCKET_OTEL_PROTOCOL": "thrift"}, "otel_protocol: Input should be",
                     id="protocol"),
        pytest.param({"DOCKET_OTEL_SAMPLING_RATIO": "1.5"}, "otel_sampling_ratio: Input should be",
                     id="ratio-over-one"),
    ],
)  # fmt: skip
def test_a_bad_tracing_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^configuration: ") as raised:
        Settings.load()
    assert message in str(raised.value)


def test_tracing_is_off_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert Settings.load().otel_endpoint is None
    monkeypatch.setenv("DOCKET_OTEL_ENDPOINT", "")
    assert Settings.load().otel_endpoint is None
    monkeypatch.setenv("DOCKET_OTEL_ENDPOINT", "http://127.0.0.1:4317")
    assert Settings.load().otel_endpoint == "http://127.0.0.1:4317"
