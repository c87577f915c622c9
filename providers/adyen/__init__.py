"""Adyen: the Checkout API v71 adapter (`adapter.AdyenAdapter`) and its sandbox (`sandbox.app`)."""
