"""An Authorize request's metadata is copied from the protobuf map in one comprehension (issue
13, pay13): the same dict as dict() gave, without the Mapping ABC's keys view (a Python generator
step per key)."""

from __future__ import annotations

import pstats

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from payments.entrypoints.conversions import authorize_command
from tests.support.python_calls import profiled

METADATA = {"subsystem": "jobs", "type": "job_posting", "job_id": "job_1", "saga_id": "saga_1"}


def test_the_metadata_is_the_requests_without_the_abc() -> None:
    request = pb.AuthorizeRequest(
        request_id="saga_1:try",
        branch=common_pb2.TccBranch(global_tx_id="saga_1", branch_id="payment"),
        owner_id="co_1",
        amount=common_pb2.Money(amount_minor=14900, currency="USD"),
        method=pb.PAYMENT_METHOD_TYPE_CARD,
        metadata=METADATA,
    )
    command = authorize_command(request)
    assert command.metadata == dict(request.metadata) == METADATA
    assert type(command.metadata) is dict
    authorize_command(request)
    with profiled() as profile:
        authorize_command(request)
    called = {file for (file, _, _) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert not {f for f in called if "_collections_abc" in f}, called
