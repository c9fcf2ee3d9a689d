"""`python -m payments`: run the payments service."""

from payments.entrypoints.main import main

if __name__ == "__main__":
    main()
