"""``docket witness …``: a C2SP tlog-witness (c2sp.org/tlog-witness) that cosigns the
checkpoints of the logs it knows, and the site's side that asks witnesses to cosign.

- ``key PATH [--new --name N]``: the witness's cosignature/v1 key (a signed-note private
  key file, mode 0600, as ``docket audit redaction-key`` makes them; algorithm 0x04);
  prints its verifier key, which sites configure.
- ``add-log ORIGIN VKEY…``: know a log (its checkpoint keys), in ``<data-dir>/witness.db``.
- ``serve --key PATH --listen HOST:PORT [--log ORIGIN=VKEY …]``: answer add-checkpoint.
- ``logs``: each known log, the size last cosigned, and every fork seen.
- ``cosign --witness URL=VKEY …``: submit the site's latest checkpoint to each witness;
  print it with the cosignatures, exit 1 when fewer than ``--quorum`` cosigned.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from audit.cli import InputError, configured

if TYPE_CHECKING:
    from audit import WitnessStore
    from audit.note import VerifierKey

DATABASE = "witness.db"


@click.group()
def witness() -> None:
    """A C2SP tlog-witness: cosign the checkpoints of known logs, detect forks."""


A_FILE = click.Path(path_type=Path, dir_okay=False)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the witness keeps witness.db [env DOCKET_DATA_DIR, else ./docket-data].",
)


def _store(data_dir: Path | None) -> WitnessStore:
    from audit import StoreError, WitnessStore

    try:
        return WitnessStore(configured(data_dir=data_dir).data_dir / DATABASE)
    except StoreError as exc:
        raise InputError(str(exc)) from exc


def keys_by_name(pairs: tuple[str, ...], option: str = "--log") -> dict[str, list[VerifierKey]]:
    """``NAME=VKEY`` pairs (split at the first ``=``; ``option`` names them in an
    error), grouped by name. Raises :class:`InputError`."""
    from audit import KeyFormatError
    from audit.note import VerifierKey

    logs: dict[str, list[VerifierKey]] = {}
    for pair in pairs:
        origin, equals, vkey = pair.partition("=")
        if not equals or not origin:
            raise InputError(f"{option} takes NAME=VKEY, not {pair!r}")
        try:
            logs.setdefault(origin, []).append(VerifierKey.parse(vkey))
        except KeyFormatError as exc:
            raise InputError(f"{option} {origin}: {exc}") from exc
    return logs


@witness.command()
@click.argument("path", type=A_FILE)
@click.option("--new", "make", is_flag=True, help="Make a new key at PATH (it must not exist).")
@click.option("--name", help="The witness's name, e.g. witness.example/w1 (with --new).")
def key(path: Path, make: bool, name: str | None) -> None:
    """Print the verifier key (cosignature/v1, NAME+ID+BASE64) of the witness key at
    PATH; with --new, make it first (mode 0600). Sites configure the printed key."""
    from audit import ALG_COSIGNATURE_V1
    from audit.cli import show_key_file

    if make and not name:
        raise InputError("--new needs --name (the witness's name)")
    show_key_file(path, name if make else None, ALG_COSIGNATURE_V1)


@witness.command(name="add-log")
@click.argument("origin")
@click.argument("vkeys", nargs=-1, required=True)
@data_dir_option
def add_log(origin: str, vkeys: tuple[str, ...], data_dir: Path | None) -> None:
    """Know the log ORIGIN by its checkpoint verifier keys VKEYS (replacing the keys of
    a known log; what was cosigned is kept)."""
    store = _store(data_dir)
    try:
        keys = keys_by_name(tuple(f"{origin}={vkey}" for vkey in vkeys))[origin]
        state = store.add_log(origin, keys)
    finally:
        store.close()
    click.echo(f"{state.origin}: {len(state.keys)} key(s), cosigned up to size {state.size}")


@witness.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def logs(data_dir: Path | None, as_json: bool) -> None:
    """Each known log with the size last cosigned, then every fork seen (with both
    checkpoints: the evidence)."""
    store = _store(data_dir)
    try:
        states, forks = store.logs(), store.forks()
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "logs": [
                        {"origin": s.origin, "size": s.size, "keys": [str(k) for k in s.keys]}
                        for s in states
                    ],
                    "forks": [
                        {
                            "origin": f.origin,
                            "size": f.size,
                            "seen": f.seen.isoformat(),
                            "held": f.held,
                            "offered": f.offered,
                        }
                        for f in forks
                    ],
                },
                indent=2,
            )
        )
        return
    for state in states:
        click.echo(f"{state.origin}\tsize {state.size}")
    for fork in forks:
        click.echo(f"FORK {fork.origin} at size {fork.size}, seen {fork.seen.isoformat()}")


def serve_http(app: Any, sock: socket.socket) -> None:
    """Serve the ASGI ``app`` on ``sock`` until SIGTERM or SIGINT (then return)."""
    import uvicorn

    from engine._adapters.admission_http import (
        IDLE_SECONDS,
        MAX_CONNECTIONS,
        REQUEST_SECONDS,
        _protocol,
    )

    # The admission webhook's HTTP protocol: TCP_NODELAY (else a response's two writes
    # wait out the client's delayed ACK, 40 ms), a deadline on each request (a client
    # trickling its body is cut off), and at most MAX_CONNECTIONS at once.
    config = uvicorn.Config(
        app,
        http=_protocol(REQUEST_SECONDS, MAX_CONNECTIONS),
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        server_header=False,
        limit_concurrency=MAX_CONNECTIONS + 1,
        timeout_keep_alive=IDLE_SECONDS,
    )
    # uvicorn handles SIGTERM (a graceful stop) and then raises it again for the handler
    # that was there before: let that one be a no-op, so a stop exits 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    uvicorn.Server(config).run(sockets=[sock])


def listen_on(address: str) -> socket.socket:
    """A socket listening on ``HOST:PORT``. Raises :class:`InputError`."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        raise InputError(f"--listen takes HOST:PORT, not {address!r}")
    try:
        sock = socket.create_server((host.strip("[]"), int(port)), reuse_port=False)
    except OSError as exc:
        raise InputError(f"cannot listen on {address}: {exc.strerror}") from exc
    return sock


