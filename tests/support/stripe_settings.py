"""What the Stripe sandbox under test is started with (tests/sandbox/conftest.py) and tests check against.

Kept out of conftest.py: `from conftest import ...` reads whichever conftest module was imported
last (tests/gateway, tests/sandbox/<provider>, ...), so the constants live in this package module.
"""

from __future__ import annotations

WEBHOOK_SECRET = "whsec_sandboxtestsecret0000000000000"
MAX_ATTEMPTS = 5
