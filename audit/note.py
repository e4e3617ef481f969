"""C2SP signed notes and tlog checkpoints with Ed25519 (raw layer)."""

from audit._note import (
    Checkpoint,
    SignedNote,
    SignerKey,
    VerifierKey,
    open_checkpoint,
    open_note,
    parse_checkpoint_unverified,
    parse_note,
    read_signer,
    sign_checkpoint,
    sign_note,
    write_signer,
)

__all__ = [
    "Checkpoint",
    "SignedNote",
    "SignerKey",
    "VerifierKey",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint_unverified",
    "parse_note",
    "read_signer",
    "sign_checkpoint",
    "sign_note",
    "write_signer",
]
