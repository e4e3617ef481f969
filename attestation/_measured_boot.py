"""Measured-boot appraisal: judge the events of a boot event log that replayed to the quote.

A device class may carry an ``[event_log]`` section (:class:`EventLogPolicy`), data in the
bundle the way Keylime's measured-boot policies are. The verifier first parses the log and
checks it replays to the quoted PCRs of the class's bank (``attestation._eventlog``); then
:func:`appraise_boot` applies the rules below, in this order, and refuses at the first that
fails, naming it (:class:`~attestation.EvidenceError`). Only events of PCRs 0-7 are read
(the quote covers 0-9 of the bank, so each of them is proven by the replay). The replay
proves digests, not data: every event whose data a rule reads (a separator, an action, a
Secure Boot variable; the CRTM version for rule 6) must have a digest, in the class's
bank, of that data (``check_event_data``), or the log is refused, so data edited under a
kept digest cannot pass. Firmware that measures a variable's value alone (TPM 1.2 era
SHA-1 logs) leaves its name unproven: such a log is refused by a class that reads it.

1. **Unexpected events.** An event type the parser does not know (``EV_UNKNOWN_…``); an
   EV_SEPARATOR whose data is not four zero bytes (``01000000`` is the firmware's error
   separator); an EV_EFI_ACTION whose text is not one of :data:`STANDARD_ACTIONS` or the
   class's ``allowed_actions``. This refuses, among others, ``UEFI Debug Mode`` and
   ``DMA Protection Disabled`` (PCR 7: firmware in debug mode, DMA protection off). A
   Secure Boot variable (SecureBoot, PK, KEK, db, dbx) measured twice in PCR 7 is refused.
2. **Secure Boot.** The SecureBoot variable (EFI global variable GUID, measured as
   EV_EFI_VARIABLE_DRIVER_CONFIG in PCR 7) is on when its data is the one byte ``01``. The
   class's ``secure_boot = true`` requires it on; the posture's ``secure_boot`` says what
   the log showed either way.
3. **Keys.** ``pk``, ``kek``, ``db``, ``dbx``: SHA-256 digests (hex) of the variable's data
   as measured, one of which it must have; ``pk_entries``, ``kek_entries``,
   ``db_entries``: SHA-256 digests of signature data (a certificate's DER, or a hash) every
   EFI_SIGNATURE_LIST entry of the variable must be among. A rule on a variable the log
   never measured fails.
4. **dbx revision.** ``dbx_revisions`` gives revision numbers to dbx contents (SHA-256 of
   the dbx data → number); ``min_dbx_revision`` requires the measured dbx to be a known
   one of at least that revision. The posture's ``dbx_revision`` is the measured dbx's
   number (none when the class does not know it).
5. **Boot applications.** ``[[event_log.boot]]`` stages (``name``, ``digests``): the
   EV_EFI_BOOT_SERVICES_APPLICATION events of PCR 4, in order, one per stage, each with a
   digest (in the class's bank) among its stage's. Lists, so a fleet rolls shim, boot
   loader and kernel without editing PCR values. The posture's ``boot_chain`` is SHA-256
   over those digests in order (hex), whatever the class says.
6. **Firmware.** ``crtm_versions`` (exact texts allowed) or ``min_crtm_version`` (dotted
   numbers, compared with the first dotted number in the text) of the EV_S_CRTM_VERSION
   event of PCR 0, whose digest must be of its UTF-16 text. The posture's ``crtm_version``
   is that text (printable ASCII only); none when there is no such event, it is not text
   (some firmware write a binary version) or its digest is of something else (as some
   firmware measure it), which refuses only a class with a firmware rule.

:func:`derive_boot_policy` proposes an ``[event_log]`` section from known-good logs, the way
Keylime's ``create_mb_refstate`` does (``docket policy derive-boot``).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

from attestation._errors import EventLogError, EvidenceError
from attestation._eventlog import (
    Event,
    EventLog,
    check_event_data,
    efi_variable,
    event_text,
)
from attestation._posture import CRTM_VERSION_PATTERN

__all__ = [
    "APPRAISED_PCRS",
    "LOG_PCRS",
    "STANDARD_ACTIONS",
    "BootFacts",
    "BootStage",
    "EventLogPolicy",
    "appraise_boot",
    "boot_class_toml",
    "derive_boot_policy",
]

LOG_PCRS: Final = tuple(range(10))
"""The PCRs of the class's bank a quote must cover for a class with an ``[event_log]``."""
APPRAISED_PCRS: Final = frozenset(range(8))
"""The PCRs whose events the appraisal reads."""
STANDARD_ACTIONS: Final = frozenset(
    {
        "Calling EFI Application from Boot Option",
        "Returning from EFI Application from Boot Option",
        "Exit Boot Services Invocation",
        "Exit Boot Services Returned with Failure",
        "Exit Boot Services Returned with Success",
    }
)
"""The EV_EFI_ACTION texts of the TCG PC Client Platform Firmware Profile's boot flow;
any other (``UEFI Debug Mode``, ``DMA Protection Disabled``, …) is refused unless the class
lists it in ``allowed_actions``."""

