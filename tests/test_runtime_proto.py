"""Our compiled Open Inference Protocol messages agree with a third-party OIP client's."""

from __future__ import annotations

from typing import Any

import pytest

from tierflow.runtime._proto import grpc_predict_v2_pb2 as ours

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")

MESSAGES = [
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelInferRequest",
    "ModelInferResponse",
    "InferParameter",
    "InferTensorContents",
]


def _fields(descriptor: Any, prefix: str = "") -> dict[str, tuple[int, int, Any]]:
    fields = {}
    for field in descriptor.fields:
        # `is_repeated` replaces the deprecated `label` from protobuf 6.31 on.
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
        label = 3 if repeated else 1
        fields[prefix + field.name] = (field.number, field.type, label)
    for nested in descriptor.nested_types:
        fields.update(_fields(nested, f"{prefix}{nested.name}."))
    return fields


@pytest.mark.parametrize("name", MESSAGES)
def test_field_numbers_and_types_match_tritonclient(name: str) -> None:
    mine = _fields(ours.DESCRIPTOR.message_types_by_name[name])
    theirs = _fields(service_pb2.DESCRIPTOR.message_types_by_name[name])

    assert mine == theirs


def test_the_service_methods_match_tritonclient() -> None:
    mine = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]

    assert mine.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in mine.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name


def test_our_messages_live_in_a_private_pool_beside_tritonclients() -> None:
    # Both define `inference.*`; the default pool would refuse the second file.
    assert ours.DESCRIPTOR.pool is not service_pb2.DESCRIPTOR.pool
