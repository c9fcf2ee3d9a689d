"""Who may call the wallet (issue 12): the consistency auditor's AuditLedger is for jobs only."""

from __future__ import annotations

from wallet.entrypoints.main import ACCESS


def test_audit_ledger_is_for_the_jobs_auditor_only() -> None:
    assert ACCESS.allows("jobs", "AuditLedger")
    assert not ACCESS.allows("payments", "AuditLedger")
    assert not ACCESS.allows("gateway", "AuditLedger")
    assert ACCESS.allows("payments", "Transfer") and not ACCESS.allows("gateway", "Transfer")


def test_the_bookings_audit_read_is_for_internal_callers_only() -> None:
    assert ACCESS.allows("payments", "AuditTransferEntries")  # AuditLedgerBookings calls it
    assert ACCESS.allows("jobs", "AuditTransferEntries")
    assert not ACCESS.allows("gateway", "AuditTransferEntries")


def test_the_gateway_may_call_the_reads_only() -> None:
    reads = (
        "GetWalletSummary",
        "ListWalletTransactions",
        "GetCommissionEarnings",
        "ListBalances",
        "ListTransactions",
    )
    for name in reads:
        assert ACCESS.allows("gateway", name) and ACCESS.allows("payments", name), name
        assert ACCESS.allows("jobs", name) and not ACCESS.allows("sandbox", name), name
    for name in (
        "OpenAccount",
        "Transfer",
        "ReserveHold",
        "ConfirmHold",
        "GetAccount",
        "ListEntries",
    ):
        assert not ACCESS.allows("gateway", name), name
