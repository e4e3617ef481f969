"""SPIFFE IDs and trust domains, as the SPIFFE ID spec writes them.

:func:`parse_spiffe_id` splits a workload SPIFFE ID; :func:`check_trust_domain` checks a
trust domain on its own. Both raise :class:`~attestation.CAError`.
"""

from __future__ import annotations

import re

from attestation._errors import CAError

__all__ = ["check_trust_domain", "parse_spiffe_id"]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def parse_spiffe_id(spiffe_id: str) -> tuple[str, str]:
    """Split a workload SPIFFE ID into ``(trust_domain, path)``.

    Follows the SPIFFE ID spec: lowercase ``spiffe`` scheme, a lowercase trust domain of
    ``[a-z0-9._-]``, a non-empty path of non-empty ``[A-Za-z0-9._-]`` segments other than
    ``.``/``..``, no trailing slash, query, fragment, port or user info. Raises ``CAError``.
    """
    if len(spiffe_id.encode()) > 2048:
        raise CAError("SPIFFE ID is longer than 2048 bytes")
    if not spiffe_id.startswith("spiffe://"):
        raise CAError(f"not a SPIFFE ID (want spiffe://<trust-domain>/<path>): {spiffe_id!r}")
    if "?" in spiffe_id or "#" in spiffe_id:
        raise CAError(f"SPIFFE ID must not have a query or fragment: {spiffe_id!r}")
    rest = spiffe_id[len("spiffe://") :]
    trust_domain, slash, path = rest.partition("/")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise CAError(
            f"SPIFFE ID trust domain must be lowercase letters, digits, '.', '-', '_': "
            f"{spiffe_id!r}"
        )
    if not slash or not path:
        raise CAError(f"SPIFFE ID has no workload path: {spiffe_id!r}")
    for segment in path.split("/"):
        if not segment or segment in {".", ".."} or not _PATH_SEGMENT.fullmatch(segment):
            raise CAError(f"SPIFFE ID path segment {segment!r} is not allowed: {spiffe_id!r}")
    return trust_domain, "/" + path


def check_trust_domain(trust_domain: str) -> str:
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise CAError(
            f"trust domain must be 1-255 lowercase letters, digits, '.', '-', '_': {trust_domain!r}"
        )
    return trust_domain