@witness.command()
@click.option("--key", "key_path", type=A_FILE, required=True, help="The witness key file.")
@click.option("--listen", default="127.0.0.1:7380", show_default=True, help="HOST:PORT.")
@click.option(
    "--log",
    "log_pairs",
    multiple=True,
    metavar="ORIGIN=VKEY",
    help="A log to know (added to witness.db; repeat for more keys or logs).",
)
@data_dir_option
def serve(key_path: Path, listen: str, log_pairs: tuple[str, ...], data_dir: Path | None) -> None:
    """Answer POST /add-checkpoint (and GET /<origin hash>/checkpoint for monitors)
    until SIGTERM or SIGINT."""
    import structlog

    from audit import ALG_COSIGNATURE_V1, KeyFormatError, Witness, WitnessApp
    from audit.note import read_signer

    try:
        signer = read_signer(key_path, ALG_COSIGNATURE_V1)
    except KeyFormatError as exc:
        raise InputError(str(exc)) from exc
    store = _store(data_dir)
    for origin, keys in keys_by_name(log_pairs).items():
        store.add_log(origin, keys)
    if not store.logs():
        raise InputError("the witness knows no log: pass --log ORIGIN=VKEY or run add-log")
    sock = listen_on(listen)
    host, port = sock.getsockname()[:2]
    log = structlog.get_logger("docket.witness")
    logs = ", ".join(state.origin for state in store.logs())
    click.echo(f"docket: witness listening on http://{host}:{port} (logs: {logs})", err=True)
    click.echo(f"docket: witness key {signer.verifier()}", err=True)
    try:
        serve_http(WitnessApp(Witness(store, [signer])), sock)
    finally:
        store.close()
        sock.close()
    log.info("witness.stopped")


@witness.command()
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    required=True,
    metavar="URL=VKEY",
    help="A witness: its URL prefix and cosignature/v1 verifier key (repeatable).",
)
@click.option("--quorum", type=int, help="How many must cosign [all of them].")
@click.option("--db", metavar="URL", help="The site's audit database [as docket audit].")
@click.option(
    "--keys",
    "keys_path",
    type=click.Path(path_type=Path),
    help="The site's checkpoint key directory [as docket audit].",
)
@data_dir_option
@click.option("-o", "--output", type=A_FILE, help="Write it here.")
def cosign(
    witnesses: tuple[str, ...],
    quorum: int | None,
    db: str | None,
    keys_path: Path | None,
    data_dir: Path | None,
    output: Path | None,
) -> None:
    """Submit the site's latest checkpoint to each witness, with a consistency proof
    from the size it last cosigned; print the checkpoint with the cosignatures. Exit 1
    when fewer than --quorum witnesses cosigned it (it is not final)."""
    from audit import (
        AuditError,
        CosignatureError,
        KeyFormatError,
        Store,
        WitnessClient,
        gather_cosignatures,
    )
    from audit.cli import CheckFailed, database_url, keys_dir
    from audit.note import read_signer

    try:
        clients = [WitnessClient.parse(text) for text in witnesses]
        directory = keys_dir(keys_path, data_dir)
        log_keys = [read_signer(path).verifier() for path in sorted(directory.glob("*.key"))]
    except KeyFormatError as exc:
        raise InputError(str(exc)) from exc
    store = Store(database_url(db, data_dir), create=False)
    try:
        latest = store.latest_checkpoint()
        if latest is None:
            raise InputError("the site's log has no checkpoint yet")
        note, cosigned = gather_cosignatures(
            latest.note, log_keys, clients, store.consistency_proof, quorum=quorum
        )
    except CosignatureError as exc:
        raise CheckFailed(f"not final: {exc}") from exc
    except AuditError as exc:
        raise InputError(str(exc)) from exc
    finally:
        store.close()
    if output is not None:
        output.write_text(note)
    else:
        click.echo(note, nl=False)
    names = ", ".join(c.name for c in cosigned.cosignatures)
    click.echo(f"size {cosigned.checkpoint.size} cosigned by {names}", err=True)
