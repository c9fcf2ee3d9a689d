"""The jobs service's gRPC clients of payments and the wallet (adapters)."""

from __future__ import annotations

from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from jobs.adapters.escrow_ledger import PaymentsCardRefunds, PaymentsJobPayments
from jobs.adapters.offer_funds import WalletAccounts
from jobs.adapters.participants import (
    CreditsParticipant,
    PaymentsParticipant,
    WalletCandidateCredits,
)

# Nothing listens here: making a channel and a stub sends nothing.
TARGET = "127.0.0.1:9"


async def test_each_client_makes_its_stub_once_on_its_one_channel():
    """A stub registers every method of its service on the channel when made (about 260 Python
    calls for payments'): each client makes it once, not per call (issue 13)."""
    clients = [
        (PaymentsParticipant(TARGET, 1.0), ppb_grpc.PaymentsServiceStub),
        (PaymentsCardRefunds(TARGET, 1.0), ppb_grpc.PaymentsServiceStub),
        (PaymentsJobPayments(TARGET, 1.0), ppb_grpc.PaymentsServiceStub),
        (CreditsParticipant(TARGET, 1.0, 60), wpb_grpc.WalletServiceStub),
        (WalletCandidateCredits(TARGET, 1.0), wpb_grpc.WalletServiceStub),
        (WalletAccounts(TARGET, 1.0), wpb_grpc.WalletServiceStub),
    ]
    try:
        for client, stub_type in clients:
            stub = client.stub
            assert isinstance(stub, stub_type)
            assert client.stub is stub
            assert client.client.channel is client.client.channel
    finally:
        for client, _ in clients:
            await client.close()
