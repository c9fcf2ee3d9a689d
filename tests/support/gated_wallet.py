"""`python -m tests.support.gated_wallet`: the real wallet service, started only once the file
named by HIREPAY_TEST_WALLET_GATE exists: a wallet that comes up after the services calling it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from wallet.entrypoints.main import main as wallet_main

MODULE = "tests.support.gated_wallet"
GATE = "HIREPAY_TEST_WALLET_GATE"


def main() -> None:
    gate = Path(os.environ[GATE])
    while not gate.exists():
        time.sleep(0.05)
    wallet_main()


if __name__ == "__main__":
    main()
