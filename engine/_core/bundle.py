"""Policy bundles: load, validate, hash, verify, and index a directory or ``.tar.gz``.

A bundle holds ``schema.cedarschema``, any number of ``*.cedar`` files, and optionally
``entities.json`` (Cedar JSON entities), ``sites.toml`` (the site catalog),
``reference/`` and ``tests/``. Its version is ``sha256:`` over every file but
``bundle.sig``, in sorted path order, each as ``path NUL length NUL bytes``.

``reference/*.toml`` (directly in ``reference/``) are the attestation reference values, one
device class per file (see :mod:`attestation._reference`); other files there are kept
(and hashed) but not read.

``bundle.toml`` (optional) holds the bundle's name and revision and its evaluation
settings; being a bundle file, it is covered by the version hash and the signature like
the policies it governs::

    [bundle]
    name = "acme-policies"    # which bundle this is a revision of
    revision = 42             # grows with each release (anti-rollback, see _bundle_state)

    [evaluation]
    forbid_errors = "deny"    # the default: a forbid whose condition errors denies
    # forbid_errors = "cedar" # Cedar's semantics: an erroring policy is skipped

``name`` and ``revision`` go together; ``docket policy sign`` requires them.

``forbid_errors = "deny"`` fails closed: a ``forbid`` that errors at run time (integer
overflow, an extension function on a bad value, an attribute of an entity not in the
store) denies the request as if it held, and is named in the decision's ``reasons`` as
well as its ``errors``. ``"cedar"`` keeps Cedar's exact behaviour (an erroring policy
neither permits nor forbids). Erroring ``permit`` policies are skipped either way: they
can only take an allow away. An unknown table, key or value refuses the bundle.

An archive (``.tar.gz`` or ``.tar``) is read by a strict streaming reader, not
``tarfile`` (which reads a GNU long name or pax header into memory whole, and walks a
million empty members for minutes): every header, name and member is bounded before it
is read or inflated (:data:`MAX_MEMBERS`, :data:`MAX_MEMBER_BYTES`,
:data:`MAX_BUNDLE_BYTES`, :data:`MAX_NAME_BYTES`, :data:`MAX_PAX_BYTES`,
:data:`MAX_DEPTH`, :data:`MAX_RATIO`); links, devices, FIFOs, sparse files and a name
twice are refused. Each refusal is a :class:`~engine.BundleError` of one line.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

import cedarpy

from attestation import ReferenceError, ReferenceValues, parse_reference
from audit.note import VerifierKey
from engine._core.cedar_source import error_line
from engine._core.index import UID, PolicyIndex
from engine._core.limits import heights
from engine._core.policies import Policy, parse_policy_files
from engine._core.schema_json import Type, context_types, schema_json
from engine._core.signing import SIGNATURE_FILE, verify_bundle
from engine._core.sites import Site, jurisdictions, parse_sites, unknown_jurisdiction
from engine._errors import BundleError, RequestError

SCHEMA_FILE = "schema.cedarschema"
ENTITIES_FILE = "entities.json"
SITES_FILE = "sites.toml"
SETTINGS_FILE = "bundle.toml"
REFERENCE_DIR = "reference"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
"""Total bytes of a bundle's files (a directory's or an archive's, uncompressed)."""
MAX_MEMBER_BYTES = 32 * 1024 * 1024
"""Bytes of one file of a bundle."""
MAX_MEMBERS = 10_000
"""Files, folders and headers of a bundle archive (or files of a directory)."""
MAX_NAME_BYTES = 1024
"""Bytes of one member's path, however written (ustar fields, GNU long name, pax)."""
MAX_PAX_BYTES = 64 * 1024
"""Bytes of one pax extended header."""
MAX_DEPTH = 16
"""Folders a member's path may go down."""
MAX_RATIO = 200
"""Uncompressed over compressed bytes of an archive, checked once past :data:`RATIO_FLOOR`."""
RATIO_FLOOR = 1024 * 1024

