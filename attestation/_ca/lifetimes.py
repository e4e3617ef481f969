"""How long the CA's credentials may live, and the one rule for the ``now`` it is given.

The caps hold whatever lifetime is asked for, and bound how long a retired issuing key
stays trusted for what it signed before its retirement. :func:`check_now` is the CA's
only view of time: an aware datetime passed in (never a clock read), as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attestation._errors import CAError

__all__ = ["MAX_JWT_TTL", "MAX_SVID_TTL", "check_now"]

MAX_SVID_TTL = timedelta(hours=24)
"""The longest an X.509-SVID lives."""
MAX_JWT_TTL = timedelta(minutes=5)
"""The longest a JWT-SVID lives (and the most a verifier accepts)."""


def check_now(now: datetime) -> datetime:
    """``now`` as UTC; CAError when it is naive."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise CAError("now must be an aware datetime")
    return now.astimezone(UTC)
