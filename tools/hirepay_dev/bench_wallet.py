"""Wallet benchmark: transfers per second and latency through gRPC against the real wallet process,
beside pgbench's TPC-B on the same PostgreSQL server.

Cases, each at concurrency 1, 8 and 32 (closed loop, every worker with its own payer and payee so
that what is measured is the wallet, not one customer's row lock):
  - Reserve + Confirm (the two-phase handshake; one operation = both calls), concurrent calls
    grouped into one transaction by the wallet (the default), and the same against the second
    wallet process with grouping off;
  - plain transfers, concurrent calls grouped into one transaction by the wallet (the default);
  - the same against a second wallet process with grouping off (one transaction per call);
  - CreateTransfers: batches of 100 transfers per call (one operation = one transfer);
  - Reserve + Confirm through the batch calls: a CreateHolds call of 100 Trys, then a ResolveHolds
    call confirming them (one operation = one pair: a hold reserved and posted);
  - the same two, with every transfer also paying a fee into the one platform revenue account;
  - a contrast: the fee paid into one unsharded account, to show what sharding the revenue balance
    saves (every fee would otherwise queue on one row lock).

Run: `make bench` (the lead's runner calls run()), or `python -m hirepay_dev.bench_wallet`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import asyncpg
import grpc

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev import pg
from hirepay_dev.benchcpu import CpuMeter
from hirepay_dev.benchlib import Result, closed_loop, pgbench_tpcb
from hirepay_dev.procs import ensure_service_token_secret
from hirepay_dev.services import WALLET, RunningService, prepare_database, start_service
from hirepay_platform import eventloop
from hirepay_platform.identity import TokenMinter

CONCURRENCY = (1, 8, 32)
SECONDS = 4.0
QUICK_CONCURRENCY = (1, 8)
QUICK_SECONDS = 1.5
BATCH = 100
AMOUNT = 100
FEE = 10
TIMEOUT = 10.0
# The wallet cases' database.
DATABASE = "hirepay_bench_wallet"


def _money(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="USD")


# What every measured call sends the same: built once (a field set from it is copied in C).
_AMOUNT = _money(AMOUNT)
_urandom = os.urandom


def _id() -> str:
    """32 random hex digits, an id of its own for every call (os.urandom's in C: uuid4().hex
    was three Python calls). The measured operations write `_urandom(16).hex()` in place, one
    Python call fewer per id (each call of a case makes two or three)."""
    return _urandom(16).hex()


class Signer:
    """The metadata every call of the benchmark carries: jobs' signed service token for the
    wallet, as jobs sends it (`TokenMinter.metadata`, the token reused for half its life), passed
    with each call as one `grpc.aio.Metadata` made again only when the token changes. The calls
    used to be signed by a client interceptor on the channel (`SigningInterceptor`): grpc.aio
    runs an intercepted unary call through its interceptor machinery (a task, call details and
    an intercepted call object per call), several times a plain call's cost in the load
    generator, which shares the two cores with the wallet (issue 13, round 14). Every call is
    still one unary call with its own ids and the same request. The token's metadata is kept
    until the minter would mint another (`TokenMinter.signed`), as the platform's client keeps
    it."""

    def __init__(self, audience: str, minter: TokenMinter) -> None:
        self._audience = audience
        self._minter = minter
        self._clock = minter.clock
        self._until = float("-inf")
        self._metadata = grpc.aio.Metadata()

    def __call__(self) -> grpc.aio.Metadata:
        # One clock reading per call while the token is handed out (`TokenMinter.signed`: until
        # half its life), not the minter's cache lookups (four Python calls per call).
        now = self._clock()
        if now >= self._until:
            signed, self._until = self._minter.signed(self._audience, None, now)
            self._metadata = grpc.aio.Metadata(*signed)
        return self._metadata


class Fixture:
    """Accounts of the benchmark: a funding source, the revenue account, payer/payee pairs."""

    def __init__(self, stub: pb_grpc.WalletServiceStub, pairs: int, sign: Signer) -> None:
        self.stub = stub
        self.sign = sign
        self.pairs = pairs
        self.tag = _id()[:8]
        self.payers: list[str] = []
        self.payees: list[str] = []
        self.revenue = ""
        self.hot_unsharded = ""

    async def _open(self, owner: str, kind: int, allow_negative: bool = False) -> str:
        reply = await self.stub.OpenAccount(
            pb.OpenAccountRequest(
                request_id=_id(),
                owner_id=f"{owner}-{self.tag}",
                currency="USD",
                kind=kind,
                allow_negative=allow_negative,
            ),
            timeout=TIMEOUT,
            metadata=self.sign(),
        )
        return reply.account.account_id

    async def setup(self) -> None:
        clearing = await self._open("clearing", pb.ACCOUNT_KIND_PROVIDER_CLEARING, True)
        self.revenue = await self._open("platform", pb.ACCOUNT_KIND_PLATFORM_REVENUE)
        # An ordinary (unsharded) account standing in for a revenue account without shards.
        self.hot_unsharded = await self._open("platform-unsharded", pb.ACCOUNT_KIND_ESCROW)
        for i in range(self.pairs):
            self.payers.append(await self._open(f"payer{i}", pb.ACCOUNT_KIND_USER))
            self.payees.append(await self._open(f"payee{i}", pb.ACCOUNT_KIND_USER))
        await asyncio.gather(
            *(
                self.stub.Transfer(
                    pb.TransferRequest(
                        request_id=_id(),
                        transfer_id=f"fund-{_id()}",
                        legs=[
                            pb.TransferLeg(
                                from_account_id=clearing,
                                to_account_id=payer,
                                amount=_money(10**12),
                            )
                        ],
                    ),
                    timeout=TIMEOUT,
                    metadata=self.sign(),
                )
                for payer in self.payers
            )
        )

    # --- the operations measured -------------------------------------------------------------

    def transfer(
        self, fee_to: str | None, stub: pb_grpc.WalletServiceStub | None = None
    ) -> Callable[[int, int], Awaitable[None]]:
        call = (stub or self.stub).Transfer
        sign = self.sign
        # Each worker's legs (its payer to its payee, and the fee) are the same on every call.
        legs = [
            [pb.TransferLeg(from_account_id=payer, to_account_id=payee, amount=_AMOUNT)]
            + (
                [pb.TransferLeg(from_account_id=payer, to_account_id=fee_to, amount=_money(FEE))]
                if fee_to
                else []
            )
            for payer, payee in zip(self.payers, self.payees, strict=True)
        ]

        async def op(worker: int, _: int) -> None:
            await call(
                pb.TransferRequest(
                    request_id=_urandom(16).hex(),
                    transfer_id="b-" + _urandom(16).hex(),
                    legs=legs[worker],
                ),
                timeout=TIMEOUT,
                metadata=sign(),
            )

        return op

    def batch(self, size: int) -> Callable[[int, int], Awaitable[None]]:
        """One CreateTransfers call of `size` transfers from the worker's payer to its payee."""

        async def op(worker: int, _: int) -> None:
            payer, payee = self.payers[worker], self.payees[worker]
            leg = pb.TransferLeg(from_account_id=payer, to_account_id=payee, amount=_money(AMOUNT))
            reply = await self.stub.CreateTransfers(
                pb.CreateTransfersRequest(
                    request_id=_id(),
                    transfers=[
                        pb.TransferRequest(transfer_id=f"bb-{_id()}", legs=[leg])
                        for _ in range(size)
                    ],
                ),
                timeout=TIMEOUT,
                metadata=self.sign(),
            )
            _check_batch(reply.results, "transfers")

        return op

    def hold_batch(self, size: int) -> Callable[[int, int], Awaitable[None]]:
        """One CreateHolds call of `size` Trys from the worker's payer to its payee, then one
        ResolveHolds call confirming them all."""

        async def op(worker: int, _: int) -> None:
            payer, payee = self.payers[worker], self.payees[worker]
            saga = _id()
            branches = [
                common_pb2.TccBranch(global_tx_id=f"bh-{saga}-{i}", branch_id="payment")
                for i in range(size)
            ]
            held = await self.stub.CreateHolds(
                pb.CreateHoldsRequest(
                    request_id=_id(),
                    holds=[
                        pb.ReserveHoldRequest(
                            branch=branch,
                            account_id=payer,
                            destination_account_id=payee,
                            amount=_money(AMOUNT),
                        )
                        for branch in branches
                    ],
                ),
                timeout=TIMEOUT,
                metadata=self.sign(),
            )
            _check_batch(held.results, "holds")
            confirmed = await self.stub.ResolveHolds(
                pb.ResolveHoldsRequest(
                    request_id=_id(),
                    resolutions=[
                        pb.HoldResolution(confirm=pb.ConfirmHoldRequest(branch=branch))
                        for branch in branches
                    ],
                ),
                timeout=TIMEOUT,
                metadata=self.sign(),
            )
            _check_batch(confirmed.results, "confirms")

        return op

    def reserve_confirm(
        self, with_fee: bool, stub: pb_grpc.WalletServiceStub | None = None
    ) -> Callable[[int, int], Awaitable[None]]:
        wallet = stub or self.stub
        reserve, confirm, sign = wallet.ReserveHold, wallet.ConfirmHold, self.sign
        payers, payees = self.payers, self.payees
        # A 10% platform fee, the rest to the payee: the same shares on every call of a worker.
        shares = [
            [
                pb.SplitShare(to_account_id=self.revenue, basis_points=1000),
                pb.SplitShare(to_account_id=payee, basis_points=9000),
            ]
            if with_fee
            else []
            for payee in payees
        ]
        remainders = [payee if with_fee else "" for payee in payees]

        async def op(worker: int, _: int) -> None:
            branch = common_pb2.TccBranch(
                global_tx_id="saga-" + _urandom(16).hex(), branch_id="payment"
            )
            await reserve(
                pb.ReserveHoldRequest(
                    request_id=_urandom(16).hex(),
                    branch=branch,
                    account_id=payers[worker],
                    destination_account_id=payees[worker],
                    amount=_AMOUNT,
                ),
                timeout=TIMEOUT,
                metadata=sign(),
            )
            await confirm(
                pb.ConfirmHoldRequest(
                    request_id=_urandom(16).hex(),
                    branch=branch,
                    shares=shares[worker],
                    remainder_account_id=remainders[worker],
                ),
                timeout=TIMEOUT,
                metadata=sign(),
            )

        return op


