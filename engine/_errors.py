"""Exceptions raised by the engine.

    EngineError
    ├── BundleError            a bundle cannot be loaded; ``problems`` holds every
    │   │                      ``file:line: message`` found
    │   ├── SignatureError     a signature is missing, malformed or does not verify
    │   ├── RollbackError      a bundle that verifies, but whose revision this replica
    │   │                      must refuse (lower than accepted, not pinned)
    │   └── SourceError        a bundle source (``bundle_url``) cannot be read: unreachable,
    │                          an answer past the size bound, a truncated or malformed one
    ├── RequestError           a request does not fit the bundle's schema or is malformed
    │   ├── LimitExceeded      a request is over a size limit (batch size, per-request
    │   │                      entities, chain depth, context size: engine/_core/limits.py)
    │   ├── AdmissionInputError  an AdmissionReview (or its object) Docket cannot read;
    │   │                      the message starts with the field at fault
    │   └── NamespaceUnavailable  a namespace's labels cannot be learnt (not found, or
    │                          the source failed): the review is denied
    ├── TrustConfigError       the EK roots or the EK allow-list cannot be read
    ├── ServeError             ``docket serve`` cannot start: a bad address, TLS files, the
    │                          audit log, the CA or the trust stores (one line)
    ├── ConfigError            the configuration file is missing (named by DOCKET_CONFIG),
    │                          unreadable or not TOML: ``docket.toml:1:24: invalid TOML: …``
    └── NotAuthorized          an administrative call was denied by policy

Callers never see cedarpy's ``ValueError``s: they are translated here.
"""

from __future__ import annotations

from collections.abc import Sequence


class EngineError(Exception):
    """Base class of every error the engine raises."""


class BundleError(EngineError):
    """A policy bundle was refused. ``problems`` lists every ``file:line: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        first = self.problems[0] if self.problems else "invalid bundle"
        more = len(self.problems) - 1
        super().__init__(first if more <= 0 else f"{first} (and {more} more)")


class SignatureError(BundleError):
    """A bundle signature is missing, malformed or does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


class SourceError(BundleError):
    """A bundle could not be fetched from (or published to) its source. ``reason`` is
    one word for logs and metrics: ``unreachable``, ``too-big``, ``truncated`` or
    ``bad-answer``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__([message])


class RequestError(EngineError):
    """A request does not fit the schema (unknown type, bad context) or is malformed."""


class LimitExceeded(RequestError):
    """A request is over a size limit (the number of requests in a batch, per-request
    entities, their fan-out or chain depth, the context's size); the message names the
    limit and the value."""


class NotAuthorized(EngineError):
    """An administrative call (such as a bundle reload) was denied by policy."""


class AdmissionInputError(RequestError):
    """An AdmissionReview, or the object in it, that Docket cannot read. The message
    starts with the field at fault (``request.uid: …``)."""


class TrustConfigError(EngineError):
    """The EK roots or allow-list cannot be read."""


class ConfigError(EngineError):
    """The configuration file cannot be used; the message is one line naming the file
    (and the line and column of a TOML error)."""


class ServeError(EngineError):
    """The server cannot start: a bad address, TLS files, the audit log, the CA or the
    trust stores. The message is one line saying what is wrong."""


class RollbackError(BundleError):
    """A bundle that loads and verifies, but whose revision this replica must refuse."""


class NamespaceUnavailable(RequestError):
    """A namespace's labels cannot be learnt: not found, or the source failed."""
