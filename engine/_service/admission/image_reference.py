"""Container image references read the way kubelet pulls them.

Kubelet reads a container's ``image`` with ``ParseNormalizedNamed`` of
github.com/distribution/reference (``pkg/util/parsers.ParseImageName``, with the sha256
and sha512 digest algorithms registered), and container runtimes normalise with copies
of the same code. This module follows distribution/reference v0.6.0 and later
(``normalize.go`` ``splitDockerDomain``, ``regexp.go``, ``reference.go`` ``Parse``;
checked against commit 0965666a6ade2e06035fe352e38344be1e68951a):

- The first path component is the registry host when it contains a ``.`` or a ``:``,
  is ``localhost``, or is not all lowercase (repository paths must be lowercase, so
  ``MyReg/app`` and ``LOCALHOST/app`` name the hosts ``MyReg`` and ``LOCALHOST``).
  ``index.docker.io`` is ``docker.io``. Otherwise the host is ``docker.io``, and a
  single name on ``docker.io`` is ``docker.io/library/NAME``. A name without a ``/`` is
  never a host (``localhost:5000`` alone is ``docker.io/library/localhost``, tag 5000).
- The grammar: host components ``[a-zA-Z0-9]`` with inner ``-``, or a bracketed IPv6
  address, optional ``:port``; path components ``[a-z0-9]+`` joined by ``.``, ``_``,
  ``__`` or dashes; tag ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; digest ``sha256:`` (64),
  ``sha384:`` (96) or ``sha512:`` (128) lowercase hex digits. The path is at most 255
  characters; a bare 64-hex-digit name is refused (it reads as an image id).

Anything else — an uppercase repository path, an empty component, a bad digest, a
space, a path over 255 characters — is an :class:`AdmissionInputError` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine._errors import AdmissionInputError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
LOCALHOST = "localhost"
MAX_PATH = 255
DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
"""The digest algorithms kubelet registers, and the hex digits of each."""

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN_AND_PORT}/)?{_REMOTE_NAME}"

# re.ASCII: \w is [A-Za-z0-9_] as in Go; fullmatch: Go's $ does not match before "\n".
_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_ANCHORED_NAME = re.compile(rf"(?:({_DOMAIN_AND_PORT})/)?({_REMOTE_NAME})", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed, normalised image reference: ``docker.io/library/nginx:1.27``."""

    domain: str
    """The registry host (and port) as written, ``index.docker.io`` as ``docker.io``."""
    path: str
    """The repository path on that host (``library/nginx``)."""
    tag: str | None = None
    digest: str | None = None
    """``algorithm:hex``."""

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/nginx``."""
        return f"{self.domain}/{self.path}"

    @property
    def registry(self) -> str:
        """Where the image comes from, as the Cluster entity's ``allowed_registries``
        names it: the repository without its last path segment, the host lowercased
        (DNS names are case-insensitive, so ``MyReg`` and ``myreg`` are one host).
        ``docker.io/library/nginx`` -> ``docker.io/library``; ``MyReg/app`` -> ``myreg``.
        """
        parts = [self.domain.lower(), *self.path.split("/")]
        return "/".join(parts[:-1])


def _split_domain(name: str) -> tuple[str, str]:
    """distribution/reference ``splitDockerDomain``: (host, the rest)."""
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    if first == LOCALHOST:
        domain, remote = first, rest
    elif first == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, rest
    elif "." in first or ":" in first or first.lower() != first:
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_PREFIX + remote
    return domain, remote


def _why_not(image: str) -> str | ImageReference:
    """The reference, or why it is not one (distribution/reference's error)."""
    if not image:
        return "repository name must have at least one component"
    if _IDENTIFIER.fullmatch(image):
        return "a 64-hex-digit name is an image id, not a repository name"
    domain, remainder = _split_domain(image)
    if remainder.split(":", 1)[0].lower() != remainder.split(":", 1)[0]:
        return "repository name must be lowercase"
    found = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if found is None:
        return "invalid reference format"
    name, tag, digest = found.groups()
    parts = _ANCHORED_NAME.fullmatch(name)
    assert parts is not None  # _REFERENCE's first group is a _NAME
    host, path = parts.groups()
    if len(path) > MAX_PATH:
        return f"repository name must not be more than {MAX_PATH} characters"
    if digest is not None:
        algorithm, _, encoded = digest.partition(":")
        length = DIGEST_LENGTHS.get(algorithm)
        if length is None:
            return f"unsupported digest algorithm {algorithm!r}"
        if len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
            return f"a {algorithm} digest is {length} lowercase hex digits"
    return ImageReference(domain=host or domain, path=path, tag=tag, digest=digest)


def parse_image(image: str, where: str) -> ImageReference:
    """``image`` read as kubelet pulls it (see the module docstring for the rules and
    their source). Raises :class:`AdmissionInputError` naming ``where`` when kubelet
    could not pull it."""
    parsed = _why_not(image)
    if isinstance(parsed, str):
        raise AdmissionInputError(
            f"{where}: {json.dumps(image)} is not an image reference kubelet can pull ({parsed})"
        )
    return parsed


def registry_of(image: str) -> str:
    """The registry of ``image`` (:attr:`ImageReference.registry`): ``nginx:1.27`` ->
    ``docker.io/library``; ``bitnami/redis`` -> ``docker.io/bitnami``;
    ``ghcr.io/acme/team/api@sha256:…`` -> ``ghcr.io/acme/team``; ``MyReg/app`` ->
    ``myreg``. Raises :class:`AdmissionInputError` for an invalid reference."""
    return parse_image(image, "image").registry
