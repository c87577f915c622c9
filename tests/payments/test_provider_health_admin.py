"""The admin's provider health page: charts of the account's last 48 hours from the hourly
provider stats, linked from the account; viewers may see it, others not."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from payments.models import AttemptStatus
from payments.services import provider_stats
from payments.services.provider_stats import HOUR, hour_start
from tests.factories import ProviderAccountFactory
from tests.payments.test_provider_stats import attempt

pytestmark = pytest.mark.django_db
A = AttemptStatus


def health_url(account) -> str:
    return f"/admin/providers/provideraccount/{account.pk}/health/"


@pytest.fixture
def account():
    account = ProviderAccountFactory(name="stripe-main")
    last = hour_start(timezone.now()) - HOUR
    for i in range(4):  # the last hour: 3 of 4 approved, p95 400 ms
        attempt(account, A.CAPTURED if i < 3 else A.DECLINED, at=last + dt.timedelta(minutes=i),
                latency=100 * (i + 1), decline_code="insufficient_funds" if i == 3 else "")
    attempt(account, A.CAPTURED, at=last - 5 * HOUR, latency=50)  # five hours before
    provider_stats.provider_stats_aggregate()
    return account


def staff(client, group: str):
    user = User.objects.create_user(f"u-{group}", "u@example.invalid", "pw-not-secret",
                                    is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


def test_the_page_charts_the_last_hours(client, account):
    html = staff(client, "support").get(health_url(account)).content.decode()
    assert "Health of stripe-main" in html
    charts = re.findall(r'<svg class="(\w+)".*?</svg>', html, re.S)
    assert charts == ["volume", "rate", "latency"]
    volume = re.search(r'<svg class="volume".*?</svg>', html, re.S).group(0)
    # one bar per hour with attempts, each saying what it is
    assert len(re.findall(r"<rect ", volume)) == 2
    assert "4 attempts (3 approved, 1 declined, 0 errors, 0 refused)" in volume
    rate = re.search(r'<svg class="rate".*?</svg>', html, re.S).group(0)
    assert "75.0% of 4 decided" in rate
    latency = re.search(r'<svg class="latency".*?</svg>', html, re.S).group(0)
    assert "p95 400 ms (p50 200, p99 400, 4 calls)" in latency
    assert "400 ms</text>" in latency  # the axis' top: the highest p95
    # the table, newest first, and what routing scores now
    assert html.index("75%") < html.index("100%</td>")
    assert "Routing scores it now at" in html
    assert "<script" not in html.split('id="content-main"', 1)[1]  # no JS for the charts


def test_the_bars_scale_to_the_busiest_hour(client, account):
    html = staff(client, "support").get(health_url(account)).content.decode()
    volume = re.search(r'<svg class="volume".*?</svg>', html, re.S).group(0)
    heights = sorted(float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', volume))
    assert heights[1] == pytest.approx(4 * heights[0])  # 4 attempts vs 1


def test_an_account_without_stats_says_so(client):
    quiet = ProviderAccountFactory()
    resp = staff(client, "support").get(health_url(quiet))
    assert resp.status_code == 200
    assert "No data in these hours." in resp.content.decode()


def test_linked_from_the_account_and_the_list(client, account):
    staff(client, "payment operators")
    change = client.get(f"/admin/providers/provideraccount/{account.pk}/change/")
    assert health_url(account) in change.content.decode()
    listing = client.get("/admin/providers/provideraccount/")
    assert health_url(account) in listing.content.decode()


def test_only_staff_who_may_view_accounts(client, account):
    assert client.get(health_url(account)).status_code == 302  # to the login page
    user = User.objects.create_user("nobody", "n@example.invalid", "pw-not-secret",
                                    is_staff=True)
    client.force_login(user)
    assert client.get(health_url(account)).status_code == 403
    staff(client, "support")
    assert client.get("/admin/providers/provideraccount/acct_nope/health/").status_code == 404