_SKIP_PARTS = {"__pycache__", ".git"}
_BLOCK = 512
_CHUNK = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_FILE_TYPES = {b"0", b"\0", b"7"}
_REFUSED_TYPES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"K": "a GNU long link name",
    b"S": "a GNU sparse file",
}


def read_bundle_files(path: Path) -> dict[str, bytes]:
    """Every file of a bundle directory or ``.tar.gz`` (or plain ``.tar``), by relative
    POSIX path. Raises :class:`~engine.BundleError` for a missing path, or one that
    passes a limit (files, bytes, names, depth; links and devices in an archive)."""
    if path.is_dir():
        return _read_directory(path)
    if path.is_file():
        return _read_archive(path)
    raise BundleError([f"{path}: no such bundle directory or .tar.gz file"])


def _read_directory(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for item in sorted(path.rglob("*")):
        relative = item.relative_to(path)
        if any(part in _SKIP_PARTS or part.startswith(".") for part in relative.parts):
            continue
        if not item.is_file():
            continue
        if len(files) >= MAX_MEMBERS:
            raise BundleError([f"{path}: more than {MAX_MEMBERS} files"])
        size = item.stat().st_size
        if size > MAX_MEMBER_BYTES:
            raise BundleError([f"{path}: {relative}: larger than {MAX_MEMBER_BYTES} bytes"])
        total += size
        if total > MAX_BUNDLE_BYTES:
            raise BundleError([f"{path}: files larger than {MAX_BUNDLE_BYTES} bytes in all"])
        files[relative.as_posix()] = item.read_bytes()
    return files


class _Stream:
    """The uncompressed bytes of an archive file, read in bounded pieces.

    Nothing is inflated that is not asked for, and no more than :data:`_CHUNK` of
    compressed input is held: a bomb costs what its first refused header costs.
    """

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self._path = path
        self._handle = handle
        magic = handle.read(2)
        handle.seek(0)
        self._inflate: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if magic == _GZIP_MAGIC else None
        )
        self._pending = b""
        self._between = False
        self._buffer = bytearray()
        self.compressed = 0
        self.uncompressed = 0

    def _refuse(self, message: str) -> BundleError:
        return BundleError([f"{self._path}: {message}"])

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (fewer only at the end of the archive)."""
        while len(self._buffer) < size:
            if not self._fill(size - len(self._buffer)):
                break
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _fill(self, wanted: int) -> bool:
        if self._inflate is None:
            data = self._handle.read(min(wanted, _CHUNK))
            self.compressed += len(data)
        else:
            if self._between:
                # Between gzip members: zero padding may follow the last (gzip allows it).
                self._pending = self._pending.lstrip(b"\0")
            if not self._pending:
                self._pending = self._handle.read(_CHUNK)
                self.compressed += len(self._pending)
                # No output yet: the caller asks again, unless the file has ended.
                return bool(self._pending)
            self._between = False
            try:
                data = self._inflate.decompress(self._pending, min(wanted, _CHUNK))
            except zlib.error as exc:
                raise self._refuse(f"not a readable .tar.gz bundle: {exc}") from exc
            self._pending = self._inflate.unconsumed_tail
            if self._inflate.eof:
                # Another gzip member may follow (concatenated .gz files are valid).
                self._pending = self._inflate.unused_data + self._pending
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._between = True
        if not data and self._inflate is None:
            return False
        self.uncompressed += len(data)
        if self.uncompressed > MAX_BUNDLE_BYTES + 2 * _BLOCK * MAX_MEMBERS:
            raise self._refuse(f"archive larger than {MAX_BUNDLE_BYTES} bytes uncompressed")
        if self.uncompressed > RATIO_FLOOR and self.uncompressed > MAX_RATIO * max(
            self.compressed, 1
        ):
            raise self._refuse(f"archive expands more than {MAX_RATIO} times (a compression bomb?)")
        self._buffer += data
        return True

    def exactly(self, size: int, what: str) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise self._refuse(f"archive ends inside {what}")
        return data

    def skip_padding(self, size: int) -> None:
        padding = -size % _BLOCK
        if padding:
            self.exactly(padding, "padding")


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for large numbers
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156])
    blanked = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(blanked)
    if stored == unsigned:
        return True
    # Some old tars summed signed bytes: each byte above 127 counts 256 less.
    return stored == unsigned - 256 * sum(1 for b in blanked if b > 127)


def _pax_records(data: bytes, refuse: Callable[[str], BundleError]) -> dict[str, bytes]:
    """``length key=value\\n`` records of a pax extended header."""
    records: dict[str, bytes] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position, position + 20)
        try:
            length = int(data[position:space]) if space > position else -1
        except ValueError:
            length = -1
        end = position + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise refuse("malformed pax header")
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals:
            raise refuse("malformed pax header")
        records[key.decode("utf-8", "replace")] = value
        position = end
    return records


def _member_name(raw: bytes, refuse: Callable[[str], BundleError]) -> str:
    if len(raw) > MAX_NAME_BYTES:
        raise refuse(f"member name longer than {MAX_NAME_BYTES} bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse("member name is not UTF-8") from exc
    path = PurePosixPath(name)
    if "\0" in name or path.is_absolute() or ".." in path.parts:
        raise refuse(f"unsafe path in archive: {name!r}")
    if len(path.parts) > MAX_DEPTH:
        raise refuse(f"{name}: nested deeper than {MAX_DEPTH} folders")
    return path.as_posix()


def _read_archive(path: Path) -> dict[str, bytes]:
    """The files of a tar archive (gzip-compressed or not), read by a strict reader that
    bounds every header, name and member before reading it (``tarfile`` reads a GNU long
    name or a pax header into memory whatever its size)."""

    def refuse(message: str) -> BundleError:
        return BundleError([f"{path}: {message}"])

    files: dict[str, bytes] = {}
    total = 0
    members = 0
    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise refuse(f"archive larger than {MAX_BUNDLE_BYTES} bytes")
        with path.open("rb") as handle:
            stream = _Stream(path, handle)
            long_name: bytes | None = None
            pax: dict[str, bytes] = {}
            while True:
                header = stream.read(_BLOCK)
                if len(header) < _BLOCK or header == bytes(_BLOCK):
                    if header.strip(b"\0") or long_name is not None or pax:
                        raise refuse("not a readable .tar.gz bundle: it ends inside a member")
                    break
                members += 1
                if members > MAX_MEMBERS:
                    raise refuse(f"more than {MAX_MEMBERS} members in the archive")
                if not _checksum_ok(header):
                    raise refuse(
                        f"not a readable .tar.gz bundle: bad header checksum (member {members})"
                    )
                typeflag = header[156:157]
                size = _octal(header[124:136])
                if typeflag == b"L":
                    if size > MAX_NAME_BYTES:
                        raise refuse(f"a GNU long name of {size} bytes (at most {MAX_NAME_BYTES})")
                    long_name = stream.exactly(size, "a long name").split(b"\0", 1)[0]
                    stream.skip_padding(size)
                    continue
                if typeflag in (b"x", b"g"):
                    if size > MAX_PAX_BYTES:
                        raise refuse(f"a pax header of {size} bytes (at most {MAX_PAX_BYTES})")
                    data = stream.exactly(size, "a pax header")
                    stream.skip_padding(size)
                    if typeflag == b"x":
                        pax = _pax_records(data, refuse)
                    continue
                if typeflag in _REFUSED_TYPES:
                    raise refuse(f"member {members} is {_REFUSED_TYPES[typeflag]} (refused)")
                if typeflag not in _FILE_TYPES and typeflag != b"5":
                    raise refuse(f"member {members} has unsupported tar type {typeflag!r}")
                if "size" in pax:
                    try:
                        size = int(pax["size"])
                    except ValueError as exc:
                        raise refuse("malformed pax size") from exc
                if "path" in pax:
                    raw = pax["path"]
                elif long_name is not None:
                    raw = long_name
                else:
                    raw = header[0:100].split(b"\0", 1)[0]
                    if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix may lead
                        prefix = header[345:500].split(b"\0", 1)[0]
                        raw = prefix + b"/" + raw if prefix else raw
                long_name, pax = None, {}
                name = _member_name(raw, refuse)
                if typeflag == b"5":
                    continue
                if size > MAX_MEMBER_BYTES:
                    raise refuse(f"{name}: larger than {MAX_MEMBER_BYTES} bytes")
                total += size
                if total > MAX_BUNDLE_BYTES:
                    raise refuse(f"archive larger than {MAX_BUNDLE_BYTES} bytes uncompressed")
                key = name.removeprefix("./")
                if key in files:
                    raise refuse(f"{key}: in the archive twice")
                files[key] = stream.exactly(size, name)
                stream.skip_padding(size)
    except OSError as exc:
        raise refuse(f"not a readable .tar.gz bundle: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a number field that is not octal
        raise refuse(f"not a readable .tar.gz bundle: {exc}") from exc
    # A tarball of a directory ("policies/schema.cedarschema"): strip the common folder.
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        files = {name.split("/", 1)[1]: data for name, data in files.items()}
    return {
        name: data
        for name, data in files.items()
        if not any(p in _SKIP_PARTS or p.startswith(".") for p in name.split("/"))
    }


def bundle_version(files: Mapping[str, bytes]) -> str:
    """``sha256:<hex>`` over every file but the signature, in sorted path order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if name == SIGNATURE_FILE:
            continue
        data = files[name]
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def _schema_namespace(schema: cedarpy.Schema) -> tuple[str | None, list[dict[str, Any]]]:
    """The single namespace of the schema's actions (or None) and the action entities."""
    rendered: list[dict[str, Any]] = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    namespaces = {e["uid"]["type"].rpartition("::")[0] for e in rendered}
    namespace = namespaces.pop() if len(namespaces) == 1 else None
    return namespace or None, rendered


