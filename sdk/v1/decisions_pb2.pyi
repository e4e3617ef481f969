from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]

class WorkloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKLOAD_KIND_UNSPECIFIED: _ClassVar[WorkloadKind]
    WORKLOAD_KIND_WORKLOAD: _ClassVar[WorkloadKind]
    WORKLOAD_KIND_DATASET: _ClassVar[WorkloadKind]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision
WORKLOAD_KIND_UNSPECIFIED: WorkloadKind
WORKLOAD_KIND_WORKLOAD: WorkloadKind
WORKLOAD_KIND_DATASET: WorkloadKind

class EntityRef(_message.Message):
    __slots__ = ("type", "id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    id: str
    def __init__(self, type: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("uid", "attrs", "parents")
    UID_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    uid: EntityRef
    attrs: _struct_pb2.Struct
    parents: _containers.RepeatedCompositeFieldContainer[EntityRef]
    def __init__(self, uid: _Optional[_Union[EntityRef, _Mapping]] = ..., attrs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parents: _Optional[_Iterable[_Union[EntityRef, _Mapping]]] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("principal", "action", "resource", "context", "entities")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    principal: EntityRef
    action: EntityRef
    resource: EntityRef
    context: _struct_pb2.Struct
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, principal: _Optional[_Union[EntityRef, _Mapping]] = ..., action: _Optional[_Union[EntityRef, _Mapping]] = ..., resource: _Optional[_Union[EntityRef, _Mapping]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...

class PolicyError(_message.Message):
    __slots__ = ("policy_id", "message")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    message: str
    def __init__(self, policy_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("decision", "decision_id", "reasons", "errors", "bundle_version")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    decision_id: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    errors: _containers.RepeatedCompositeFieldContainer[PolicyError]
    bundle_version: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., decision_id: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., errors: _Optional[_Iterable[_Union[PolicyError, _Mapping]]] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class BatchAuthorizeRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AuthorizeRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AuthorizeRequest, _Mapping]]] = ...) -> None: ...

class BatchAuthorizeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AuthorizeResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[AuthorizeResponse, _Mapping]]] = ...) -> None: ...

class PlacementRequest(_message.Message):
    __slots__ = ("workload_id", "kind", "classification", "residency", "regulated", "accelerator", "latency_budget_ms", "users_in", "context", "sites")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    RESIDENCY_FIELD_NUMBER: _ClassVar[int]
    REGULATED_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    USERS_IN_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    kind: WorkloadKind
    classification: str
    residency: _containers.RepeatedScalarFieldContainer[str]
    regulated: bool
    accelerator: str
    latency_budget_ms: float
    users_in: str
    context: _struct_pb2.Struct
    sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, workload_id: _Optional[str] = ..., kind: _Optional[_Union[WorkloadKind, str]] = ..., classification: _Optional[str] = ..., residency: _Optional[_Iterable[str]] = ..., regulated: _Optional[bool] = ..., accelerator: _Optional[str] = ..., latency_budget_ms: _Optional[float] = ..., users_in: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., sites: _Optional[_Iterable[str]] = ...) -> None: ...

class PlacedSite(_message.Message):
    __slots__ = ("site", "region", "jurisdiction", "tier", "latency_ms", "cost_per_hour", "within_latency_budget", "reasons")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    JURISDICTION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    WITHIN_LATENCY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    jurisdiction: str
    tier: str
    latency_ms: float
    cost_per_hour: float
    within_latency_budget: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., jurisdiction: _Optional[str] = ..., tier: _Optional[str] = ..., latency_ms: _Optional[float] = ..., cost_per_hour: _Optional[float] = ..., within_latency_budget: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class DeniedSite(_message.Message):
    __slots__ = ("site", "reasons", "errors")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    site: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    errors: _containers.RepeatedCompositeFieldContainer[PolicyError]
    def __init__(self, site: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., errors: _Optional[_Iterable[_Union[PolicyError, _Mapping]]] = ...) -> None: ...

class PlacementResponse(_message.Message):
    __slots__ = ("workload_id", "decision_id", "allowed", "denied", "bundle_version")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    decision_id: str
    allowed: _containers.RepeatedCompositeFieldContainer[PlacedSite]
    denied: _containers.RepeatedCompositeFieldContainer[DeniedSite]
    bundle_version: str
    def __init__(self, workload_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., allowed: _Optional[_Iterable[_Union[PlacedSite, _Mapping]]] = ..., denied: _Optional[_Iterable[_Union[DeniedSite, _Mapping]]] = ..., bundle_version: _Optional[str] = ...) -> None: ...

class ReloadBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadBundleResponse(_message.Message):
    __slots__ = ("bundle_version", "changed", "previous_version")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    changed: bool
    previous_version: str
    def __init__(self, bundle_version: _Optional[str] = ..., changed: _Optional[bool] = ..., previous_version: _Optional[str] = ...) -> None: ...