def _check_batch(results: Sequence[Any], what: str) -> None:
    """A batch call's operation fails when one of its items was refused."""
    refused = [r.error.reason for r in results if r.HasField("error")]
    if refused:
        raise RuntimeError(f"{len(refused)} {what} refused: {refused[0]}")


async def _vacuum(db_url: str) -> None:
    """VACUUM (ANALYZE) the wallet's database before a case, as pgbench vacuums its tables before
    its run. Autovacuum visits a database once per naptime and then vacuums and analyzes every
    table that is due at once (the ledger's four big ones: a few CPU-seconds): whichever case
    that landed in lost a quarter of its throughput to it (a full run at 0ce3a1f: "transfer, fee
    to revenue" at c=32 with 0.24 CPU-ms per transfer of PostgreSQL's outside the wallet's
    backends, the only case with any, read as the fee's cost). With each case starting vacuumed,
    a case no longer inherits the tables' due work from the cases before it."""
    connection = await asyncpg.connect(pg.libpq_url(db_url))
    try:
        await connection.execute("VACUUM (ANALYZE)")
    finally:
        await connection.close()


Case = tuple[str, Callable[[int, int], Awaitable[None]], tuple[int, ...], RunningService, int]


def case_groups(
    fixture: Fixture,
    single: pb_grpc.WalletServiceStub,
    grouped: RunningService,
    ungrouped: RunningService,
    levels: tuple[int, ...],
) -> list[list[Case]]:
    """The wallet cases, in groups that `schedule` runs side by side (name, operation, levels,
    the wallet process measured, operations per call)."""
    # Each case with a fee runs right beside the case without it, level by level
    # (`schedule`): what the fee costs is judged from the two, and the ledger grows by
    # every case (the batch cases add ~500,000 rows), so the two must run on the same
    # tables. Run apart (the fee cases after the batches) the same code had shown a
    # Reserve+Confirm fee costing 26%; side by side 1% and 6% in two pairs at c=32 (round 18).
    return [
        [
            ("reserve+confirm", fixture.reserve_confirm(False), levels, grouped, 1),
            (
                "reserve+confirm, fee to revenue",
                fixture.reserve_confirm(True),
                levels,
                grouped,
                1,
            ),
        ],
        [
            (
                "reserve+confirm (one txn per call)",
                fixture.reserve_confirm(False, single),
                levels,
                ungrouped,
                1,
            )
        ],
        [
            ("transfer (grouped)", fixture.transfer(None), levels, grouped, 1),
            (
                "transfer, fee to revenue",
                fixture.transfer(fixture.revenue),
                levels,
                grouped,
                1,
            ),
            (
                "transfer, fee to unsharded acct",
                fixture.transfer(fixture.hot_unsharded),
                tuple(c for c in levels if c > 1),
                grouped,
                1,
            ),
        ],
        [
            (
                "transfer (one txn per call)",
                fixture.transfer(None, single),
                levels,
                ungrouped,
                1,
            )
        ],
        [(f"transfers, batch of {BATCH}", fixture.batch(BATCH), levels, grouped, BATCH)],
        [
            (
                f"reserve+confirm, batch of {BATCH}",
                fixture.hold_batch(BATCH),
                levels,
                grouped,
                BATCH,
            )
        ],
    ]


