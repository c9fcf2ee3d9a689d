"""The HTTP contract: request/response models, conversions to and from gRPC, the PAY-11 errors."""
