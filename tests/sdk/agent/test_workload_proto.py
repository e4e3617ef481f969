"""sdk/workload's messages are the SPIFFE Workload API's on the wire: each message of
py-spiffe's generated code (upstream's workload.proto) has a namesake here with the same
fields, numbers, types and cardinality; and both load into one process."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor
from spiffe._proto import workload_pb2 as upstream

from sdk.workload import workload_pb2 as ours


def _fields(message: Descriptor) -> list[tuple[str, int, int, bool]]:
    return [(f.name, f.number, f.type, f.is_repeated) for f in message.fields]


@pytest.mark.parametrize("name", sorted(upstream.DESCRIPTOR.message_types_by_name))
def test_each_message_is_upstreams_field_by_field(name: str) -> None:
    theirs = upstream.DESCRIPTOR.message_types_by_name[name]
    mine = ours.DESCRIPTOR.message_types_by_name[name]
    assert _fields(mine) == _fields(theirs)


def test_the_service_has_upstreams_methods_and_streams() -> None:
    (theirs,) = upstream.DESCRIPTOR.services_by_name.values()
    mine = ours.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    shape = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in mine.methods
    }
    assert shape == {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in theirs.methods
    }
    assert theirs.full_name == "SpiffeWorkloadAPI"  # the name clients call


def test_a_message_of_ours_parses_as_upstreams() -> None:
    sent = ours.X509SVIDResponse(
        svids=[ours.X509SVID(spiffe_id="spiffe://docket.local/device/ab", x509_svid=b"\x30")],
        federated_bundles={"spiffe://other": b"\x30\x00"},
    )
    received = upstream.X509SVIDResponse.FromString(sent.SerializeToString())
    assert received.svids[0].spiffe_id == "spiffe://docket.local/device/ab"
    assert dict(received.federated_bundles) == {"spiffe://other": b"\x30\x00"}
