"""Checkout.com: the unified Payments API adapter (`adapter.CheckoutAdapter`), speaking the wire
format of docs/providers.md section 3 (as does its sandbox, providers/sandboxes/checkout.py)."""
