"""Checkout.com: the unified Payments API adapter (`adapter.CheckoutAdapter`) and its sandbox
(`sandbox.app`), both speaking the wire format of docs/providers.md section 3."""
