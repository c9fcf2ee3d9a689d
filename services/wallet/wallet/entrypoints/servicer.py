"""The WalletService servicer: request -> command -> handler -> response, and business metrics.

No rule lives here; errors are raised as domain errors and mapped to statuses by the platform.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_platform.errors import HirepayError
from hirepay_platform.identity import current_caller
from hirepay_platform.wire import to_datetime
from wallet.domain import commands
from wallet.domain.holds import HoldState
from wallet.entrypoints import conversions as conv
from wallet.service_layer import access, handlers
from wallet.service_layer.batcher import HoldBatchers, TransferBatcher, run_alone, transfer_alone
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers import (
    BatchOutcome,
    HoldResult,
    TransferResult,
    audit,
    reports,
)
from wallet.service_layer.metrics import count_hold_transition, count_transfer, transfer_counter

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WalletService"].full_name

R = TypeVar("R", TransferResult, HoldResult)


async def _counted(operation: str, call: Awaitable[R]) -> R:
    """Count a money-moving call by outcome: posted, replayed, or the error's reason."""
    try:
        result = await call
    except Exception as exc:
        count_transfer(operation, _failure_label(exc))
        raise
    count_transfer(operation, "replayed" if result.replayed else "posted")
    return result


def _failure_label(exc: Exception) -> str:
    """A failed call's outcome label: its error's reason, or "internal"."""
    return exc.reason.lower() if isinstance(exc, HirepayError) else "internal"


def _outcome_label(outcome: BatchOutcome[R]) -> str:
    """A batch item's outcome as `_counted` labels a single call's."""
    if outcome.result is not None:
        return "replayed" if outcome.result.replayed else "posted"
    return outcome.error.reason.lower() if outcome.error else "internal"


_CANCELLED = HoldState.CANCELLED.value


def _count_hold_transition(result: HoldResult, from_state: str) -> None:
    """Count the transition a TCC call made (repeats and a Cancel of an expired hold make none)."""
    if result.replayed:
        return
    if result.null_compensation:
        count_hold_transition("none", _CANCELLED)
    elif result.hold is not None and result.hold.state is not HoldState.EXPIRED:
        # A Cancel that found the hold expired changed nothing; the worker counted the expiry.
        # str() of a StrEnum is its value without the enum's property (two Python calls each).
        count_hold_transition(from_state, str(result.hold.state))


