"""Bundle signatures: C2SP signed notes, the format and the keys of the audit log's
checkpoints (:mod:`audit.note`), so one tool and one kind of key serve both.

A bundle's version is the sha256 of its files (``bundle.sig`` excluded), so signing the
version signs every file. ``bundle.sig`` is a signed note (c2sp.org/signed-note)::

    docket-bundle/1
    version sha256:…
    name payments-eu
    revision 42

    — docket-bundle base64(key id || Ed25519 signature)

Keys are the note formats of Go's ``golang.org/x/mod/sumdb/note``: the private key file
holds ``PRIVATE+KEY+<name>+<id>+<base64>`` (mode 0600), the public one the verifier key
``<name>+<id>+<base64>`` (``docket policy keygen`` writes both). The signature says who made
a bundle, not that it is the newest: ``bundle.toml``'s ``[bundle] name`` and ``revision``
are inside the version, so they are signed too, and a replica refuses a revision lower
than one it accepted (:mod:`engine._service.bundle_revisions`).
"""

from __future__ import annotations

from pathlib import Path

from audit import KeyFormatError, NoteError, SignerKey, VerifierKey
from audit.note import open_note, read_signer, sign_note, write_signer
from engine._errors import SignatureError

SIGNATURE_FILE = "bundle.sig"
FORMAT = "docket-bundle/1"
DEFAULT_KEY_NAME = "docket-bundle"


def write_keypair(prefix: Path, name: str = DEFAULT_KEY_NAME) -> tuple[Path, Path]:
    """A new key: ``PREFIX.key`` (the signer, mode 0600, never overwritten) and
    ``PREFIX.pub`` (its verifier key). Returns both paths. Raises
    :class:`FileExistsError`, :class:`OSError`, :class:`SignatureError` for a bad name."""
    try:
        signer = SignerKey.generate(name)
    except KeyFormatError as exc:
        raise SignatureError(f"key name {name!r}: {exc}") from exc
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    write_signer(private_path, signer)
    public_path.write_text(f"{signer.verifier()}\n")
    return private_path, public_path


def load_signer(path: Path) -> SignerKey:
    """Read a bundle signing key (``PRIVATE+KEY+…``). Raises :class:`SignatureError`."""
    try:
        return read_signer(path)
    except KeyFormatError as exc:
        raise SignatureError(str(exc)) from exc


def load_verifier(path: Path) -> VerifierKey:
    """Read a bundle verifier key (``<name>+<id>+<base64>``, one line). Raises
    :class:`SignatureError`."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{path}: cannot read the verifier key: {exc}") from exc
    try:
        return VerifierKey.parse(text)
    except KeyFormatError as exc:
        raise SignatureError(f"{path}: {exc}") from exc


def _body(version: str, name: str | None, revision: int | None) -> str:
    lines = [FORMAT, f"version {version}"]
    if name is not None and revision is not None:
        lines += [f"name {name}", f"revision {revision}"]
    return "\n".join(lines) + "\n"


def sign_bundle(
    version: str, signer: SignerKey, *, name: str | None = None, revision: int | None = None
) -> str:
    """The ``bundle.sig`` note for the bundle of ``version`` (and its name and revision)."""
    return sign_note(_body(version, name, revision), [signer])


def verify_bundle(version: str, signature_file: bytes | None, key: VerifierKey) -> str:
    """Check ``bundle.sig`` against the bundle's ``version`` before anything in the bundle
    is parsed; return the signing key as ``name+id``. The name and revision lines are
    signed with it, and are the ones inside the version (``bundle.toml``). Raises
    :class:`SignatureError`."""
    if signature_file is None:
        raise SignatureError(f"{SIGNATURE_FILE}: missing, and a bundle public key is configured")
    try:
        note = open_note(signature_file, [key])
    except NoteError as exc:
        if "no signature by a trusted key" in str(exc):
            raise SignatureError(
                f"{SIGNATURE_FILE}: not signed by the configured key {key.name}+{key.key_id.hex()}"
            ) from exc
        raise SignatureError(f"{SIGNATURE_FILE}: {exc}") from exc
    lines = note.text.splitlines()
    if lines[:1] != [FORMAT]:
        raise SignatureError(f"{SIGNATURE_FILE}: not a {FORMAT} signature")
    if lines[1:2] != [f"version {version}"]:
        raise SignatureError(
            f"{SIGNATURE_FILE}: the signature does not match the bundle's files "
            "(it signs another version)"
        )
    return f"{key.name}+{key.key_id.hex()}"
