"""Which TPM driver the agent takes (sdk/agent/_backend.py), and what it says when it has
none: no TPM needed. The drivers against a real swtpm are tests/e2e/test_agent_tpm.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sdk import ConfigurationError
from sdk.agent import EsapiTpm, Tpm, TpmError, attest
from sdk.agent._backend import choose_backend, open_tpm


@pytest.fixture
def no_tpm2_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without tpm2-tools


@pytest.fixture
def no_tpm2_pytss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)  # `import tpm2_pytss` fails


@pytest.mark.parametrize("backend", ["tpm2-tools", "tpm2-pytss"])
def test_a_named_backend_is_taken_as_named(backend: str) -> None:
    assert choose_backend(backend) == backend


def test_auto_takes_tpm2_tools_when_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "tpm2_createek"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert choose_backend("auto") == "tpm2-tools"
    assert isinstance(open_tpm("device:/dev/null"), Tpm)


@pytest.mark.usefixtures("no_tpm2_tools", "no_tpm2_pytss")
def test_auto_with_neither_says_what_to_install() -> None:
    with pytest.raises(TpmError) as caught:
        choose_backend("auto")
    message = str(caught.value)
    assert message.startswith("no TPM stack: tpm2_createek is not on PATH and tpm2-pytss")
    assert message.endswith("install tpm2-tools, or pip install 'docket[tpm]'")


@pytest.mark.usefixtures("no_tpm2_pytss")
def test_tpm2_pytss_driver_without_the_extra_says_how_to_install_it() -> None:
    with pytest.raises(
        TpmError, match=r"tpm2-pytss does not import .*: pip install 'docket\[tpm\]'"
    ):
        EsapiTpm("swtpm:host=127.0.0.1,port=1")


def test_empty_tcti_is_refused_by_the_tpm2_pytss_driver() -> None:
    with pytest.raises(ConfigurationError, match="TCTI is empty"):
        EsapiTpm(" ")


def test_unknown_backend_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown TPM backend 'tss'"):
        attest("127.0.0.1:1", "device:/dev/null", tmp_path / "out", backend="tss")  # type: ignore[arg-type]
