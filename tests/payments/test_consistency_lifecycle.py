"""check_consistency has no false alarms: after every step of the payment-lifecycle state
machine (tests/payments/test_invariants_stateful.py: random creates, confirms, captures,
cancels, refunds, outages, processes dying mid-call, status sync, provider webhooks, extra
charges reversed), every rule holds."""

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis.stateful import invariant, run_state_machine_as_test

from payments.services.consistency import consistency_check
from tests.payments.test_invariants_stateful import PaymentLifecycle


class CheckedLifecycle(PaymentLifecycle):
    @invariant()
    def check_consistency_passes(self):
        report = consistency_check()
        assert report.ok, [str(v) for v in report.violations]


@pytest.mark.django_db(transaction=True)
def test_check_consistency_passes_on_every_state_the_lifecycle_reaches():
    run_state_machine_as_test(CheckedLifecycle, settings=hsettings(
        max_examples=12, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
