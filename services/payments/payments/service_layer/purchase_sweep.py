"""Where the provider reconciliation's pass through paid plan purchases is (OPS-3), for providers
whose refunds made at them arrive by no event (Fatora): such a refund is learnt only by reading
the purchase's payment at the provider, so every paid purchase is read in turn, a batch a round.

Process state, shared by every Deps of the process like the in-flight table: a restart (or another
replica) begins its pass again from the oldest, so at worst some purchases are read twice and none
is skipped; no table, no migration. The round's most recently changed purchases are read too, so a
purchase paid and refunded lately is found at the next round whatever the pass holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from payments.domain.transactions import Transaction


@dataclass(slots=True)
class PurchaseSweep:
    """The pass's cursor: after this purchase's (updated_at, id); None: from the oldest."""

    after: tuple[datetime, str] | None = None

    def advance(self, batch: Sequence[Transaction], done: int, per_round: int) -> None:
        """Past the batch's first `done` purchases (those checked, in the pass's order); a batch
        shorter than a round's, all done, ends the pass: the next begins from the oldest."""
        if done >= len(batch) and len(batch) < per_round:
            self.after = None
        elif done:
            last = batch[done - 1]
            self.after = (last.updated_at, last.id)
