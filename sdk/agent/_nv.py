"""The EK certificate in NV: its index (TCG EK Credential Profile) and the DER certificate
cut from the padded bytes an NV index holds. Pure; both TPM drivers use it."""

from __future__ import annotations

from typing import Final

from sdk._errors import TpmError

__all__ = ["EK_CERT_INDEX", "der_prefix"]

EK_CERT_INDEX: Final = 0x01C00002
"""The NV index of the RSA 2048 EK certificate (TCG EK Credential Profile)."""


def der_prefix(data: bytes, what: str) -> bytes:
    """The DER SEQUENCE at the start of ``data``, without the padding NV indexes may hold.

    Raises ``TpmError`` when ``data`` does not start with a complete DER SEQUENCE.
    """
    if len(data) < 2 or data[0] != 0x30:
        raise TpmError(f"{what} is not a DER certificate")
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        size = first & 0x7F
        if not 1 <= size <= 4 or len(data) < 2 + size:
            raise TpmError(f"{what} is not a DER certificate (bad length)")
        header, length = 2 + size, int.from_bytes(data[2 : 2 + size], "big")
    end = header + length
    if end > len(data):
        raise TpmError(f"{what} is truncated: {len(data)} bytes of a {end}-byte certificate")
    return data[:end]