def qualify_type(type_name: str, namespace: str | None) -> str:
    """``User`` → ``Docket::User`` when the schema has one namespace."""
    if namespace is None or "::" in type_name:
        return type_name
    return f"{namespace}::{type_name}"


def qualify_refs(value: Any, namespace: str | None) -> Any:
    """Qualify the types inside ``{"__entity": {...}}`` references, recursively."""
    if namespace is None:
        return value
    if isinstance(value, dict):
        ref = value.get("__entity")
        if isinstance(ref, dict) and isinstance(ref.get("type"), str) and len(value) == 1:
            return {"__entity": {**ref, "type": qualify_type(ref["type"], namespace)}}
        return {key: qualify_refs(item, namespace) for key, item in value.items()}
    if isinstance(value, list):
        return [qualify_refs(item, namespace) for item in value]
    return value


def qualify_entities(entities: Any, namespace: str | None) -> Any:
    """Qualify uid, parent and attribute-reference types of Cedar JSON entities."""
    if namespace is None or not isinstance(entities, list):
        return entities
    qualified = []
    for entity in entities:
        if not isinstance(entity, dict):
            qualified.append(entity)
            continue
        entity = dict(entity)
        uid = entity.get("uid")
        if isinstance(uid, dict) and isinstance(uid.get("type"), str):
            entity["uid"] = {**uid, "type": qualify_type(uid["type"], namespace)}
        parents = entity.get("parents")
        if isinstance(parents, list):
            entity["parents"] = [
                {**p, "type": qualify_type(p["type"], namespace)}
                if isinstance(p, dict) and isinstance(p.get("type"), str)
                else p
                for p in parents
            ]
        for field in ("attrs", "tags"):
            if field in entity:
                entity[field] = qualify_refs(entity[field], namespace)
        qualified.append(entity)
    return qualified


