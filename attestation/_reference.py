"""Reference values: what a device of each class must have measured, one TOML file per class.

A bundle's ``reference/*.toml`` (the default bundle: ``policies/reference/``) each define a
device class::

    class = "dev"            # optional; defaults to the file stem
    description = "…"        # optional
    secure_boot = false      # a match means UEFI secure boot was on (needs PCR 7 below)
    measured_boot = false    # the golden values come from a measured boot
    min_firmware = 0         # optional: the lowest TPM firmware version accepted
    region = "eu"            # optional: copied into the posture
    [pcrs.sha256]            # bank sha1|sha256|sha384|sha512
    0 = "00…00"              # index 0..23 -> hex of the bank's digest size
    [event_log]              # optional: appraise the boot event log (then [pcrs] is
    bank = "sha256"          # optional); the rules are attestation._measured_boot's
    db = ["…"]
    [[event_log.boot]]
    name = "shim"
    digests = ["…", "…"]

A class with an ``[event_log]`` section needs no golden PCR values: the quote must cover
PCRs 0-9 of its bank, the log must replay to them, and its events must pass the section's
rules (:class:`~attestation._measured_boot.EventLogPolicy`); ``measured_boot`` must be
true, and ``secure_boot = true`` requires the log's SecureBoot variable on (no PCR 7 golden
value needed).

:func:`parse_reference` reads such files from bytes (the bundle loader's files) and
:func:`load_reference` from a directory; both raise :class:`ReferenceError` naming the file,
line and field. The verifier appraises against them (``attestation._verifier.appraise_any``:
every class in order of class name, the first that matches); this module knows the posture
only for the formats of the names it fills in (``attestation._posture``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from attestation._errors import ReferenceError
from attestation._measured_boot import LOG_PCRS, EventLogPolicy
from attestation._posture import CLASS_NAME_PATTERN, REGION_PATTERN
from attestation._tpm import HASHES, hash_name

__all__ = [
    "ReferenceClass",
    "ReferenceValues",
    "load_reference",
    "parse_reference",
]

BANKS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {h.name: (h.alg_id, h.digest_size) for h in HASHES.values()}
)
"""PCR bank name -> (TPM_ALG id, digest size in bytes), from the hash table of
attestation._tpm."""

MAX_PCR: Final = 23
SECURE_BOOT_PCR: Final = 7
_INDEX = re.compile(r"0|[1-9][0-9]?")
_HEX = re.compile(r"[0-9a-fA-F]*")
_TOML_LINE = re.compile(r"at line (\d+)")

ClassName = Annotated[str, StringConstraints(strict=True, pattern=CLASS_NAME_PATTERN)]
Region = Annotated[str, StringConstraints(strict=True, pattern=REGION_PATTERN)]


class _FieldProblem(ValueError):
    """A validation problem at a path below the field being validated."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def _bank_values(bank: str, values: Any) -> dict[int, str]:
    if not isinstance(values, Mapping) or not values:
        raise _FieldProblem(("pcrs", bank), "must be a non-empty table of index = hex digest")
    size = BANKS[bank][1]
    out: dict[int, str] = {}
    for key, value in values.items():
        path = ("pcrs", bank, str(key))
        if isinstance(key, bool) or not (
            (isinstance(key, int) and 0 <= key <= MAX_PCR)
            or (isinstance(key, str) and _INDEX.fullmatch(key) and int(key) <= MAX_PCR)
        ):
            raise _FieldProblem(path, f"a PCR index must be a decimal number 0..{MAX_PCR}")
        index = int(key)
        if index in out:
            raise _FieldProblem(path, f"PCR {index} is given twice")
        if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) != 2 * size:
            got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            raise _FieldProblem(path, f"must be {2 * size} hex digits (a {bank} digest), got {got}")
        out[index] = value.lower()
    return out


