"""Use cases of the wallet (handlers), their ports, configuration, dependencies and metrics."""
