"""The jobs service: job drafts and postings, and the pay-to-post saga that orchestrates payment."""