class ReferenceClass(BaseModel):
    """One device class: golden PCR values and what a match says about the device.

    Built from a ``reference/<class>.toml`` by :func:`parse_reference` (or directly, by field
    name or by the ``class`` alias). Raises pydantic's ValidationError when built directly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True)

    name: ClassName = Field(alias="class")
    description: StrictStr = ""
    secure_boot: StrictBool
    """A match means UEFI secure boot was on; true requires PCR 7 among the golden values."""
    measured_boot: StrictBool
    """The golden values come from a measured boot (false for an unmeasured dev TPM)."""
    min_firmware: StrictInt = Field(default=0, ge=0, lt=2**64)
    region: Region | None = None
    pcrs: dict[str, dict[int, str]] = {}
    """Bank name -> PCR index -> lowercase hex of the golden value."""
    event_log: EventLogPolicy | None = None
    """What the boot event log must show (``attestation._measured_boot``), if appraised."""

    @field_validator("pcrs", mode="before")
    @classmethod
    def _check_pcrs(cls, value: Any) -> dict[str, dict[int, str]]:
        if not isinstance(value, Mapping):
            raise _FieldProblem(("pcrs",), "must be a table of banks, like [pcrs.sha256]")
        banks: dict[str, dict[int, str]] = {}
        for bank, values in value.items():
            if bank not in BANKS:
                raise _FieldProblem(
                    ("pcrs", str(bank)),
                    "unknown PCR bank; expected one of " + ", ".join(BANKS),
                )
            banks[bank] = _bank_values(bank, values)
        if not banks:
            raise _FieldProblem(("pcrs",), "no golden PCR values (an empty reference fails)")
        return banks

    @model_validator(mode="after")
    def _golden_or_event_log(self) -> ReferenceClass:
        if self.event_log is not None:
            if not self.measured_boot:
                raise _FieldProblem(
                    ("measured_boot",), "an [event_log] class is a measured boot: set it true"
                )
            return self
        if not self.pcrs:
            raise _FieldProblem(
                ("pcrs",),
                "a class needs golden PCR values ([pcrs.<bank>]) or an [event_log] section",
            )
        if self.secure_boot and not any(SECURE_BOOT_PCR in v for v in self.pcrs.values()):
            raise _FieldProblem(
                ("secure_boot",),
                f"secure_boot = true needs PCR {SECURE_BOOT_PCR} among the golden values (it "
                "holds the secure boot state) or an [event_log] section",
            )
        return self

    def log_pcrs(self) -> dict[int, frozenset[int]]:
        """TPM_ALG id -> the PCRs a quote must cover for the event log (none without one)."""
        if self.event_log is None:
            return {}
        return {BANKS[self.event_log.bank][0]: frozenset(LOG_PCRS)}

    def golden(self) -> dict[tuple[int, int], bytes]:
        """The golden values as (TPM_ALG id, PCR index) -> digest bytes."""
        return {
            (BANKS[bank][0], index): bytes.fromhex(value)
            for bank, values in self.pcrs.items()
            for index, value in values.items()
        }


class ReferenceValues(BaseModel):
    """Every device class of a bundle, sorted by class name (the order they are tried in).

    Empty when the bundle has no ``reference/``: then no device can be appraised. Raises
    pydantic's ValidationError when two classes share a name and it is built directly
    (:func:`parse_reference` raises :class:`ReferenceError` instead).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: tuple[ReferenceClass, ...] = ()

    @field_validator("classes")
    @classmethod
    def _sorted_unique(cls, value: tuple[ReferenceClass, ...]) -> tuple[ReferenceClass, ...]:
        ordered = tuple(sorted(value, key=lambda c: c.name))
        for before, after in pairwise(ordered):
            if before.name == after.name:
                raise ValueError(f"duplicate reference class {after.name!r}")
        return ordered

    def names(self) -> tuple[str, ...]:
        """The class names, in order."""
        return tuple(c.name for c in self.classes)

    def get(self, name: str) -> ReferenceClass | None:
        """The class of this name, if any."""
        return next((c for c in self.classes if c.name == name), None)

    def required_pcrs(self) -> dict[int, frozenset[int]]:
        """TPM_ALG id -> the PCR indices a quote must cover: the union of every class's
        golden PCRs and, for a class with an ``[event_log]``, PCRs 0-9 of its bank (what
        ``finish_attestation(required_pcrs=…)`` takes)."""
        required: dict[int, set[int]] = {}
        for reference in self.classes:
            for alg, index in reference.golden():
                required.setdefault(alg, set()).add(index)
            for alg, indices in reference.log_pcrs().items():
                required.setdefault(alg, set()).update(indices)
        return {alg: frozenset(indices) for alg, indices in sorted(required.items())}

    def pcr_selection(self) -> list[tuple[str, list[int]]]:
        """:meth:`required_pcrs` for the wire: ``[(hash name, sorted indices)]`` by bank."""
        return [(hash_name(alg), sorted(idx)) for alg, idx in self.required_pcrs().items()]


