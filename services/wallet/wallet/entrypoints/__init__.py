"""How the wallet is reached: the gRPC servicer, the hold-expiry worker, the process main."""
