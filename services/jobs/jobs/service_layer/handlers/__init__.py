"""The jobs use cases: each is `async def name(cmd, deps)`, grouped by what they are about."""
