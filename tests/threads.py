"""Real threads released together, each with its own database connection (for race tests)."""

from __future__ import annotations

import threading

from django.db import connection

TIMEOUT = 60  # seconds; a deadlock must fail the test, not hang the run


def in_threads(n: int, call) -> list:
    """Run `call(i)` in `n` threads released together; returns results or raised errors."""
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    outcomes: list = [None] * n

    def worker(i: int) -> None:
        try:
            barrier.wait()
            outcomes[i] = call(i)
        except BaseException as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a call hung (deadlock?)"
    return outcomes


def race(*functions) -> list[BaseException]:
    """Run the functions at once, each in its own thread; returns what they raised."""
    outcomes = in_threads(len(functions), lambda i: functions[i]())
    return [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
