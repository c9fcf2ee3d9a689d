"""What the Stripe sandbox under test is started with (conftest) and tests check against.

Kept out of conftest.py: several conftest modules live under tests/sandbox (one per provider),
and `from conftest import ...` would read whichever was imported last.
"""

from __future__ import annotations

WEBHOOK_SECRET = "whsec_sandboxtestsecret0000000000000"
MAX_ATTEMPTS = 5
