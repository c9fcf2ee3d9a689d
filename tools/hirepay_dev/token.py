"""`make token ROLE=company USER=<id>`: print a development JWT the gateway accepts in development.

Signed with the gateway's development key (kid, issuer and audience of its development settings)
through the gateway's own `issue_token`, so the tool and the gateway can never drift apart.
"""

from __future__ import annotations

import argparse
import sys

from gateway.service_layer.auth import ROLES, issue_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hirepay_dev.token", description="Print a development JWT."
    )
    parser.add_argument("--role", required=True, choices=sorted(ROLES))
    parser.add_argument("--user", required=True, help="user id (the token's subject)")
    parser.add_argument("--email", default=None, help="email claim (optional)")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    args = parser.parse_args(argv)
    if not args.user.strip():
        parser.error("--user must not be empty")
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    token = issue_token(user_id=args.user, role=args.role, email=args.email, ttl_seconds=args.ttl)
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
