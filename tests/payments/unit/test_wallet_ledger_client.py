"""Payments' gRPC client of the wallet (adapters/wallet_ledger.py)."""

from __future__ import annotations

from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from payments.adapters.wallet_ledger import WalletLedger

# Nothing listens here: making a channel and a stub sends nothing.
TARGET = "127.0.0.1:9"


async def test_the_wallet_ledger_makes_its_stub_once_on_its_one_channel():
    """A WalletServiceStub registers every wallet method on the channel when made (~29 us of CPU):
    the ledger makes it once, not on every call it makes (issue 13)."""
    ledger = WalletLedger(TARGET, 1.0)
    try:
        stub = ledger.stub
        assert isinstance(stub, wpb_grpc.WalletServiceStub)
        assert ledger.stub is stub
        assert ledger.client is ledger.client
    finally:
        await ledger.close()
