"""Resilience per provider account: circuit breaker, rate limit and concurrency cap, retries.

Shared state lives in Redis (settings.REDIS_URL) so that every web and worker process sees the
same breaker and the same limits; the embedded default without Redis keeps it in process.
`providers.gateway.call` puts the pieces together in the order that keeps them honest.
"""