def closure(parents: Mapping[UID, list[UID]]) -> dict[UID, frozenset[UID]]:
    """Transitive ancestors of every entity in a parents map (cycles tolerated)."""
    result: dict[UID, frozenset[UID]] = {}
    for start in parents:
        seen: set[UID] = set()
        stack = list(parents.get(start, ()))
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen.add(uid)
            known = result.get(uid)
            if known is not None:
                seen |= known
                continue
            stack.extend(parents.get(uid, ()))
        seen.discard(start)
        result[start] = frozenset(seen)
    return result


def parents_map(entities: list[dict[str, Any]]) -> dict[UID, list[UID]]:
    """uid → direct parents, from Cedar JSON entities."""
    return {
        (e["uid"]["type"], e["uid"]["id"]): [(p["type"], p["id"]) for p in e.get("parents", [])]
        for e in entities
    }


_UID_IN_MESSAGE = re.compile(r'::"((?:[^"\\]|\\.)*)"')


def _entity_error_line(text: str, message: str) -> int:
    for match in _UID_IN_MESSAGE.finditer(message):
        needle = json.dumps(match.group(1))
        for number, line in enumerate(text.splitlines(), start=1):
            if needle in line:
                return number
    return 1


def _element_lines(text: str) -> list[int]:
    """The line each element of a top-level JSON array starts on."""
    decoder = json.JSONDecoder()
    start = text.find("[")
    lines: list[int] = []
    if start < 0:
        return lines
    position = start + 1
    while position < len(text):
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            break
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        lines.append(text.count("\n", 0, position) + 1)
        position = end
    return lines


