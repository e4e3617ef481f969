"""TPM 2.0 attestation: evidence → verified posture → short-lived credentials.

What the rest of Docket uses, and all it may import from here:

- **the verifier** (pure): :func:`begin_enrollment` checks an EK certificate against
  :class:`TrustRoots` and makes the credential challenge; :func:`verify_answer` checks
  the activated credential, the quote and the PCRs (:func:`finish_attestation`) and
  appraises them against :class:`ReferenceValues` (:func:`appraise_any`): it returns
  :class:`Attested`, the :class:`Posture` and what to persist (:class:`ToPersist`);
  :func:`check_ek_root` and :func:`check_quote_hashes` check a root and the quote hash
  policy up front;
- **reference values**: :func:`parse_reference`, :func:`appraise_any`;
- **the boot event log** (pure): :func:`parse_event_log` reads a TCG PC Client log (SHA-1
  or crypto agile) into an :class:`EventLog` of :class:`Event`; :func:`replay` and
  :func:`check_replay` recompute its PCRs against a quote's; :func:`check_event_data`
  says whether an event's data is what its digest measured; :func:`efi_variable`,
  :func:`efi_image_load` and :func:`event_text` decode an event's data
  (:class:`EfiVariable`, :class:`EfiImageLoad`); :data:`MAX_EVENT_LOG_BYTES`,
  :data:`MAX_EVENT_LOG_EVENTS`, :data:`REPLAYED_PCRS`;
- **the CA**: :class:`CertificateAuthority` (X.509- and JWT-SVIDs),
  :class:`RevocationList`, :func:`load_revocations`, :func:`describe`,
  :func:`issued_at`;
- **the challenge store**: :class:`ChallengeStore` (single-use challenges, in the
  audit database, a :class:`PendingChallenge` each): ``read`` before
  :func:`verify_answer`, ``write`` after;
- **TPM algorithm names** for the quote hash policy, and :func:`load_pem_certificates`
  for EK root files real vendors ship;
- **errors**: :class:`AttestationError` and its tree (:mod:`attestation._errors`).

The package never imports ``engine``.

Names are imported on first use (PEP 562): importing a submodule (``attestation.cli``,
``docket --version``) does not load everything the package can do.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
"""Each name in ``__init__.pyi`` (typed there) is imported from its module on first use
(and kept): importing a submodule does not load everything the package can do."""
