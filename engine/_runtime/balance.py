"""New connections dealt to the worker processes in turn, not by the kernel's hash.

With ``--workers N`` every worker listens on the same port with ``SO_REUSEPORT``, and the
kernel gives each new connection to the socket its hash of the connection's addresses
picks. Sixteen connections then land 11/5 or 12/4 as often as 8/8; a connection carries
every call its client sends on it, so one worker can be offered twice the other's calls,
and its queue is the tail of the whole server (benchmarks/README.md, "Issue 15: the
tail"; and "the tail, balanced").

The kernel lets a program choose instead (``SO_ATTACH_REUSEPORT_EBPF``): a socket filter
whose return value is the index of the socket, in the order the sockets joined the port,
that gets the connection; an index past the last falls back to the hash. The program
here keeps a counter in a one-element BPF array and returns ``counter++ % N``: the
connections are dealt round the N workers in turn. It is a handful of instructions,
assembled below and loaded with the ``bpf`` system call (no compiler, no library).

Loading needs ``CAP_BPF`` (or root) where unprivileged BPF is off, as it is by default
on most distributions; without it, or off Linux, :func:`deal_in_turn` says why and the
kernel's hash goes on dealing. Nothing else changes: the program only chooses among the
sockets of this port that are listening.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import struct
import sys
from errno import EPERM

__all__ = ["deal_in_turn", "listening_sockets", "round_robin_program"]

_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
_BPF_MAP_CREATE, _BPF_PROG_LOAD = 0, 5
_BPF_MAP_TYPE_ARRAY = 2
_BPF_PROG_TYPE_SOCKET_FILTER = 1
_SO_ATTACH_REUSEPORT_EBPF = 52
_SO_ACCEPTCONN = 30


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction: opcode, registers (dst low nibble, src high), offset, immediate."""
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def _program(map_fd: int, count: int) -> bytes:
    """``r0 = atomic_fetch_add(&counter, 1) % count`` (0 if the map lookup fails)."""
    return b"".join(
        (
            _insn(0x62, dst=10, off=-4, imm=0),  # *(u32 *)(r10 - 4) = 0: the key
            _insn(0xBF, dst=2, src=10),  # r2 = r10
            _insn(0x07, dst=2, imm=-4),  # r2 += -4: &key
            _insn(0x18, dst=1, src=1, imm=map_fd),  # r1 = the map (a map fd, 64-bit load)
            _insn(0x00),
            _insn(0x85, imm=1),  # r0 = bpf_map_lookup_elem(r1, r2)
            _insn(0x15, dst=0, off=5, imm=0),  # if r0 == 0: skip to "r0 = 0"
            _insn(0xB7, dst=1, imm=1),  # r1 = 1
            _insn(0xDB, dst=0, src=1, imm=0x01),  # r1 = atomic_fetch_add(*(u64 *)r0, r1)
            _insn(0xBF, dst=0, src=1),  # r0 = r1
            _insn(0x97, dst=0, imm=count),  # r0 %= count
            _insn(0x95),  # exit
            _insn(0xB7, dst=0, imm=0),  # r0 = 0
            _insn(0x95),  # exit
        )
    )


def _bpf(command: int, attr: bytes) -> int:
    number = _BPF_SYSCALL.get(os.uname().machine)
    if not sys.platform.startswith("linux") or number is None:
        raise OSError(f"no eBPF here ({sys.platform} {os.uname().machine})")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    result = int(libc.syscall(number, command, buffer, len(attr)))
    if result < 0:
        errno = ctypes.get_errno()
        needs = " (loading needs root or CAP_BPF)" if errno == EPERM else ""
        raise OSError(errno, f"bpf(): {os.strerror(errno)}{needs}")
    return result


def round_robin_program(count: int) -> int:
    """Load the program dealing connections to ``count`` sockets in turn; its fd (the
    caller closes it once attached). Raises :class:`OSError` with a one-line reason
    when the kernel will not load it."""
    if not 1 <= count <= 1024:
        raise ValueError(f"count: {count} sockets; from 1 to 1024")
    # union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    map_fd = _bpf(_BPF_MAP_CREATE, struct.pack("<IIII", _BPF_MAP_TYPE_ARRAY, 4, 8, 1))
    try:
        code = _program(map_fd, count)
        instructions = ctypes.create_string_buffer(code, len(code))
        license_ = ctypes.create_string_buffer(b"Apache-2.0")
        log = ctypes.create_string_buffer(4096)
        # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf.
        attr = struct.pack(
            "<IIQQIIQ",
            _BPF_PROG_TYPE_SOCKET_FILTER,
            len(code) // 8,
            ctypes.addressof(instructions),
            ctypes.addressof(license_),
            1,
            len(log),
            ctypes.addressof(log),
        )
        try:
            return _bpf(_BPF_PROG_LOAD, attr)
        except OSError as exc:
            said = log.value.decode(errors="replace").strip().splitlines()
            raise OSError(exc.errno, f"{exc.strerror}{': ' + said[-1] if said else ''}") from None
    finally:
        os.close(map_fd)  # the loaded program holds the map


def listening_sockets(port: int) -> list[int]:
    """This process's file descriptors that are TCP sockets listening on ``port``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as view:
                if view.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if view.type != socket.SOCK_STREAM:
                    continue
                if not view.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN):
                    continue
                if view.getsockname()[1] == port:
                    found.append(fd)
        except OSError:  # closed meanwhile
            continue
    return found


def deal_in_turn(port: int, workers: int) -> str | None:
    """Attach the round-robin program to this process's listening sockets on ``port``
    (their reuseport groups: every worker's socket of each address). None once
    attached; else why not (the kernel's hash then goes on dealing)."""
    fds = listening_sockets(port)
    if not fds:
        return f"no listening socket on port {port} in this process"
    try:
        program = round_robin_program(workers)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        for fd in fds:
            with socket.socket(fileno=os.dup(fd)) as view:
                view.setsockopt(
                    socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_EBPF, struct.pack("<i", program)
                )
    except OSError as exc:
        return f"SO_ATTACH_REUSEPORT_EBPF: {exc.strerror}"
    finally:
        os.close(program)  # the sockets' group holds it
    return None
