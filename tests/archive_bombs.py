"""Archives that cost a naive reader memory or CPU out of all proportion to their size
(issue 14, finding 9), built by hand: ``tarfile`` will not write most of them."""

from __future__ import annotations

import gzip
from pathlib import Path

BLOCK = 512


def tar_header(name: bytes, size: int, typeflag: bytes, *, link: bytes = b"") -> bytes:
    """One ustar header block, checksum included."""
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = b"0000644\0"
    header[124:136] = f"{size:011o}\0".encode()
    header[136:148] = b"00000000000\0"
    header[156:157] = typeflag
    header[157 : 157 + len(link)] = link
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header)


def long_name_bomb(path: Path, name_bytes: int) -> Path:
    """A .tar.gz whose first member has a GNU long name of ``name_bytes`` bytes (``tarfile``
    reads it into memory whole; 256 MiB compress to about 1 MiB)."""
    chunk = b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(tar_header(b"././@LongLink", name_bytes, b"L"))
        for _ in range(name_bytes // len(chunk)):
            out.write(chunk)
        out.write(bytes(-name_bytes % BLOCK))
        out.write(tar_header(b"x", 0, b"0") + bytes(2 * BLOCK))
    return path


def many_members_bomb(path: Path, members: int) -> Path:
    """A .tar.gz of ``members`` empty files named ``f0000000`` …: one header each."""
    template = tar_header(b"f0000000", 0, b"0")
    # The checksum of a header whose name is "f" + seven digits: the rest is fixed.
    fixed = sum(template) - sum(template[148:156]) + 8 * ord(" ") - sum(b"0000000")
    middle, tail = template[8:148], template[156:]
    with gzip.open(path, "wb", compresslevel=1) as out:
        for start in range(0, members, 4096):
            headers = []
            for number in range(start, min(start + 4096, members)):
                digits = b"%07d" % number
                checksum = b"%06o\0 " % (fixed + sum(digits))
                headers.append(b"f" + digits + middle + checksum + tail)
            out.write(b"".join(headers))
        out.write(bytes(2 * BLOCK))
    return path
