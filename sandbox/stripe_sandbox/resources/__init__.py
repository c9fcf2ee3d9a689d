"""Stripe API operations, one module per resource; each function expects the store lock held."""
