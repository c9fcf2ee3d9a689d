"""The ledger domain: plain Python entities, rules and errors."""
