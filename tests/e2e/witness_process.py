"""``docket witness serve`` as a subprocess, a small log to feed it, and the check of a
cosignature written from the specification's text alone.

The witness starts on a free loopback port, is ready when its log says where it
listens, and is stopped by the test that started it, by PID.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from e2e.docket_process import DOCKET, ROOT, die_with_parent, stop, wait_for

from audit import Checkpoint, SignerKey
from audit.merkle import consistency_proof, leaf_hash, node_hash, root_of
from audit.note import sign_checkpoint


def by_hand(line: str, body: str, public: bytes, name: str) -> int:
    """c2sp.org/tlog-cosignature's check of one cosignature/v1 line, built byte by byte
    from the text: the key id is SHA-256(name || "\\n" || 0x04 || public)[:4]; after it
    come a big-endian u64 timestamp and an Ed25519 signature over
    "cosignature/v1\\ntime <t>\\n" || the checkpoint body. Returns the timestamp; fails
    (assert, or InvalidSignature) on any mismatch."""
    assert line.startswith("\N{EM DASH} "), line
    assert line.endswith("\n"), line
    line_name, encoded = line[2:-1].split(" ")
    assert line_name == name
    raw = base64.b64decode(encoded, validate=True)
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    timestamp = int.from_bytes(raw[4:12], "big")
    message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + body.encode()
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)
    return timestamp


@dataclass
class TinyLog:
    """A log held in memory: leaves ``b"<origin> <i>"``, checkpoints signed by ``key``
    (or by another key, to forge), consistency proofs between any two sizes."""

    origin: str
    key: SignerKey = field(init=False)
    salt: str = ""
    """Changes every leaf: a log with another salt is a fork of this one."""

    def __post_init__(self) -> None:
        self.key = SignerKey.generate(self.origin)

    def leaves(self, size: int) -> list[bytes]:
        return [leaf_hash(f"{self.origin} {self.salt}{i}".encode()) for i in range(size)]

    def checkpoint(self, size: int) -> Checkpoint:
        return Checkpoint(self.origin, size, root_of(self.leaves(size)))

    def note(self, size: int, signer: SignerKey | None = None) -> str:
        return sign_checkpoint(self.checkpoint(size), [signer or self.key])

    def proof(self, old: int, new: int) -> list[bytes]:
        if old in (0, new):
            return []
        return consistency_proof(old, new, _Nodes(self.leaves(new)))

    def body(self, old: int, size: int, proof: list[bytes] | None = None) -> bytes:
        """An add-checkpoint body from ``old`` to ``size`` (the right proof by default)."""
        proof = self.proof(old, size) if proof is None else proof
        lines = "".join(base64.b64encode(node).decode() + "\n" for node in proof)
        return f"old {old}\n{lines}\n{self.note(size)}".encode()


class _Nodes:
    """A NodeReader over the perfect subtrees of a list of leaves."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.table: dict[tuple[int, int], bytes] = {}
        level, row = 0, leaves
        while row:
            self.table.update(((level, i), value) for i, value in enumerate(row))
            row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
            level += 1

    def __call__(self, ids: object) -> list[bytes]:
        assert isinstance(ids, list | tuple)
        return [self.table[node] for node in ids]


@dataclass
class WitnessProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def post(self, body: bytes, client: httpx.Client | None = None) -> httpx.Response:
        poster = client or httpx
        return poster.post(f"{self.url}/add-checkpoint", content=body, timeout=10)

    def stop(self) -> int:
        return stop(self.process, "docket witness serve")


def start_witness(root: Path, key: Path, logs: list[TinyLog], *flags: str) -> WitnessProcess:
    """``docket witness serve`` with ``--data-dir root/data``, the witness key file
    ``key`` and ``logs`` known, on a free loopback port; returns once it listens."""
    known = [f"--log={tiny.origin}={tiny.key.verifier()}" for tiny in logs]
    command = [DOCKET, "witness", "serve", "--data-dir", str(root / "data"), "--key", str(key)]
    return _start(
        root, [*command, "--listen", "127.0.0.1:0", *known, *flags], "witness listening on"
    )


