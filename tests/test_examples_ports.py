"""The examples run beside `make run`: their servers use their own data directory and
ports, never the defaults (gRPC 50051, metrics 9464, webhook 8443), and what talks to them
is pointed at those ports."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from engine._runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {
    int(Settings.model_fields[name].default.rpartition(":")[2])
    for name in ("grpc", "metrics", "admission")
}


def test_the_envoy_example_runs_beside_make_run() -> None:
    config = tomllib.loads((ROOT / "examples" / "envoy" / "docket.toml").read_text())
    assert config["data_dir"] != str(Settings.model_fields["data_dir"].default)
    grpc_port = int(config["grpc"].rpartition(":")[2])
    metrics_port = int(config["metrics"].rpartition(":")[2])
    assert config.get("admission") == "off" or int(config["admission"][-4:]) not in DEFAULTS
    assert not {grpc_port, metrics_port} & DEFAULTS
    envoy = yaml.safe_load((ROOT / "examples" / "envoy" / "envoy.yaml").read_text())
    clusters = {
        cluster["name"]: cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"
        ]["socket_address"]["port_value"]
        for cluster in envoy["static_resources"]["clusters"]
    }
    assert grpc_port in clusters.values()
    assert metrics_port in clusters.values()
    readme = (ROOT / "examples" / "envoy" / "README.md").read_text()
    assert f"--server 127.0.0.1:{grpc_port}" in readme
    assert "export DOCKET_CONFIG=examples/envoy/docket.toml" in readme


def test_the_webhook_walk_through_runs_beside_make_run() -> None:
    readme = (ROOT / "examples" / "kubernetes" / "README.md").read_text()
    section = readme[readme.index("## Try the webhook without a cluster") :]
    ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", section)}
    assert ports
    assert not ports & DEFAULTS, ports
    assert "export DOCKET_DATA_DIR=" in section
