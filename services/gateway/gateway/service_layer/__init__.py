"""Use-case rules of the edge: JWT verification and roles, Idempotency-Key rules."""
