"""Named conversions between the contract's protobuf messages and the wallet's domain types."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay_platform import grpc_status
from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from hirepay_platform.wire import timestamp as timestamp_of
from hirepay_platform.wire import to_datetime
from wallet.domain import commands
from wallet.domain.errors import invalid
from wallet.domain.holds import Hold, HoldState
from wallet.domain.ledger import Entry, Leg, TransferRecord
from wallet.domain.model import Account, AccountKind
from wallet.domain.reports import Earnings, EarningsBucket, LedgerLine, Period
from wallet.domain.splits import Share
from wallet.service_layer.handlers import BatchOutcome, HoldResult, TransferResult

_KIND_FROM_PB: dict[int, AccountKind] = {
    pb.ACCOUNT_KIND_USER: AccountKind.USER,
    pb.ACCOUNT_KIND_PLATFORM_REVENUE: AccountKind.PLATFORM_REVENUE,
    pb.ACCOUNT_KIND_ESCROW: AccountKind.ESCROW,
    pb.ACCOUNT_KIND_PROVIDER_CLEARING: AccountKind.PROVIDER_CLEARING,
    pb.ACCOUNT_KIND_PAYOUTS: AccountKind.PAYOUTS,
    pb.ACCOUNT_KIND_ISSUANCE: AccountKind.ISSUANCE,
}
_KIND_TO_PB = {kind: number for number, kind in _KIND_FROM_PB.items()}

_STATE_TO_PB: dict[HoldState, pb.Hold.State.ValueType] = {
    HoldState.PENDING: pb.Hold.PENDING,
    HoldState.CONFIRMED: pb.Hold.CONFIRMED,
    HoldState.CANCELLED: pb.Hold.CANCELLED,
    HoldState.EXPIRED: pb.Hold.EXPIRED,
}


@functools.lru_cache(maxsize=1024)
def _time_fields(value: datetime) -> tuple[int, int]:
    stamp = timestamp_of(value)
    assert stamp is not None
    return stamp.seconds, stamp.nanos


def timestamp(value: datetime | None) -> Timestamp | None:
    """wire.timestamp, each instant converted once: the calls of a group share their times (the
    transaction's start, a hold's expiry), and the conversion is ~10 Python calls, several per
    reply of a hold (issue 13). A new message each time (a message is mutable)."""
    if value is None:
        return None
    seconds, nanos = _time_fields(value)
    return Timestamp(seconds=seconds, nanos=nanos)


def _money(amount: int, unit: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency=unit)


# --- requests -> commands --------------------------------------------------------------------


def account_kind_from_pb(kind: int) -> AccountKind:
    try:
        return _KIND_FROM_PB[kind]
    except KeyError:
        raise invalid("kind", "must be a known account kind") from None


def optional_kind_from_pb(kind: int) -> AccountKind | None:
    """A kind filter: unspecified means every kind."""
    return None if kind == pb.ACCOUNT_KIND_UNSPECIFIED else account_kind_from_pb(kind)


_PERIOD_FROM_PB: dict[int, Period] = {
    pb.EARNINGS_PERIOD_UNSPECIFIED: Period.DAY,
    pb.EARNINGS_PERIOD_DAY: Period.DAY,
    pb.EARNINGS_PERIOD_MONTH: Period.MONTH,
}


def period_from_pb(period: int) -> Period:
    try:
        return _PERIOD_FROM_PB[period]
    except KeyError:
        raise invalid("period", "must be a known period") from None


def branch_from_pb(branch: common_pb2.TccBranch) -> TccBranch:
    return TccBranch(branch.global_tx_id, branch.branch_id)


def shares_from_pb(shares: list[pb.SplitShare]) -> tuple[Share, ...]:
    return tuple(Share(s.to_account_id, s.basis_points) for s in shares)


def open_account_from_pb(request: pb.OpenAccountRequest) -> commands.OpenAccount:
    return commands.OpenAccount(
        owner_id=request.owner_id,
        unit=request.currency,
        kind=account_kind_from_pb(request.kind),
        allow_negative=request.allow_negative,
    )


def _map_of(value: Mapping[str, str]) -> dict[str, str]:
    """A protobuf map as a dict in one comprehension (callers skip the call for an empty one)."""
    return {key: value[key] for key in value}


def transfer_from_pb(request: pb.TransferRequest) -> commands.Transfer:
    # dict() of a upb map walks the Mapping ABC's key view (3 Python calls); an empty map, the
    # usual case, is no call at all, another one comprehension (issue 13).
    # The legs by a list comprehension: one call, where a generator was one per leg and one more.
    return commands.Transfer(
        transfer_id=request.transfer_id,
        legs=tuple(
            [
                Leg(
                    leg.from_account_id,
                    leg.to_account_id,
                    leg.amount.amount_minor,
                    leg.amount.currency,
                )
                for leg in request.legs
            ]
        ),
        description=request.description,
        metadata=_map_of(request.metadata) if request.metadata else {},
    )


def create_transfers_from_pb(request: pb.CreateTransfersRequest) -> commands.CreateTransfers:
    return commands.CreateTransfers(tuple(transfer_from_pb(t) for t in request.transfers))


def split_transfer_from_pb(request: pb.SplitTransferRequest) -> commands.SplitTransfer:
    return commands.SplitTransfer(
        transfer_id=request.transfer_id,
        from_account_id=request.from_account_id,
        total=request.total.amount_minor,
        unit=request.total.currency,
        shares=shares_from_pb(list(request.shares)),
        remainder_account_id=request.remainder_account_id,
        description=request.description,
        metadata=_map_of(request.metadata) if request.metadata else {},
    )


def reserve_hold_from_pb(request: pb.ReserveHoldRequest) -> commands.ReserveHold:
    return commands.ReserveHold(
        branch=branch_from_pb(request.branch),
        account_id=request.account_id,
        destination_account_id=request.destination_account_id,
        amount=request.amount.amount_minor,
        unit=request.amount.currency,
        expires_in_seconds=request.expires_in_seconds,
        description=request.description,
    )


def confirm_hold_from_pb(request: pb.ConfirmHoldRequest) -> commands.ConfirmHold:
    return commands.ConfirmHold(
        branch=branch_from_pb(request.branch),
        amount=request.amount_minor,
        # (No list, call and generator for no shares, the common case; issue 13.)
        shares=shares_from_pb(list(request.shares)) if request.shares else (),
        remainder_account_id=request.remainder_account_id,
    )


def cancel_hold_from_pb(request: pb.CancelHoldRequest) -> commands.CancelHold:
    return commands.CancelHold(branch=branch_from_pb(request.branch), reason=request.reason)


def create_holds_from_pb(request: pb.CreateHoldsRequest) -> commands.CreateHolds:
    return commands.CreateHolds(tuple(reserve_hold_from_pb(h) for h in request.holds))


def _resolution_from_pb(
    resolution: pb.HoldResolution,
) -> commands.ConfirmHold | commands.CancelHold | None:
    action = resolution.WhichOneof("action")
    if action == "confirm":
        return confirm_hold_from_pb(resolution.confirm)
    if action == "cancel":
        return cancel_hold_from_pb(resolution.cancel)
    return None


def resolve_holds_from_pb(request: pb.ResolveHoldsRequest) -> commands.ResolveHolds:
    return commands.ResolveHolds(tuple(_resolution_from_pb(r) for r in request.resolutions))


def _optional_time(request: Message, field: str) -> datetime | None:
    """An optional Timestamp field as an aware datetime; a value outside years 1-9999 is refused."""
    if not request.HasField(field):
        return None
    try:
        return to_datetime(getattr(request, field))
    except (OverflowError, ValueError):
        raise invalid(field, "must be a time within years 1-9999") from None


def list_wallet_transactions_from_pb(
    request: pb.ListWalletTransactionsRequest,
) -> commands.ListWalletTransactions:
    return commands.ListWalletTransactions(
        owner_id=request.owner_id,
        unit=request.unit,
        since=_optional_time(request, "since"),
        until=_optional_time(request, "until"),
        page_size=request.page.page_size,
        page_token=request.page.page_token,
    )


def list_transactions_from_pb(request: pb.ListTransactionsRequest) -> commands.ListTransactions:
    return commands.ListTransactions(
        owner_id=request.owner_id,
        unit=request.unit,
        kind=optional_kind_from_pb(request.account_kind),
        since=_optional_time(request, "since"),
        until=_optional_time(request, "until"),
        page_size=request.page.page_size,
        page_token=request.page.page_token,
    )


def list_balances_from_pb(request: pb.ListBalancesRequest) -> commands.ListBalances:
    return commands.ListBalances(
        kind=optional_kind_from_pb(request.kind),
        unit=request.unit,
        owner_id=request.owner_id,
        page_size=request.page.page_size,
        page_token=request.page.page_token,
    )


def commission_earnings_from_pb(
    request: pb.GetCommissionEarningsRequest,
) -> commands.GetCommissionEarnings:
    return commands.GetCommissionEarnings(
        since=_optional_time(request, "since"),
        until=_optional_time(request, "until"),
        period=period_from_pb(request.period),
    )


# --- domain -> responses ---------------------------------------------------------------------


def account_to_pb(account: Account) -> pb.Account:
    ref = account.ref
    return pb.Account(
        account_id=ref.id,
        owner_id=ref.owner_id,
        currency=ref.unit,
        kind=_KIND_TO_PB[ref.kind],
        allow_negative=ref.allow_negative,
        balance=pb.Balance(
            posted_minor=account.balance.posted,
            pending_minor=account.balance.pending,
            available_minor=account.balance.available,
            currency=ref.unit,
        ),
        created_at=timestamp(account.created_at),
    )


def entry_to_pb(entry: Entry, created_at: Timestamp | None = None) -> pb.Entry:
    """An entry; `created_at` its time already converted (a transfer's entries share one). Its
    amount made in line (`_money` was a Python call per entry of every reply; issue 13)."""
    return pb.Entry(
        entry_id=entry.id,
        transfer_id=entry.transfer_id,
        account_id=entry.account_id,
        amount=common_pb2.Money(amount_minor=entry.amount, currency=entry.unit),
        created_at=timestamp(entry.created_at) if created_at is None else created_at,
        description=entry.description,
    )


def transfer_record_to_pb(record: TransferRecord) -> pb.TransferRecord:
    # Every entry of a transfer is posted at its time: one conversion (a slow one) for all.
    created_at = timestamp(record.created_at)
    message = pb.TransferRecord(
        transfer_id=record.id,
        entries=[
            entry_to_pb(e, created_at if e.created_at == record.created_at else None)
            for e in record.entries
        ],
        description=record.description,
        created_at=created_at,
    )
    # A dict given for a map field is copied by the Mapping ABC's update (2 Python calls); set
    # item by item here (in C), none for a transfer without metadata (issue 13).
    if record.metadata:
        target = message.metadata
        for key, value in record.metadata.items():
            target[key] = value
    return message


def transfer_result_to_pb(result: TransferResult) -> pb.TransferResponse:
    return pb.TransferResponse(
        transfer=transfer_record_to_pb(result.transfer), replayed=result.replayed
    )


def transfer_error_to_pb(error: HirepayError) -> pb.TransferError:
    """A refused transfer of a batch, as the single call's status would have carried it."""
    return pb.TransferError(
        code=grpc_status.status_code(error.kind).value[0],
        reason=error.reason,
        message=error.message,
        metadata=error.metadata,
    )


M = TypeVar("M", pb.CreateTransfersResult, pb.HoldBatchResult)
A = TypeVar("A", TransferResult, HoldResult)


def _batch_results(
    outcomes: list[BatchOutcome[A]],
    result: Callable[..., M],
    answer: str,
    answer_to_pb: Callable[[A], Message],
) -> list[M]:
    """One result per item of a batch call, in order: the answer of its single call (in the
    result's `answer` field) or its error."""
    results = []
    for i, outcome in enumerate(outcomes):
        if outcome.result is not None:
            results.append(result(index=i, **{answer: answer_to_pb(outcome.result)}))
        elif outcome.error is not None:
            results.append(result(index=i, error=transfer_error_to_pb(outcome.error)))
    return results


def create_transfers_to_pb(
    outcomes: list[BatchOutcome[TransferResult]],
) -> pb.CreateTransfersResponse:
    return pb.CreateTransfersResponse(
        results=_batch_results(
            outcomes, pb.CreateTransfersResult, "transfer", transfer_result_to_pb
        )
    )


def hold_to_pb(hold: Hold) -> pb.Hold:
    return pb.Hold(
        branch=common_pb2.TccBranch(
            global_tx_id=hold.branch.global_tx_id, branch_id=hold.branch.branch_id
        ),
        account_id=hold.account_id,
        destination_account_id=hold.destination_account_id,
        amount=_money(hold.amount, hold.unit),
        confirmed_minor=hold.confirmed_amount,
        state=_STATE_TO_PB[hold.state],
        expires_at=timestamp(hold.expires_at),
        transfer_id=hold.transfer_id or "",
        created_at=timestamp(hold.created_at),
        # (A pending hold's: no call; issue 13.)
        resolved_at=timestamp(hold.resolved_at) if hold.resolved_at is not None else None,
    )


def hold_result_to_pb(result: HoldResult) -> pb.HoldResponse:
    return pb.HoldResponse(
        hold=hold_to_pb(result.hold) if result.hold else None,
        null_compensation=result.null_compensation,
        replayed=result.replayed,
        transfer=transfer_record_to_pb(result.transfer) if result.transfer else None,
    )


def hold_batch_results_to_pb(outcomes: list[BatchOutcome[HoldResult]]) -> list[pb.HoldBatchResult]:
    """The results of CreateHolds and ResolveHolds: each item's HoldResponse or error."""
    return _batch_results(outcomes, pb.HoldBatchResult, "hold", hold_result_to_pb)


def ledger_line_to_pb(line: LedgerLine) -> pb.LedgerLine:
    return pb.LedgerLine(
        entry_id=line.entry_id,
        transfer_id=line.transfer_id,
        account_id=line.account_id,
        owner_id=line.owner_id,
        account_kind=_KIND_TO_PB[line.account_kind],
        amount=_money(line.amount, line.unit),
        counterparty_kind=(
            _KIND_TO_PB[line.counterparty_kind]
            if line.counterparty_kind
            else pb.ACCOUNT_KIND_UNSPECIFIED
        ),
        description=line.description,
        metadata=line.metadata,
        created_at=timestamp(line.created_at),
    )


def ledger_lines_to_pb(lines: list[LedgerLine], next_page_token: str) -> pb.ListLedgerLinesResponse:
    return pb.ListLedgerLinesResponse(
        lines=[ledger_line_to_pb(line) for line in lines], next_page_token=next_page_token
    )


def _bucket_to_pb(bucket: EarningsBucket) -> pb.EarningsBucket:
    return pb.EarningsBucket(
        period_start=timestamp(bucket.period_start),
        unit=bucket.unit,
        credited_minor=bucket.credited,
        debited_minor=bucket.debited,
        net_minor=bucket.net,
    )


def earnings_to_pb(earnings: Earnings) -> pb.GetCommissionEarningsResponse:
    return pb.GetCommissionEarningsResponse(
        buckets=[_bucket_to_pb(b) for b in earnings.buckets],
        totals=[_bucket_to_pb(b) for b in earnings.totals],
    )
