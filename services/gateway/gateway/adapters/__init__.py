"""Outside the edge: gRPC clients of the services behind it, the rate-limit store."""
