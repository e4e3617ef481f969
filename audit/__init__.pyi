# The names of `audit`, typed; lazy_loader.attach_stub reads these imports to import
# each name from its module on first use (`__init__.py`).

from ._auditor import Verdict as Verdict
from ._auditor import VerifiedReceipt as VerifiedReceipt
from ._auditor import make_receipt as make_receipt
from ._auditor import prove_consistency as prove_consistency
from ._auditor import verify_export as verify_export
from ._auditor import verify_receipt as verify_receipt
from ._auditor import verify_store as verify_store
from ._auditor import write_export as write_export
from ._entry import Entry as Entry
from ._entry import digest as digest
from ._entry import digest_plain as digest_plain
from ._errors import AuditError as AuditError
from ._errors import FormatError as FormatError
from ._errors import KeptCheckpointError as KeptCheckpointError
from ._errors import KeyFormatError as KeyFormatError
from ._errors import LogIdentityError as LogIdentityError
from ._errors import NoteError as NoteError
from ._errors import Overloaded as Overloaded
from ._errors import ProofError as ProofError
from ._errors import StoreError as StoreError
from ._errors import TamperDetected as TamperDetected
from ._kept import KEPT_NAME as KEPT_NAME
from ._log import AuditLog as AuditLog
from ._note import Checkpoint as Checkpoint
from ._note import SignerKey as SignerKey
from ._note import VerifierKey as VerifierKey
from ._relay import LogServer as LogServer
from ._relay import Relay as Relay
from ._relay import RelayAddress as RelayAddress
from ._store import Receipt as Receipt
from ._store import Store as Store
from ._store import StoredCheckpoint as StoredCheckpoint
from ._verify import VerifiedLog as VerifiedLog
from ._verify import verify_entries as verify_entries
