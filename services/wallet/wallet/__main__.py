"""`python -m wallet`: run the wallet service."""

from wallet.entrypoints.main import main

if __name__ == "__main__":
    main()
