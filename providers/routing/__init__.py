"""Routing: which of a merchant's provider accounts a payment goes to, in which order, and why.

- `context.RoutingContext`: what routing knows about a payment (plain values, no ORM).
- `engine.route(context)`: rules → strategy → eligibility; a `RoutingDecision` with the
  ordered candidates and the record that is stored on the payment.
- `stats`: rolling authorization rate per account (Redis), fed by `record_outcome`.
- `retry.is_retriable`: may an outcome be retried on the next candidate (merchant overrides);
  `retry.outcome_of` / `retry.refused_before_sending` classify a gateway call's exception.
- `rules`: validation and writes of routing and retry rules (API and admin share them).
"""
