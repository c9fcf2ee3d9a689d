"""The jobs domain: plain Python entities, state machines and rules (standard library only)."""