def _entity_problems(
    text: str, entities: list[dict[str, Any]], schema: cedarpy.Schema, message: str
) -> list[str]:
    """Place an entity-store error: Cedar's message may not name the entity, so check
    the entities one by one and report each one that fails on its own line."""
    problems = []
    lines = _element_lines(text)
    for position, entity in enumerate(entities):
        try:
            cedarpy.Entities.from_json_str(json.dumps([entity]), schema)
        except ValueError as exc:
            uid = entity.get("uid") if isinstance(entity, dict) else None
            name = f'{uid.get("type")}::"{uid.get("id")}"' if isinstance(uid, dict) else "?"
            detail = str(exc) if name in str(exc) else f"{name}: {exc}"
            line = lines[position] if position < len(lines) else _entity_error_line(text, name)
            problems.append(f"{ENTITIES_FILE}:{line}: {detail}")
    return problems or [f"{ENTITIES_FILE}:{_entity_error_line(text, message)}: {message}"]


@dataclass(frozen=True, slots=True)
class DataLabels:
    """What the audit log and the residency report need to know about data."""

    classification: str
    residency: tuple[str, ...]


def data_labels(attrs: Mapping[str, Any]) -> DataLabels | None:
    """An entity's ``classification`` (an entity reference) and ``residency`` (a set of
    jurisdictions), when it has a classification."""
    ref = attrs.get("classification")
    if isinstance(ref, Mapping):
        ref = ref.get("__entity", ref)
    if not isinstance(ref, Mapping) or not isinstance(ref.get("id"), str):
        return None
    residency = attrs.get("residency", ())
    if not isinstance(residency, list | tuple):
        residency = ()
    return DataLabels(ref["id"], tuple(sorted(str(j) for j in residency)))


ForbidErrors = Literal["deny", "cedar"]
FORBID_ERRORS: tuple[ForbidErrors, ...] = ("deny", "cedar")
_SETTINGS: dict[str, tuple[str, ...]] = {
    "bundle": ("name", "revision"),
    "evaluation": ("forbid_errors",),
}
MAX_REVISION = 2**63 - 1
_BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class BundleSettings:
    """What ``bundle.toml`` says: the bundle's name and revision (both or neither) and
    what an erroring ``forbid`` does."""

    name: str | None = None
    revision: int | None = None
    forbid_errors: ForbidErrors = "deny"


