"""Stripe: the PaymentIntents adapter (adapter.py); its wire-format sandbox is
providers/sandboxes/stripe.py."""
