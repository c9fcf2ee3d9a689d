"""`python -m razorpay_sandbox --host 127.0.0.1 --port 12113`: serve the sandbox with uvicorn."""

from __future__ import annotations

from razorpay_sandbox.app import create_app
from razorpay_sandbox.config import load_config
from sandbox_kit.app import serve


def main() -> None:
    config = load_config()
    serve(create_app(config), config.kit)


if __name__ == "__main__":
    main()
