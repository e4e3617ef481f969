"""A throwaway PostgreSQL server for the e2e tests.

``start_postgres()`` runs ``initdb`` in a fresh directory under /tmp and ``pg_ctl start`` on a
free loopback port (its Unix socket goes in that directory too). The superuser is ``docket``,
trusted without a password, and the database ``docket`` exists. ``PostgresServer.stop()`` runs
``pg_ctl stop -m fast``, makes sure the postmaster's PID is gone (SIGKILL if it is not) and
removes the directory.

The binaries are the highest version's under /usr/lib/postgresql/<version>/bin (Debian's
layout; ``make test`` installs them as root), else the ones on PATH. PostgreSQL refuses to run
as root: as root the server runs as the ``postgres`` OS user (``runuser``), who owns the
directory; otherwise it runs as the current user.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

LIBDIR = Path("/usr/lib/postgresql")
SUPERUSER = "docket"
DATABASE = "docket"
OS_USER = "postgres"  # the account the server runs as when we are root
HOST = "127.0.0.1"
TIMEOUT = 30  # seconds for initdb, pg_ctl start and pg_ctl stop each
ATTEMPTS = 3  # the free port may be taken by someone else before the server binds it
LOG_TAIL = 4000  # characters of the server log in an error message


class PostgresError(Exception):
    """The server could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True)
class Binaries:
    initdb: Path
    pg_ctl: Path


def find_binaries() -> Binaries | None:
    """initdb and pg_ctl of the highest version under /usr/lib/postgresql, else on PATH."""

    def version(bin_dir: Path) -> tuple[int, ...]:
        name = bin_dir.parent.name
        parts = name.split(".")
        return tuple(int(part) for part in parts) if all(p.isdigit() for p in parts) else ()

    bin_dirs = sorted(LIBDIR.glob("*/bin"), key=version, reverse=True)
    for bin_dir in bin_dirs:
        initdb, pg_ctl = bin_dir / "initdb", bin_dir / "pg_ctl"
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return Binaries(initdb, pg_ctl)
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if on_path[0] is not None and on_path[1] is not None:
        return Binaries(Path(on_path[0]), Path(on_path[1]))
    return None


@dataclass
class PostgresServer:
    """A running server; ``url()`` and ``create_database()`` give SQLAlchemy URLs."""

    binaries: Binaries
    root: Path
    port: int
    pid: int  # the postmaster's
    as_user: list[str]  # the command prefix that runs a program as the server's OS user
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        """The SQLAlchemy (psycopg 3) URL of ``database`` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database ``test_<n>``; its URL."""
        name = f"test_{next(self._numbers)}"
        with self._connect() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=TIMEOUT,
        )

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-LOG_TAIL:]
        except OSError as exc:
            return f"(no server log: {exc})"

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; then the postmaster must be gone (it is SIGKILLed if not)
        and the directory is removed. Raises PostgresError if it did not stop by itself."""
        problems: list[str] = []
        pg_ctl = [str(self.binaries.pg_ctl), "stop", "-D", str(self.data), "-m", "fast", "-w"]
        try:
            _run([*self.as_user, *pg_ctl, "-t", str(TIMEOUT)], self.root, "pg_ctl stop")
        except PostgresError as exc:
            problems.append(str(exc))
        if not _gone(self.pid, self.data, wait=5.0):
            problems.append(f"the postmaster (pid {self.pid}) still ran: killed it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if not _gone(self.pid, self.data, wait=5.0):
                problems.append(f"the postmaster (pid {self.pid}) survived SIGKILL")
        tail = self.log_tail() if problems else ""
        shutil.rmtree(self.root, ignore_errors=True)
        if problems:
            raise PostgresError("; ".join(problems) + f"\nserver log:\n{tail}")


def start_postgres(binaries: Binaries) -> PostgresServer:
    """initdb, pg_ctl start and CREATE DATABASE docket in a new directory under /tmp.

    Raises PostgresError, with the server log's tail, if a step fails; nothing is left
    running or on disk then.
    """
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(OS_USER)
        except KeyError:
            msg = f"running as root, and there is no {OS_USER!r} user to run PostgreSQL as"
            raise PostgresError(msg) from None
        as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", OS_USER, "--"]
    # Our own directory right under /tmp, not pytest's: /tmp/pytest-of-root is 0700, so the
    # postgres user could not reach anything below it; and a short path, as the Unix socket's
    # must be (under 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="docket-postgres-", dir="/tmp"))
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        # --no-sync: a throwaway cluster need not reach the disk before it starts; the
        # server itself runs with fsync=on.
        initdb = [str(binaries.initdb), "-D", str(root / "data"), "-U", SUPERUSER]
        initdb += ["--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        _run([*as_user, *initdb], root, "initdb")
        server = _start_server(binaries, root, as_user)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        with server._connect() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    except BaseException as exc:
        tail = server.log_tail()
        with contextlib.suppress(PostgresError):  # the first failure is the one to report
            server.stop()
        if not isinstance(exc, psycopg.Error):
            raise
        msg = f"CREATE DATABASE {DATABASE} failed: {exc}\nserver log:\n{tail}"
        raise PostgresError(msg) from exc
    return server


def _start_server(binaries: Binaries, root: Path, as_user: list[str]) -> PostgresServer:
    """pg_ctl start on a free port, on another one if someone took it first."""
    data, log = root / "data", root / "postgres.log"
    for attempt in range(1, ATTEMPTS + 1):
        port = _free_port()
        options = f"-h {HOST} -p {port} -k {shlex.quote(str(root))} -c fsync=on"  # for sh
        pg_ctl = [str(binaries.pg_ctl), "start", "-D", str(data), "-w", "-t", str(TIMEOUT)]
        pg_ctl += ["-o", options, "-l", str(log)]
        try:
            _run([*as_user, *pg_ctl], root, "pg_ctl start")
            pid = int((data / "postmaster.pid").read_text().split()[0])
        except (PostgresError, OSError, ValueError, IndexError) as exc:
            _kill_left_over(data)
            tail = log.read_text(errors="replace")[-LOG_TAIL:] if log.exists() else ""
            if attempt < ATTEMPTS and "could not bind" in tail:
                continue
            raise PostgresError(f"{exc}\nserver log:\n{tail}") from None
        return PostgresServer(binaries, root, port, pid, as_user)
    raise AssertionError("unreachable")


def _run(command: list[str], cwd: Path, what: str) -> None:
    """Run ``command``; PostgresError with its output if it fails or hangs."""
    try:
        done = subprocess.run(
            command,
            cwd=cwd,  # the postgres user may not be able to enter ours
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 10,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresError(f"{what} did not finish in {TIMEOUT + 10} s") from exc
    except OSError as exc:
        raise PostgresError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-LOG_TAIL:]
        raise PostgresError(f"{what} exited {done.returncode}: {output}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _is_postmaster(pid: int, data: Path) -> bool:
    """Whether ``pid`` runs, not as a zombie, and is the postmaster of ``data`` (the PID may
    have been reused by then)."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # it exists, and we cannot tell more
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z" and os.fsencode(data) in cmdline


def _gone(pid: int, data: Path, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while _is_postmaster(pid, data):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _kill_left_over(data: Path) -> None:
    """After a failed start: SIGKILL a postmaster that wrote its PID file all the same."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if _is_postmaster(pid, data):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _gone(pid, data, wait=5.0)