EV_SEPARATOR: Final = 0x4
EV_S_CRTM_VERSION: Final = 0x8
EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003
EV_EFI_ACTION: Final = 0x80000007
EFI_GLOBAL_VARIABLE: Final = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE: Final = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
SECURE_BOOT_VARIABLES: Final[Mapping[str, str]] = {
    "SecureBoot": EFI_GLOBAL_VARIABLE,
    "PK": EFI_GLOBAL_VARIABLE,
    "KEK": EFI_GLOBAL_VARIABLE,
    "db": EFI_IMAGE_SECURITY_DATABASE,
    "dbx": EFI_IMAGE_SECURITY_DATABASE,
}
_SEPARATOR: Final = bytes(4)
_BANK_SIZES: Final = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
_DOTTED = re.compile(r"\d+(?:\.\d+)*")
_PRINTABLE = re.compile(CRTM_VERSION_PATTERN)

Sha256Hex = Annotated[
    str, Field(strict=True, pattern=r"^[0-9a-fA-F]{64}$"), AfterValidator(str.lower)
]
Digests = tuple[Sha256Hex, ...]


class BootStage(BaseModel):
    """One boot application's place in the chain: its name and the digests allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")]
    digests: tuple[
        Annotated[str, Field(strict=True, pattern=r"^[0-9a-fA-F]+$"), AfterValidator(str.lower)],
        ...,
    ] = Field(min_length=1)


class EventLogPolicy(BaseModel):
    """A class's ``[event_log]`` section: what its devices' boot event logs must show (the
    rules of the module docstring). Digests are stored lowercase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bank: Literal["sha1", "sha256", "sha384", "sha512"] = "sha256"
    """The PCR bank the log must replay to (its quoted PCRs 0-9)."""
    pk: Digests = ()
    kek: Digests = ()
    db: Digests = ()
    dbx: Digests = ()
    pk_entries: Digests = ()
    kek_entries: Digests = ()
    db_entries: Digests = ()
    dbx_revisions: dict[Sha256Hex, Annotated[int, Field(strict=True, ge=0, lt=2**32)]] = {}
    min_dbx_revision: StrictInt | None = Field(default=None, ge=0, lt=2**32)
    boot: tuple[BootStage, ...] = ()
    crtm_versions: tuple[Annotated[str, Field(strict=True, pattern=CRTM_VERSION_PATTERN)], ...] = ()
    min_crtm_version: Annotated[str, Field(strict=True, pattern=r"^\d+(\.\d+)*$")] | None = None
    allowed_actions: tuple[StrictStr, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> EventLogPolicy:
        size = 2 * _BANK_SIZES[self.bank]
        for number, stage in enumerate(self.boot, start=1):
            for digest in stage.digests:
                if len(digest) != size:
                    raise ValueError(
                        f"boot stage {number} ({stage.name}): {digest[:16]}… is not a "
                        f"{self.bank} digest ({size} hex digits)"
                    )
        if self.min_dbx_revision is not None and not self.dbx_revisions:
            raise ValueError("min_dbx_revision needs dbx_revisions (dbx digest = revision)")
        if self.crtm_versions and self.min_crtm_version is not None:
            raise ValueError("give crtm_versions or min_crtm_version, not both")
        return self

    def digests_of(self, name: str) -> tuple[str, ...]:
        """The allowed digests of the variable ``name`` (PK, KEK, db, dbx), lowercase."""
        return tuple(getattr(self, name.lower()))

    def entries_of(self, name: str) -> tuple[str, ...]:
        """The allowed signature-data digests of the variable ``name``, lowercase."""
        return tuple(getattr(self, f"{name.lower()}_entries", ()))


@dataclass(frozen=True, slots=True)
class BootFacts:
    """What an appraised log established (the posture's boot facts)."""

    secure_boot: bool
    boot_chain: str | None
    dbx_revision: int | None
    crtm_version: str | None


@dataclass(slots=True)
class _Seen:
    """What one pass over the log found."""

    variables: dict[str, bytes]
    applications: list[bytes]
    crtm: Event | None


def _where(event: Event) -> str:
    return f"event {event.index} ({event.type_name}, PCR {event.pcr})"


_DATA_READ: Final[Mapping[int, frozenset[int]]] = {
    EV_SEPARATOR: APPRAISED_PCRS,
    EV_EFI_ACTION: APPRAISED_PCRS,
    EV_EFI_VARIABLE_DRIVER_CONFIG: frozenset({7}),
}
"""Event type -> the PCRs in which the rules read its data (so its digest must be of it).
The CRTM version is read by rule 6 alone (see :func:`_crtm`)."""


def _proven(event: Event, bank: str) -> None:
    try:
        check_event_data(event, bank)
    except EventLogError as exc:
        raise EvidenceError(str(exc)) from exc


def _text(event: Event) -> str:
    try:
        return event_text(event)
    except EventLogError as exc:
        raise EvidenceError(f"{_where(event)}: unreadable text: {exc}") from exc


def _read(log: EventLog, policy: EventLogPolicy) -> _Seen:
    """Rule 1, and what the later rules need."""
    allowed_actions = STANDARD_ACTIONS | set(policy.allowed_actions)
    seen = _Seen({}, [], None)
    for event in log.events:
        if event.pcr not in APPRAISED_PCRS:
            continue
        if event.type_name.startswith("EV_UNKNOWN"):
            raise EvidenceError(f"{_where(event)}: an event type the appraisal does not know")
        if event.pcr in _DATA_READ.get(event.type, frozenset()):
            _proven(event, policy.bank)
        if event.type == EV_SEPARATOR and event.data != _SEPARATOR:
            raise EvidenceError(
                f"{_where(event)}: separator {event.data.hex()} (not 00000000: 01000000 is "
                "the firmware's error separator)"
            )
        if event.type == EV_EFI_ACTION:
            text = _text(event)
            if text not in allowed_actions:
                raise EvidenceError(f"{_where(event)}: unexpected action {text[:80]!r}")
        elif event.type == EV_EFI_VARIABLE_DRIVER_CONFIG and event.pcr == 7:
            _variable(event, seen.variables)
        elif event.type == EV_EFI_BOOT_SERVICES_APPLICATION and event.pcr == 4:
            digest = event.digests.get(policy.bank)
            if digest is None:
                raise EvidenceError(f"{_where(event)}: no {policy.bank} digest")
            seen.applications.append(digest)
        elif event.type == EV_S_CRTM_VERSION and event.pcr == 0 and seen.crtm is None:
            seen.crtm = event
    return seen


def _variable(event: Event, variables: dict[str, bytes]) -> None:
    try:
        measured = efi_variable(event)
    except EventLogError as exc:
        raise EvidenceError(f"{_where(event)}: {exc}") from exc
    guid = str(measured.guid).lower()
    if SECURE_BOOT_VARIABLES.get(measured.name) != guid:
        return
    if measured.name in variables:
        raise EvidenceError(f"{_where(event)}: {measured.name} is measured twice")
    variables[measured.name] = bytes(measured.data)


def _signature_data(name: str, data: bytes) -> list[bytes]:
    """The SignatureData of every entry of the EFI_SIGNATURE_LISTs in ``data``."""
    entries: list[bytes] = []
    offset = 0
    try:
        while offset < len(data):
            list_size, header_size, size = struct.unpack_from("<III", data, offset + 16)
            end = offset + list_size
            start = offset + 28 + header_size
            if size < 16 or end > len(data) or start > end or (end - start) % size:
                raise ValueError("sizes do not add up")
            entries += [data[at + 16 : at + size] for at in range(start, end, size)]
            offset = end
    except (struct.error, ValueError) as exc:
        raise EvidenceError(f"{name} is not a well-formed EFI_SIGNATURE_LIST: {exc}") from exc
    return entries


def _check_keys(policy: EventLogPolicy, variables: Mapping[str, bytes]) -> None:
    """Rule 3."""
    for name in ("PK", "KEK", "db", "dbx"):
        allowed, entries = policy.digests_of(name), policy.entries_of(name)
        if not (allowed or entries):
            continue
        data = variables.get(name)
        if data is None:
            raise EvidenceError(f"{name} was not measured (PCR 7) and the class names it")
        digest = hashlib.sha256(data).hexdigest()
        if allowed and digest not in allowed:
            raise EvidenceError(f"{name} (sha256 {digest}) is not one the class allows")
        for entry in _signature_data(name, data) if entries else ():
            entry_digest = hashlib.sha256(entry).hexdigest()
            if entry_digest not in entries:
                raise EvidenceError(
                    f"{name} holds an entry the class does not allow: {entry_digest}"
                )


def _dbx_revision(policy: EventLogPolicy, variables: Mapping[str, bytes]) -> int | None:
    """Rule 4: the measured dbx's revision (None if unknown), refused below the minimum."""
    data = variables.get("dbx")
    revisions = policy.dbx_revisions
    digest = None if data is None else hashlib.sha256(data).hexdigest()
    revision = None if digest is None else revisions.get(digest)
    if policy.min_dbx_revision is not None:
        if digest is None:
            raise EvidenceError("dbx was not measured (PCR 7) and the class needs a revision")
        if revision is None:
            raise EvidenceError(f"dbx (sha256 {digest}) is not a revision the class knows")
        if revision < policy.min_dbx_revision:
            raise EvidenceError(
                f"dbx revision {revision} is below the minimum {policy.min_dbx_revision}"
            )
    return revision


def _check_boot(policy: EventLogPolicy, applications: Sequence[bytes]) -> None:
    """Rule 5."""
    if not policy.boot:
        return
    if len(applications) != len(policy.boot):
        names = ", ".join(stage.name for stage in policy.boot)
        raise EvidenceError(
            f"{len(applications)} boot applications were measured (PCR 4); the class expects "
            f"{len(policy.boot)} ({names})"
        )
    for number, (stage, digest) in enumerate(zip(policy.boot, applications, strict=True), 1):
        if digest.hex() not in stage.digests:
            raise EvidenceError(
                f"boot application {number} ({stage.name}) {policy.bank} {digest.hex()} is not "
                "one the class allows"
            )


def _version(text: str) -> tuple[int, ...] | None:
    found = _DOTTED.search(text)
    return None if found is None else tuple(int(part) for part in found.group().split("."))


def _crtm_text(crtm: Event | None, bank: str) -> tuple[str | None, str]:
    """The CRTM version's text, or None and why not: absent, its digest not of its data
    (some firmware measure the version elsewhere), or not text (some write a binary
    version)."""
    if crtm is None:
        return None, "no EV_S_CRTM_VERSION event (PCR 0)"
    try:
        check_event_data(crtm, bank)
        return event_text(crtm), ""
    except EventLogError as exc:
        return None, f"the EV_S_CRTM_VERSION event cannot be read: {exc}"


def _crtm(policy: EventLogPolicy, crtm: Event | None) -> str | None:
    """Rule 6: the firmware version text, refused when not allowed. Without a firmware
    rule, a version that cannot be read is no refusal: the posture has none."""
    text, why = _crtm_text(crtm, policy.bank)
    if policy.crtm_versions or policy.min_crtm_version is not None:
        if text is None:
            raise EvidenceError(f"{why}, and the class names a firmware version")
        if policy.crtm_versions and text not in policy.crtm_versions:
            raise EvidenceError(f"firmware version {text[:80]!r} is not one the class allows")
        if policy.min_crtm_version is not None:
            got, least = _version(text), _version(policy.min_crtm_version)
            if got is None or least is None:
                raise EvidenceError(f"firmware version {text[:80]!r} has no number to compare")
            width = max(len(got), len(least))
            if got + (0,) * (width - len(got)) < least + (0,) * (width - len(least)):
                raise EvidenceError(
                    f"firmware version {text[:80]!r} is below the minimum {policy.min_crtm_version}"
                )
    return text if text is not None and _PRINTABLE.match(text) else None


def appraise_boot(log: EventLog, policy: EventLogPolicy, *, secure_boot: bool) -> BootFacts:
    """Apply the rules of the module docstring, in order, to a log that has replayed to
    the quote (the caller's check); ``secure_boot`` is the class's (rule 2). Returns the
    boot facts, or raises EvidenceError naming the first rule that fails."""
    seen = _read(log, policy)
    on = seen.variables.get("SecureBoot") == b"\x01"
    if secure_boot and not on:
        state = seen.variables.get("SecureBoot")
        raise EvidenceError(
            "Secure Boot is off: the SecureBoot variable was not measured (PCR 7)"
            if state is None
            else f"Secure Boot is off (SecureBoot = {state.hex() or 'empty'})"
        )
    _check_keys(policy, seen.variables)
    revision = _dbx_revision(policy, seen.variables)
    _check_boot(policy, seen.applications)
    chain = hashlib.sha256(b"".join(seen.applications)).hexdigest() if seen.applications else None
    return BootFacts(on, chain, revision, _crtm(policy, seen.crtm))


# --- deriving a policy from known-good logs --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Derived:
    """A proposed ``[event_log]`` section, and what the logs had in common (for review)."""

    policy: EventLogPolicy
    secure_boot: bool
    """Every log had Secure Boot on (the class's ``secure_boot`` to propose)."""
    logs: int


def derive_boot_policy(logs: Sequence[EventLog], bank: str = "sha256") -> Derived:
    """The ``[event_log]`` section that admits exactly what ``logs`` show: the digests of
    PK, KEK, db and dbx seen, each boot stage's digests (the logs must agree on the number
    of boot applications), the firmware versions, and the non-standard actions. Raises
    EvidenceError when there is no log, when a log breaks rule 1 with a separator or an
    unknown event, or when the logs have different numbers of boot applications."""
    if not logs:
        raise EvidenceError("no event log to derive a policy from")
    permissive = EventLogPolicy.model_validate({"bank": bank})
    variables: dict[str, list[str]] = {"PK": [], "KEK": [], "db": [], "dbx": []}
    stages: list[list[str]] = []
    versions: list[str] = []
    actions: list[str] = []
    secure = True
    for log in logs:
        extra = [
            _text(e)
            for e in log.events
            if e.type == EV_EFI_ACTION
            and e.pcr in APPRAISED_PCRS
            and _text(e) not in STANDARD_ACTIONS
        ]
        actions += [a for a in extra if a not in actions]
        seen = _read(log, permissive.model_copy(update={"allowed_actions": tuple(actions)}))
        secure = secure and seen.variables.get("SecureBoot") == b"\x01"
        for name, found in variables.items():
            if name in seen.variables:
                value = hashlib.sha256(seen.variables[name]).hexdigest()
                found += [value] if value not in found else []
        if stages and len(stages) != len(seen.applications):
            raise EvidenceError(
                f"the logs disagree on the number of boot applications ({len(stages)} and "
                f"{len(seen.applications)}): derive each kind of machine apart"
            )
        stages = stages or [[] for _ in seen.applications]
        for stage, application in zip(stages, seen.applications, strict=True):
            stage += [application.hex()] if application.hex() not in stage else []
        text = _crtm(permissive, seen.crtm)
        versions += [text] if text is not None and text not in versions else []
    names = _stage_names(len(stages))
    policy = EventLogPolicy.model_validate(
        {
            "bank": bank,
            **{name.lower(): tuple(found) for name, found in variables.items() if found},
            "boot": [{"name": n, "digests": d} for n, d in zip(names, stages, strict=True)],
            "crtm_versions": tuple(versions),
            "allowed_actions": tuple(actions),
        }
    )
    return Derived(policy, secure, len(logs))


def _stage_names(count: int) -> list[str]:
    if count == 3:
        return ["shim", "boot loader", "kernel"]
    if count == 2:
        return ["boot loader", "kernel"]
    return [f"application {n}" for n in range(1, count + 1)]


def _toml_list(values: Sequence[str], indent: str = "") -> str:
    if not values:
        return "[]"
    inner = "".join(f'{indent}  "{v}",\n' for v in values)
    return f"[\n{inner}{indent}]"


def boot_class_toml(derived: Derived, class_name: str) -> str:
    """A reference class file (TOML) with the derived ``[event_log]`` section."""
    policy = derived.policy
    lines = [
        f"# Derived by `docket policy derive-boot` from {derived.logs} known-good event "
        "log(s): review before use.",
        f'class = "{class_name}"',
        f"secure_boot = {'true' if derived.secure_boot else 'false'}",
        "measured_boot = true",
        "",
        "[event_log]",
        f'bank = "{policy.bank}"',
    ]
    for name in ("pk", "kek", "db", "dbx"):
        values = getattr(policy, name)
        if values:
            lines.append(f"{name} = {_toml_list(values)}")
    if policy.crtm_versions:
        lines.append(f"crtm_versions = {_toml_list([_escape(v) for v in policy.crtm_versions])}")
    if policy.allowed_actions:
        escaped = [_escape(v) for v in policy.allowed_actions]
        lines.append(f"allowed_actions = {_toml_list(escaped)}")
    for stage in policy.boot:
        lines += ["", "[[event_log.boot]]", f'name = "{stage.name}"']
        lines.append(f"digests = {_toml_list(stage.digests)}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