def _toml_line(text: str, key: str, table: str | None = None) -> int:
    """The line a key (or, without ``table``, a table header) is written on; 1 if unsure."""
    if table is None:
        pattern = re.compile(rf"^\s*\[\s*{re.escape(key)}\s*\]")
    else:
        pattern = re.compile(rf"^\s*(?:{re.escape(table)}\s*\.\s*)?{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1


def _setting_problem(table: str, key: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``table.key``, or None."""
    if table == "evaluation":
        if value not in FORBID_ERRORS:
            choices = " or ".join(f'"{choice}"' for choice in FORBID_ERRORS)
            return f"{table}.{key}: {value!r} is not {choices}"
    elif key == "name":
        if not isinstance(value, str) or not _BUNDLE_NAME.fullmatch(value):
            return (
                f"{table}.{key}: {value!r} is not a name (letters, digits, '.', '_', '-'; "
                "at most 64)"
            )
    elif type(value) is not int or not 1 <= value <= MAX_REVISION:
        return f"{table}.{key}: {value!r} is not a whole number from 1 to {MAX_REVISION}"
    return None


def parse_bundle_settings(text: str) -> tuple[BundleSettings, list[str]]:
    """Read ``bundle.toml``: its settings (defaults for what it leaves out) and every
    ``bundle.toml:line: message`` problem (unknown table, key or value; a name without a
    revision or the reverse)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or 1
        return BundleSettings(), [f"{SETTINGS_FILE}:{line}: {getattr(exc, 'msg', str(exc))}"]
    problems: list[str] = []
    found: dict[str, Any] = {}
    for table, values in data.items():
        known = _SETTINGS.get(table)
        if known is None or not isinstance(values, dict):
            expected = ", ".join(f"[{name}]" for name in _SETTINGS)
            problems.append(
                f"{SETTINGS_FILE}:{_toml_line(text, table)}: unknown setting {table!r} "
                f"(expected {expected})"
            )
            continue
        for key, value in values.items():
            line = _toml_line(text, key, table)
            if key not in known:
                problems.append(
                    f"{SETTINGS_FILE}:{line}: unknown key {table}.{key} "
                    f"(expected one of: {', '.join(known)})"
                )
            elif (problem := _setting_problem(table, key, value)) is not None:
                problems.append(f"{SETTINGS_FILE}:{line}: {problem}")
            else:
                found[key] = value
    if ("name" in found) != ("revision" in found):
        missing = "revision" if "name" in found else "name"
        problems.append(
            f"{SETTINGS_FILE}:{_toml_line(text, 'bundle')}: [bundle] needs a {missing} too "
            "(name and revision go together)"
        )
        found.pop("name", None)
        found.pop("revision", None)
    return BundleSettings(**found), problems


class PolicyBundle:
    """A loaded, validated, indexed policy bundle. Immutable once built.

    Build one with :meth:`load` (a path) or :meth:`from_files` (in memory). Both raise
    :class:`~engine.BundleError` listing every problem as ``file:line: message``.
    """

    source: str
    version: str
    files: Mapping[str, bytes]
    schema: cedarpy.Schema
    namespace: str | None
    policies: tuple[Policy, ...]
    sites: tuple[Site, ...]
    reference: ReferenceValues
    signed_by: str | None
    forbid_errors: ForbidErrors
    """What an erroring ``forbid`` does: ``"deny"`` (default) or ``"cedar"`` (skipped)."""
    name: str | None
    """``[bundle] name`` of ``bundle.toml``: which bundle this is a revision of."""
    revision: int | None
    """``[bundle] revision``: grows with each release; a replica refuses a lower one."""
    entities: cedarpy.Entities
    index: PolicyIndex
    context_types: Mapping[UID, Type]
    """Each action's context type, names resolved (:func:`~engine._core.schema_json.context_types`);
    empty when the schema could not be read into its JSON form (Cedar's messages then stand)."""
    _by_id: dict[str, Policy]
    _ancestors: dict[UID, frozenset[UID]]
    _heights: dict[UID, int]
    _spiffe: dict[UID, UID]
    _labels: dict[UID, DataLabels]

    @classmethod
    def load(cls, path: str | Path, *, public_key: VerifierKey | None = None) -> PolicyBundle:
        """Load a bundle directory or ``.tar.gz``; verify its signature if a key is given."""
        path = Path(path)
        return cls.from_files(read_bundle_files(path), source=str(path), public_key=public_key)

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, bytes],
        *,
        source: str = "<memory>",
        public_key: VerifierKey | None = None,
    ) -> PolicyBundle:
        """Build a bundle from ``{relative path: bytes}``."""
        self = cls.__new__(cls)
        self.source = source
        self.files = dict(files)
        self.version = bundle_version(files)
        self.signed_by = None
        problems: list[str] = []
        if public_key is not None:
            self.signed_by = verify_bundle(self.version, files.get(SIGNATURE_FILE), public_key)

        texts: dict[str, str] = {}
        for name, data in files.items():
            if name in (SCHEMA_FILE, ENTITIES_FILE, SITES_FILE, SETTINGS_FILE) or _is_policy(name):
                try:
                    texts[name] = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problems.append(f"{name}:1: not UTF-8 text ({exc.reason})")

        schema: cedarpy.Schema | None = None
        if SCHEMA_FILE not in files:
            problems.append(f"{SCHEMA_FILE}:1: missing; a bundle needs a Cedar schema")
        elif SCHEMA_FILE in texts:
            try:
                schema = cedarpy.Schema.from_str(texts[SCHEMA_FILE])
            except ValueError as exc:
                line = error_line(texts[SCHEMA_FILE], cedarpy.Schema.from_str, str(exc))
                problems.append(f"{SCHEMA_FILE}:{line}: {exc}")

        policy_texts = {name: text for name, text in texts.items() if _is_policy(name)}
        if not policy_texts and not any(_is_policy(name) for name in files):
            problems.append(f"{source}: no *.cedar policy files")
        policies, policy_problems = parse_policy_files(policy_texts)
        problems.extend(policy_problems)
        if schema is not None and not policy_problems and policies:
            problems.extend(_validate(policy_texts, policies, schema))

        sites: tuple[Site, ...] = ()
        if SITES_FILE in texts:
            sites, site_problems = parse_sites(SITES_FILE, texts[SITES_FILE])
            problems.extend(site_problems)
        self.sites = sites

        settings = BundleSettings()
        if SETTINGS_FILE in texts:
            settings, setting_problems = parse_bundle_settings(texts[SETTINGS_FILE])
            problems.extend(setting_problems)
        self.forbid_errors = settings.forbid_errors
        self.name, self.revision = settings.name, settings.revision

        self.reference = ReferenceValues()
        try:
            self.reference = parse_reference(
                {name: data for name, data in files.items() if _is_reference(name)}
            )
        except ReferenceError as exc:
            problems.extend(exc.problems)

        namespace, actions = (None, []) if schema is None else _schema_namespace(schema)
        self.namespace = namespace
        entity_list: list[dict[str, Any]] = []
        if ENTITIES_FILE in texts:
            try:
                loaded = json.loads(texts[ENTITIES_FILE])
            except json.JSONDecodeError as exc:
                problems.append(f"{ENTITIES_FILE}:{exc.lineno}: invalid JSON: {exc.msg}")
            else:
                if isinstance(loaded, list):
                    entity_list = qualify_entities(loaded, namespace)
                else:
                    problems.append(f"{ENTITIES_FILE}:1: expected a JSON array of entities")
        site_type = qualify_type("Site", namespace)
        entity_list.extend(
            {"uid": {"type": site_type, "id": s.name}, "attrs": s.cedar_attrs(), "parents": []}
            for s in sites
        )
        if schema is not None:
            try:
                self.entities = cedarpy.Entities.from_json_str(json.dumps(entity_list), schema)
            except ValueError as exc:
                message = str(exc)
                if SITES_FILE in texts and f'{site_type}::"' in message:
                    problems.append(f"{SITES_FILE}:1: {message}")
                else:
                    problems.extend(
                        _entity_problems(texts.get(ENTITIES_FILE, ""), entity_list, schema, message)
                    )
        if problems:
            raise BundleError(problems)
        assert schema is not None
        self.schema = schema
        described = schema_json(schema)
        self.context_types = (None if described is None else context_types(described)) or {}
        self.policies = tuple(policies)
        self._by_id = {policy.id: policy for policy in policies}
        stored_parents = parents_map([*entity_list, *actions])
        self._ancestors = closure(stored_parents)
        self._heights = heights(stored_parents, lambda _: 1)
        # Keyed by (type, SPIFFE ID): a lookup never changes the type a request names.
        self._spiffe = {
            (entity["uid"]["type"], entity["attrs"]["spiffe_id"]): (
                entity["uid"]["type"],
                entity["uid"]["id"],
            )
            for entity in entity_list
            if isinstance(entity.get("attrs", {}).get("spiffe_id"), str)
        }
        self._labels = {
            (entity["uid"]["type"], entity["uid"]["id"]): labels
            for entity in entity_list
            if (labels := data_labels(entity.get("attrs", {}))) is not None
        }
        action_ancestors = {
            (a["uid"]["type"], a["uid"]["id"]): self._ancestors.get(
                (a["uid"]["type"], a["uid"]["id"]), frozenset()
            )
            for a in actions
        }
        self.index = PolicyIndex(self.policies, action_ancestors)
        return self

    def qualify(self, type_name: str) -> str:
        """A type name with the bundle's namespace added when it has none."""
        return qualify_type(type_name, self.namespace)

    def ancestors(self, uid: UID) -> frozenset[UID]:
        """The transitive parents of a stored entity (empty for unknown ones)."""
        return self._ancestors.get(uid, frozenset())

    def height(self, uid: UID) -> int:
        """Entities on the longest chain from ``uid`` up through the stored hierarchy
        (1 for an entity without stored parents, or not stored)."""
        return self._heights.get(uid, 1)

    def by_spiffe_id(self, type_name: str, spiffe_id: str) -> UID | None:
        """The stored entity *of type* ``type_name`` (fully qualified) whose
        ``spiffe_id`` attribute is this SPIFFE ID, if any. Entities of other types with
        that SPIFFE ID are never returned: a ``User`` stays a ``User``."""
        return self._spiffe.get((type_name, spiffe_id))

    def labels(self, uid: UID) -> DataLabels | None:
        """The classification and residency of a stored entity that has them (Data)."""
        return self._labels.get(uid)

    def policy(self, policy_id: str) -> Policy:
        """The policy with this id. Raises ``KeyError``."""
        return self._by_id[policy_id]

    def site(self, name: str) -> Site | None:
        """The catalog site of this name, if any."""
        for site in self.sites:
            if site.name == name:
                return site
        return None

    def check_jurisdictions(self, field: str, values: Iterable[str]) -> None:
        """Refuse ``values`` (of request field ``field``) that are not jurisdictions of
        the site catalog. Raises :class:`~engine.RequestError` naming the first unknown
        value and the known ones."""
        problem = unknown_jurisdiction(field, values, jurisdictions(self.sites))
        if problem is not None:
            raise RequestError(problem)

    def __repr__(self) -> str:
        return f"<PolicyBundle {self.source} {self.version[:19]} policies={len(self.policies)}>"


def _is_policy(name: str) -> bool:
    return "/" not in name and name.endswith(".cedar")


def _is_reference(name: str) -> bool:
    folder, _, file = name.partition("/")
    return folder == REFERENCE_DIR and "/" not in file and file.endswith(".toml")


_POLICY_PREFIX = re.compile(r"^for policy `([^`]*)`, ")


def _validate(
    texts: Mapping[str, str], policies: list[Policy], schema: cedarpy.Schema
) -> list[str]:
    """Strict schema validation, each error placed at its policy's ``file:line``."""
    joined = "\n".join(texts[name] for name in sorted(texts))
    result = cedarpy.validate_policies(joined, schema)
    if result.validation_passed:
        return []
    by_position = {f"policy{p.position}": p for p in policies}
    problems = []
    for error in result.errors:
        message = _POLICY_PREFIX.sub("", error.error)
        policy = by_position.get(error.policy_id)
        if policy is None:
            problems.append(f"{sorted(texts)[0]}:1: {message}")
        else:
            problems.append(f"{policy.where}: policy {policy.id!r}: {message}")
    return problems
