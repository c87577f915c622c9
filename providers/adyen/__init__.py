"""Adyen: the Checkout API v71 adapter (`adapter.AdyenAdapter`); its sandbox is
providers/sandboxes/adyen.py."""
