"""The pay-to-post saga's steps: Try and activation, Confirm / Cancel / Refund, and the driver."""