class WalletServicer(pb_grpc.WalletServiceServicer):
    """One method per RPC of wallet_service.proto; each calls one handler with the shared deps."""

    def __init__(
        self,
        deps: Deps,
        batcher: TransferBatcher | None = None,
        holds: HoldBatchers | None = None,
    ) -> None:
        self._deps = deps
        # Groups concurrent Transfer calls into one transaction; None posts each on its own (a
        # group of one, at once).
        self._batcher = batcher
        # Groups concurrent ReserveHold calls, and ConfirmHold calls; None runs each on its own
        # (a group of one, at once).
        self._holds = holds

    async def OpenAccount(
        self, request: pb.OpenAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenAccountResponse:
        result = await handlers.open_account(conv.open_account_from_pb(request), self._deps)
        return pb.OpenAccountResponse(
            account=conv.account_to_pb(result.account), created=result.created
        )

    async def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAccountResponse:
        account = await handlers.get_account(commands.GetAccount(request.account_id), self._deps)
        return pb.GetAccountResponse(account=conv.account_to_pb(account))

    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAccountsResponse:
        query = commands.ListAccounts(
            request.owner_id, request.page.page_size, request.page.page_token
        )
        page = await handlers.list_accounts(query, self._deps)
        return pb.ListAccountsResponse(
            accounts=[conv.account_to_pb(a) for a in page.items],
            next_page_token=page.next_page_token,
        )

    async def Transfer(
        self, request: pb.TransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        cmd = conv.transfer_from_pb(request)
        if self._batcher is not None:
            call = self._batcher.call(cmd)  # (its `transfer`, less a coroutine per call)
        else:
            call = transfer_alone(cmd, self._deps)
        # `_counted` in line, its series' incrementer called at once: a coroutine of its own
        # (entered and resumed) and two calls to count were four Python calls per grouped
        # Transfer (issue 13).
        try:
            result = await call
        except Exception as exc:
            count_transfer("Transfer", _failure_label(exc))
            raise
        transfer_counter("Transfer", "replayed" if result.replayed else "posted")()
        return conv.transfer_result_to_pb(result)

    async def CreateTransfers(
        self, request: pb.CreateTransfersRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTransfersResponse:
        cmd = conv.create_transfers_from_pb(request)
        outcomes = await handlers.create_transfers(cmd, self._deps)
        for outcome in outcomes:
            count_transfer("CreateTransfers", _outcome_label(outcome))
        return conv.create_transfers_to_pb(outcomes)

    async def SplitTransfer(
        self, request: pb.SplitTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        cmd = conv.split_transfer_from_pb(request)
        result = await _counted("SplitTransfer", handlers.split_transfer(cmd, self._deps))
        return conv.transfer_result_to_pb(result)

    async def GetTransfer(
        self, request: pb.GetTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        query = commands.GetTransfer(request.transfer_id)
        record = await handlers.get_transfer(query, self._deps)
        return pb.TransferResponse(transfer=conv.transfer_record_to_pb(record))

    async def ListEntries(
        self, request: pb.ListEntriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEntriesResponse:
        query = commands.ListEntries(
            request.account_id, request.page.page_size, request.page.page_token
        )
        page = await handlers.list_entries(query, self._deps)
        return pb.ListEntriesResponse(
            entries=[conv.entry_to_pb(e) for e in page.items],
            next_page_token=page.next_page_token,
        )

    async def ReserveHold(
        self, request: pb.ReserveHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.HoldResponse:
        cmd = conv.reserve_hold_from_pb(request)
        if self._holds is not None:
            result = await self._holds.reserve.call(cmd)
        else:
            result = await run_alone(handlers.reserve_holds, cmd, self._deps)
        _count_hold_transition(result, "none")
        return conv.hold_result_to_pb(result)

    async def ConfirmHold(
        self, request: pb.ConfirmHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.HoldResponse:
        cmd = conv.confirm_hold_from_pb(request)
        if self._holds is not None:
            call = self._holds.confirm.call(cmd)
        else:
            call = run_alone(handlers.confirm_holds, cmd, self._deps)
        # Counted as `_counted` counts, without its coroutine (two frames per call; issue 13).
        try:
            result = await call
        except HirepayError as exc:
            count_transfer("ConfirmHold", exc.reason.lower())
            raise
        except Exception:
            count_transfer("ConfirmHold", "internal")
            raise
        count_transfer("ConfirmHold", "replayed" if result.replayed else "posted")
        _count_hold_transition(result, "pending")
        return conv.hold_result_to_pb(result)

    async def CancelHold(
        self, request: pb.CancelHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.HoldResponse:
        result = await handlers.cancel_hold(conv.cancel_hold_from_pb(request), self._deps)
        _count_hold_transition(result, "pending")
        return conv.hold_result_to_pb(result)

    async def CreateHolds(
        self, request: pb.CreateHoldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateHoldsResponse:
        outcomes = await handlers.create_holds(conv.create_holds_from_pb(request), self._deps)
        for outcome in outcomes:
            if outcome.result is not None:  # counted as ReserveHold counts
                _count_hold_transition(outcome.result, "none")
        return pb.CreateHoldsResponse(results=conv.hold_batch_results_to_pb(outcomes))

    async def ResolveHolds(
        self, request: pb.ResolveHoldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveHoldsResponse:
        cmd = conv.resolve_holds_from_pb(request)
        outcomes = await handlers.resolve_holds(cmd, self._deps)
        for item, outcome in zip(cmd.resolutions, outcomes, strict=True):
            # Counted as ConfirmHold and CancelHold count (a Confirm posts a transfer).
            if isinstance(item, commands.ConfirmHold):
                count_transfer("ResolveHolds", _outcome_label(outcome))
            if outcome.result is not None:
                _count_hold_transition(outcome.result, "pending")
        return pb.ResolveHoldsResponse(results=conv.hold_batch_results_to_pb(outcomes))

    async def GetHold(
        self, request: pb.GetHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.HoldResponse:
        query = commands.GetHold(conv.branch_from_pb(request.branch))
        return conv.hold_result_to_pb(await handlers.get_hold(query, self._deps))

    async def AuditLedger(
        self, request: pb.AuditLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditLedgerResponse:
        query = commands.AuditLedger(
            limit=request.limit or 100,
            hold_grace_seconds=request.hold_grace_seconds,
            changed_since=(
                to_datetime(request.changed_since) if request.HasField("changed_since") else None
            ),
        )
        findings = await audit.audit_ledger(query, self._deps)
        return pb.AuditLedgerResponse(
            findings=[
                pb.LedgerFinding(kind=f.kind.value, subject_id=f.subject_id, detail=f.detail)
                for f in findings
            ]
        )

    async def AuditTransferEntries(
        self, request: pb.AuditTransferEntriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditTransferEntriesResponse:
        found = await audit.audit_transfer_entries(list(request.transfer_ids), self._deps)
        return pb.AuditTransferEntriesResponse(entries=[conv.entry_to_pb(e) for e in found])

    # --- reads for users and admins (ESC-11); object rules in service_layer/access.py (SEC-2) ---

    async def GetWalletSummary(
        self, request: pb.GetWalletSummaryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWalletSummaryResponse:
        query = commands.GetWalletSummary(request.owner_id)
        accounts = await access.wallet_summary(current_caller(), query, self._deps)
        return pb.GetWalletSummaryResponse(accounts=[conv.account_to_pb(a) for a in accounts])

    async def ListWalletTransactions(
        self, request: pb.ListWalletTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLedgerLinesResponse:
        query = conv.list_wallet_transactions_from_pb(request)
        page = await access.wallet_transactions(current_caller(), query, self._deps)
        return conv.ledger_lines_to_pb(page.items, page.next_page_token)

    async def GetCommissionEarnings(
        self, request: pb.GetCommissionEarningsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCommissionEarningsResponse:
        access.check_admin(current_caller())
        query = conv.commission_earnings_from_pb(request)
        return conv.earnings_to_pb(await reports.commission_earnings(query, self._deps))

    async def ListBalances(
        self, request: pb.ListBalancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBalancesResponse:
        access.check_admin(current_caller())
        page = await reports.list_balances(conv.list_balances_from_pb(request), self._deps)
        return pb.ListBalancesResponse(
            accounts=[conv.account_to_pb(a) for a in page.items],
            next_page_token=page.next_page_token,
        )

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLedgerLinesResponse:
        access.check_admin(current_caller())
        page = await reports.list_transactions(conv.list_transactions_from_pb(request), self._deps)
        return conv.ledger_lines_to_pb(page.items, page.next_page_token)
