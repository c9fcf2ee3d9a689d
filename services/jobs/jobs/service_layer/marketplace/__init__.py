"""The marketplace use cases: jobs for contractors, job requests, offers and their saga."""
