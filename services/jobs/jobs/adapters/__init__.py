"""Adapters of the jobs service: PostgreSQL storage and the gRPC clients of the saga's participants."""
