"""`python -m gateway`: run the HTTP gateway."""

from gateway.entrypoints.main import main

main()
