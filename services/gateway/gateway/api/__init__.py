"""HTTP request/response models and their named conversions to and from the gRPC contracts."""