def _start(root: Path, command: list[str], ready: str) -> WitnessProcess:
    """Run ``command`` in ``root``, logging to ``root/witness.log``; ready when the log
    says ``ready`` and the URL it listens on (a restart appends to the same log)."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "witness.log"
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            die_with_parent(command), stdout=out, stderr=subprocess.STDOUT, cwd=root
        )
    found: list[str] = []

    def listening() -> bool:
        text = log.read_bytes()[start:].decode()
        at = re.search(ready + r" (http://127\.0\.0\.1:\d+)", text)
        if at:
            found.append(at[1])
        return bool(at)

    try:
        wait_for(command[0], process, log, listening)
    except BaseException:
        stop(process, command[0])
        raise
    return WitnessProcess(process, found[0], log)


# -- aics-witness (PyPI): a C2SP witness and client we did not write ----------------------

INTEROP_VENV = Path(os.environ.get("DOCKET_WITNESS_INTEROP_VENV", ROOT / ".venv" / "interop-aics"))
"""A virtualenv of its own for aics-witness 0.1.0 (PyPI), apart from Docket's: it declares
Python >= 3.12 but runs on 3.11, so it is installed with ``--ignore-requires-python``."""
AICS_WITNESS = "aics-witness==0.1.0"


def aics_witness() -> Path:
    """The ``aics-witness`` command, installed into :data:`INTEROP_VENV` with pip on
    first use (under a lock: pytest-xdist workers share it). When it cannot be
    installed (no network), the test fails in CI and skips elsewhere."""
    command = INTEROP_VENV / "bin" / "aics-witness"
    INTEROP_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(INTEROP_VENV.parent / f".{INTEROP_VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if command.exists():
            return command
        python = str(INTEROP_VENV / "bin" / "python")
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(INTEROP_VENV)], check=True)
            subprocess.run(
                [
                    python,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--ignore-requires-python",
                    AICS_WITNESS,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            why = getattr(exc, "stderr", None) or str(exc)
            message = f"cannot install {AICS_WITNESS} into {INTEROP_VENV}: {why.strip()[-300:]}"
            if os.environ.get("CI", "").lower() not in ("", "0", "false"):
                pytest.fail(f"{message}; CI must not skip")
            pytest.skip(message)
    return command


def start_aics_witness(root: Path, name: str, logs: dict[str, str]) -> tuple[WitnessProcess, str]:
    """aics-witness made (``init``), told the ``logs`` (origin → log vkey) and serving
    on a free loopback port; returns it and its cosignature/v1 vkey."""
    command = aics_witness()
    config = ["--config", str(root / "witness.json")]
    root.mkdir(parents=True, exist_ok=True)
    made = [str(command), "init", *config, "--name", name, "--listen", "127.0.0.1:0"]
    vkey = subprocess.run(made, capture_output=True, text=True, check=True).stdout.strip()
    for origin, log_vkey in logs.items():
        added = [str(command), "add-log", *config, "--origin", origin, "--vkey", log_vkey]
        subprocess.run(added, capture_output=True, check=True)
    return _start(root, [str(command), "serve", *config], "listening on"), vkey


_FEED = """
import base64, json, sys
from aics_witness.feeder import WitnessClient, WitnessRejected
url, vkey = sys.argv[1:3]
client = WitnessClient(url, vkey, max_attempts=1)
for step in json.load(sys.stdin):
    proof = [base64.b64decode(node) for node in step["proof"]]
    try:
        print(json.dumps({"lines": client.submit(step["note"], (step["old"], proof))}))
    except WitnessRejected as exc:
        print(json.dumps({"rejected": exc.status}))
"""


def aics_feed(
    url: str, vkey: str, steps: list[tuple[int, list[bytes], str]]
) -> list[dict[str, object]]:
    """Submit each ``(old size, proof, signed note)`` with aics-witness's own client
    (which checks each cosignature against ``vkey`` with aics-tlog); its answers: the
    cosignature lines, or the status of a refusal."""
    steps_json = [
        {"old": old, "proof": [base64.b64encode(n).decode() for n in proof], "note": note}
        for old, proof, note in steps
    ]
    python = str(aics_witness().with_name("python"))
    fed = subprocess.run(
        [python, "-c", _FEED, url, vkey],
        input=json.dumps(steps_json),
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in fed.stdout.splitlines()]


def make_witness_key(path: Path, name: str) -> tuple[str, bytes]:
    """``docket witness key --new``: the printed verifier key and its 32 raw bytes."""
    printed = subprocess.run(
        [DOCKET, "witness", "key", str(path), "--new", "--name", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    material = base64.b64decode(printed.split("+", 2)[2])
    assert material[0] == 0x04
    return printed, material[1:]