_Op = TypeVar("_Op")
_S = TypeVar("_S")


def schedule(
    groups: Sequence[Sequence[tuple[str, _Op, tuple[int, ...], _S, int]]],
) -> list[tuple[str, _Op, int, _S, int]]:
    """The order the cases run in: group by group, and within a group level by level, each
    level of every case of the group in turn, so that cases compared with each other (a fee
    and none) run side by side on the same tables (a case only at some levels is left out of
    the others)."""
    order: list[tuple[str, _Op, int, _S, int]] = []
    for group in groups:
        for level in sorted({c for case in group for c in case[2]}):
            order += [
                (name, op, level, service, per_call)
                for name, op, case_levels, service, per_call in group
                if level in case_levels
            ]
    return order


def _start_wallet(db_url: str, name: str, env: dict[str, str]) -> RunningService:
    return start_service(
        WALLET,
        db_url,
        env={
            "WALLET_DB_POOL_SIZE": "40",
            "WALLET_DB_MAX_OVERFLOW": "10",
            "WALLET_LOG_LEVEL": "WARNING",
            **env,
        },
        log_name=name,
    )


async def run(
    pg_url: str,
    out: Callable[[str], None],
    baseline: float | None = None,
    *,
    quick: bool = False,
) -> dict[str, Any]:
    """Start the wallet on a fresh database of the server at `pg_url`, measure, print, return.

    `baseline` is pgbench's TPC-B tps from the same run; measured here when not given. `quick`
    runs fewer concurrency levels for a shorter time (a smoke run, not figures to publish).
    """
    levels = QUICK_CONCURRENCY if quick else CONCURRENCY
    seconds = QUICK_SECONDS if quick else SECONDS
    if baseline is None:
        out("wallet benchmark: pgbench TPC-B baseline (8 clients) ...")
        baseline = await asyncio.to_thread(
            pgbench_tpcb, pg_url, clients=8, seconds=3 if quick else 10
        )
        out(f"pgbench TPC-B                      c=8   {baseline:8.1f} tps")

    database = DATABASE
    db_url = await asyncio.to_thread(prepare_database, WALLET, pg_url, name=database, fresh=True)
    grouped = await asyncio.to_thread(_start_wallet, db_url, "wallet-bench", {})
    results: list[Result] = []
    ungrouped: RunningService | None = None
    try:
        # A second replica on the same database with grouping off (transfers and holds): one
        # transaction per call.
        ungrouped = await asyncio.to_thread(
            _start_wallet,
            db_url,
            "wallet-bench-ungrouped",
            {"WALLET_TRANSFER_BATCH_MAX_ITEMS": "1", "WALLET_HOLD_BATCH_MAX_ITEMS": "1"},
        )
        assert grouped.process.popen is not None and ungrouped.process.popen is not None

        def meter(service: RunningService) -> CpuMeter:
            assert service.process.popen is not None
            return CpuMeter(pg_url, {"wallet": service.process.popen.pid}, {database: "wallet"})

        # The benchmark calls the wallet as jobs does (a signed service token on every call).
        sign = Signer("wallet", TokenMinter("jobs", ensure_service_token_secret()))
        async with (
            grpc.aio.insecure_channel(grouped.target) as channel,
            grpc.aio.insecure_channel(ungrouped.target) as channel_ungrouped,
        ):
            fixture = Fixture(pb_grpc.WalletServiceStub(channel), pairs=max(levels), sign=sign)
            await fixture.setup()
            single = pb_grpc.WalletServiceStub(channel_ungrouped)
            groups = case_groups(fixture, single, grouped, ungrouped, levels)
            for name, op, concurrency, service, per_call in schedule(groups):
                await _vacuum(db_url)
                result = await closed_loop(
                    name,
                    op,
                    concurrency=concurrency,
                    seconds=seconds,
                    meter=meter(service),
                    per_call=per_call,
                )
                results.append(result)
                out(result.line(baseline))
    finally:
        await asyncio.to_thread(grouped.stop)
        if ungrouped is not None:
            await asyncio.to_thread(ungrouped.stop)
    return {
        "pgbench_tps": baseline,
        "cases": [
            {**asdict(r), "per_second": r.per_second, "ratio_to_pgbench": r.per_second / baseline}
            for r in results
        ],
    }


if __name__ == "__main__":
    eventloop.run(run(pg.server_url(), print))
