"""New connections dealt in turn to the sockets sharing a port (engine._runtime.balance),
on real listening sockets of this process: the kernel runs the program on each SYN."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine._runtime.balance import (
    deal_in_turn,
    listening_sockets,
    round_robin_program,
)


def _loadable() -> str | None:
    try:
        fd = round_robin_program(2)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    return None


WHY_NOT = _loadable()
needs_bpf = pytest.mark.skipif(
    WHY_NOT is not None, reason=f"this process may not load a BPF program: {WHY_NOT}"
)


@pytest.fixture
def group() -> Iterator[list[socket.socket]]:
    """Three sockets listening on one port with SO_REUSEPORT, as --workers 3 has them."""
    sockets: list[socket.socket] = []
    port = 0
    try:
        for _ in range(3):
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("127.0.0.1", port))
            port = listener.getsockname()[1]
            listener.listen(64)
            sockets.append(listener)
        yield sockets
    finally:
        for listener in sockets:
            listener.close()


def _dealt(sockets: list[socket.socket], connections: int) -> list[int]:
    """Open ``connections`` connections to the group's port one after another; which
    socket (its place in ``sockets``) accepted each, in order."""
    port = sockets[0].getsockname()[1]
    order = []
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port)):
            ready, _, _ = select.select(sockets, [], [], 5)
            assert len(ready) == 1, ready
            accepted, _ = ready[0].accept()
            accepted.close()
            order.append(sockets.index(ready[0]))
    return order


@needs_bpf
def test_connections_are_dealt_to_the_sockets_in_turn(group: list[socket.socket]) -> None:
    port = group[0].getsockname()[1]
    assert deal_in_turn(port, 3) is None
    order = _dealt(group, 12)
    # In turn: three different sockets, then the same three again and again. The
    # kernel's hash deals 12 connections so with a chance of 3! / 3**12, about 1e-5.
    assert sorted(order[:3]) == [0, 1, 2], order
    assert order == order[:3] * 4, order


@needs_bpf
def test_an_index_past_the_last_socket_falls_back_to_the_hash(
    group: list[socket.socket],
) -> None:
    """Dealt among more workers than listen (one not started yet, or gone): every
    connection is still accepted, by one of the sockets there are."""
    port = group[0].getsockname()[1]
    assert deal_in_turn(port, 5) is None
    order = _dealt(group, 10)
    # Turns 0-2 of every 5 go to the three sockets in turn, 3 and 4 by the hash.
    assert sorted(order[0:3]) == [0, 1, 2], order
    assert order[5:8] == order[0:3], order


def test_only_this_ports_listening_sockets_are_found(
    group: list[socket.socket], tmp_path: Path
) -> None:
    port = group[0].getsockname()[1]
    with (
        socket.socket() as other,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_UNIX) as local,  # listening too, but on a path
    ):
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        udp.bind(("127.0.0.1", 0))
        local.bind(str(tmp_path / "s"))
        local.listen(1)
        found = listening_sockets(port)
        assert sorted(found) == sorted(listener.fileno() for listener in group)
        assert listening_sockets(udp.getsockname()[1]) == []


def test_no_listening_socket_is_a_reason_not_an_error() -> None:
    with socket.socket() as bound:  # bound, not listening
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert deal_in_turn(port, 2) == f"no listening socket on port {port} in this process"


@pytest.mark.parametrize("count", [0, 1025])
def test_the_count_is_bounded(count: int) -> None:
    with pytest.raises(ValueError, match="from 1 to 1024"):
        round_robin_program(count)