# --- parsing -------------------------------------------------------------------------------


def _line_of(text: str, path: tuple[str, ...]) -> int:
    """Best effort: the line where ``path`` (a top-level key, or pcrs.bank[.index]) is set."""
    lines = text.splitlines()

    def find(pattern: str, start: int = 0, *, in_table: bool = False) -> int | None:
        regex = re.compile(pattern)
        for number in range(start, len(lines)):
            if in_table and lines[number].lstrip().startswith("["):
                return None
            if regex.match(lines[number]):
                return number + 1
        return None

    def first(*found: int | None) -> int:
        return next((line for line in found if line is not None), 1)

    if not path:
        return 1
    head = re.escape(path[0])
    if path[0] != "pcrs" or len(path) < 2:
        return first(find(rf'^\s*"?{head}"?\s*='), find(rf"^\s*\[\s*{head}\b"))
    bank = re.escape(path[1])
    header = find(rf'^\s*\[\s*pcrs\s*\.\s*"?{bank}"?\s*\]')
    if header is None:
        return first(find(rf'^\s*(pcrs\s*\.\s*)?"?{bank}"?\s*[.=]'), find(r"^\s*\[?\s*pcrs"))
    entry = None
    if len(path) >= 3:
        entry = find(rf'^\s*"?{re.escape(path[2])}"?\s*=', header, in_table=True)
    return first(entry, header)


_NAME_RULE: Final = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _problems(name: str, text: str, exc: ValidationError, *, stem_class: bool) -> list[str]:
    problems = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        message = error["msg"].removeprefix("Value error, ")
        if isinstance(cause, _FieldProblem):
            path, message = cause.path, str(cause)
        elif error["type"] == "string_pattern_mismatch" and path[0] in ("class", "region"):
            message = f"{error['input']!r} {_NAME_RULE}"
            if path == ("class",) and stem_class:
                message += " (the class name defaults to the file name; set class = …)"
        field = ".".join(path) or "class"
        if not message.startswith(f"{field} "):  # a message that names its field already
            message = f"{field}: {message}"
        problems.append(f"{name}:{_line_of(text, path)}: {message}")
    return problems


def _parse_one(name: str, data: bytes) -> tuple[ReferenceClass | None, list[str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [f"{name}:1: not UTF-8 text ({exc.reason})"]
    try:
        table: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = match.group(1) if match else "1"
        return None, [f"{name}:{line}: invalid TOML: {exc}"]
    stem_class = "class" not in table
    table.setdefault("class", PurePath(name).stem)
    try:
        return ReferenceClass.model_validate(table, by_alias=True, by_name=False), []
    except ValidationError as exc:
        return None, _problems(name, text, exc, stem_class=stem_class)


def parse_reference(files: Mapping[str, bytes]) -> ReferenceValues:
    """Parse reference classes from ``{file name: TOML bytes}`` (every file given is read).

    Raises :class:`ReferenceError` listing every problem as ``file:line: field: message``:
    invalid UTF-8 or TOML, an unknown or missing field, a malformed PCR bank, index or
    digest, ``secure_boot = true`` without PCR 7, two files defining the same class.
    """
    problems: list[str] = []
    classes: list[ReferenceClass] = []
    defined_in: dict[str, str] = {}
    for name in sorted(files):
        parsed, found = _parse_one(name, files[name])
        problems.extend(found)
        if parsed is None:
            continue
        if parsed.name in defined_in:
            text = files[name].decode("utf-8")
            line = _line_of(text, ("class",))
            problems.append(
                f"{name}:{line}: class: {parsed.name!r} is already defined in "
                f"{defined_in[parsed.name]}"
            )
            continue
        defined_in[parsed.name] = name
        classes.append(parsed)
    if problems:
        raise ReferenceError(problems)
    return ReferenceValues(classes=tuple(classes))


def load_reference(directory: Path) -> ReferenceValues:
    """Parse every ``*.toml`` directly in ``directory`` (none, or no directory: empty).

    Raises :class:`ReferenceError` (also when a file cannot be read).
    """
    files: dict[str, bytes] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            try:
                files[str(path)] = path.read_bytes()
            except OSError as exc:
                raise ReferenceError([f"{path}:1: cannot read: {exc.strerror or exc}"]) from exc
    return parse_reference(files)
