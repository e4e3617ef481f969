"""``docket.v1.Audit`` over gRPC: checkpoints and proofs for clients that check their
receipts online."""

from __future__ import annotations

import grpc

from audit import AuditLog, ProofError
from audit.note import parse_checkpoint_unverified
from engine._grpc import answer
from engine._service import DecisionService
from sdk.v1 import audit_pb2 as pb
from sdk.v1 import audit_pb2_grpc as pb_grpc


def _checkpoint(note: str) -> pb.Checkpoint:
    body = parse_checkpoint_unverified(note)
    return pb.Checkpoint(note=note, origin=body.origin, tree_size=body.size, root_hash=body.root)


class AuditServicer(pb_grpc.AuditServicer):
    """GetCheckpoint, GetInclusionProof and GetConsistencyProof on the service's log."""

    def __init__(self, service: DecisionService) -> None:
        self._service = service
        self._log: AuditLog = service.audit

    def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.Checkpoint:
        def produce() -> pb.Checkpoint:
            stored = (
                self._log.checkpoint() if request.fresh else self._log.store.latest_checkpoint()
            )
            if stored is None:
                stored = self._log.checkpoint()
            return _checkpoint(stored.note)

        return answer(self._service, "audit_checkpoint", context, produce)

    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> pb.InclusionProof:
        def produce() -> pb.InclusionProof:
            store = self._log.store
            if request.tree_size:
                stored = store.checkpoint_at(request.tree_size)
                if stored is None:
                    raise ProofError(f"no checkpoint of tree size {request.tree_size}")
            else:
                # The latest: signed by the keys in use now, and it proves every entry
                # before it; a new one is signed when the entry is not covered yet.
                stored = store.latest_checkpoint()
                if stored is None or stored.size <= request.index:
                    stored = self._log.checkpoint()
            if request.index >= stored.size:
                raise ProofError(f"entry {request.index} is not in the tree of size {stored.size}")
            row = store.entry(request.index)
            if row is None:
                raise ProofError(f"there is no entry {request.index}")
            return pb.InclusionProof(
                index=request.index,
                tree_size=stored.size,
                leaf_hash=row.leaf,
                hashes=self._log.inclusion(request.index, stored.size),
                checkpoint=_checkpoint(stored.note),
                entry=row.payload or b"",
            )

        return answer(self._service, "audit_inclusion", context, produce)

    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> pb.ConsistencyProof:
        def produce() -> pb.ConsistencyProof:
            return pb.ConsistencyProof(
                first=request.first,
                second=request.second,
                hashes=self._log.consistency(request.first, request.second),
            )

        return answer(self._service, "audit_consistency", context, produce)
