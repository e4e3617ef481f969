"""The log's checkpoint signing keys, kept as files in one directory.

``signing.key`` signs every checkpoint. ``docket audit key --rotate`` makes a new
``signing.key`` and keeps the old one as ``previous.key``: during the overlap each
checkpoint carries both signatures, so verifiers holding either key accept it, until
``docket audit key --retire-previous`` removes the old one. Files are C2SP signed-note
private keys (``PRIVATE+KEY+<name>+<id>+<base64>``), mode 0600.

Processes that share one database (several replicas on PostgreSQL) must share this
directory's keys: point ``DOCKET_AUDIT_KEYS`` at the same files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from audit._note import SignerKey, VerifierKey, read_signer, write_signer

SIGNING = "signing.key"
PREVIOUS = "previous.key"


class KeyRing:
    """The signing keys in ``directory``; re-read when the files change, so a running
    server picks up a rotation at its next checkpoint."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, float], ...] | None = None
        self._signers: list[SignerKey] = []

    @property
    def exists(self) -> bool:
        """True when a signing key is present."""
        return (self.directory / SIGNING).is_file()

    def ensure(self, name: str) -> SignerKey:
        """The current signing key, made (named ``name``) when there is none."""
        path = self.directory / SIGNING
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            # Replicas starting together may race here: each writes a whole key to a
            # file of its own and links it into place; the first link wins, the others
            # use the winner's key.
            draft = self.directory / f".{SIGNING}.{os.getpid()}.{threading.get_ident()}"
            write_signer(draft, SignerKey.generate(name))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return self.signers()[0]

    def signers(self) -> list[SignerKey]:
        """The keys that sign checkpoints: current first, then the previous one during
        an overlap. Raises :class:`~audit.KeyFormatError` for a malformed file."""
        paths = [self.directory / SIGNING, self.directory / PREVIOUS]
        stamp = tuple((str(p), p.stat().st_mtime) for p in paths if p.is_file())
        with self._lock:
            if stamp != self._stamp:
                self._signers = [read_signer(Path(path)) for path, _ in stamp]
                self._stamp = stamp
            return list(self._signers)

    def verifiers(self) -> list[VerifierKey]:
        """The verifier keys of :meth:`signers`."""
        return [signer.verifier() for signer in self.signers()]

    def rotate(self) -> SignerKey:
        """Make a new signing key; the old one becomes ``previous.key`` and keeps
        co-signing until retired. Refuses while a previous key is still present."""
        current = self.directory / SIGNING
        previous = self.directory / PREVIOUS
        if previous.exists():
            raise FileExistsError(
                f"{previous} exists: retire it first (docket audit key --retire-previous)"
            )
        old = read_signer(current)
        os.replace(current, previous)
        write_signer(current, SignerKey.generate(old.name))
        return self.signers()[0]

    def retire(self) -> VerifierKey | None:
        """Stop co-signing with the previous key and delete it; returns its verifier."""
        previous = self.directory / PREVIOUS
        if not previous.exists():
            return None
        retired = read_signer(previous).verifier()
        previous.unlink()
        return retired
