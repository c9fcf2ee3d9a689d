"""`python -m paypal_sandbox --host 127.0.0.1 --port 12112`: serve the sandbox with uvicorn."""

from __future__ import annotations

from paypal_sandbox.app import create_app
from paypal_sandbox.config import load_config
from sandbox_kit.app import serve


def main() -> None:
    config = load_config()
    serve(create_app(config), config.kit)


if __name__ == "__main__":
    main()
