"""`python -m jobs`: run the jobs service."""

from jobs.entrypoints.main import main

main()
