"""Stripe: the PaymentIntents adapter (adapter.py) and its wire-format sandbox (sandbox.py)."""
