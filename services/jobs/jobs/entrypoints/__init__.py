"""Entrypoints of the jobs service: the gRPC servicer, background workers and the process main."""
