"""The provider health page of the admin: one provider account's last 48 hours from the hourly
provider stats (payments.services.provider_stats) as three server-rendered SVG bar charts
(volume, success rate, p95 latency: no JavaScript, nothing from a CDN), the hours as a table,
and what routing scores the account now.

Served at /admin/providers/provideraccount/<id>/health/ (ProviderAccountAdmin.get_urls,
payments/admin_providers.py), to whoever may view provider accounts; linked from the
account's change page and the accounts list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from payments.models import ProviderHourlyStats
from payments.services.provider_stats import provider_health
from providers.models import ProviderAccount
from providers.routing import stats as routing_stats

HOURS = 48
WIDTH, HEIGHT, LEFT, TOP, BOTTOM = 760, 150, 56, 12, 22  # px; LEFT: the y-axis labels
SLOT = (WIDTH - LEFT) / HOURS


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip: the hour and its number


@dataclass(frozen=True)
class Chart:
    title: str
    top_label: str  # the y-axis maximum, as shown
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # x, "HH:00" every 6 hours
    empty: bool
    css_class: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    plot_bottom: int = HEIGHT - BOTTOM


def _chart(title: str, css_class: str, hours: list[dt.datetime], values: list[float | None],
           top: float, top_label: str, describe: list[str]) -> Chart:
    plot = HEIGHT - BOTTOM - TOP
    bars = []
    for i, (value, text) in enumerate(zip(values, describe, strict=True)):
        if value is None:
            continue
        height = max(1.0, plot * value / top) if value > 0 else 0.0
        bars.append(Bar(x=round(LEFT + i * SLOT + 1, 1), y=round(HEIGHT - BOTTOM - height, 1),
                        width=round(SLOT - 2, 1), height=round(height, 1), title=text))
    ticks = [(round(LEFT + i * SLOT, 1), f"{hour:%H:00}") for i, hour in enumerate(hours)
             if hour.hour % 6 == 0]
    return Chart(title=title, top_label=top_label, bars=bars, ticks=ticks,
                 empty=all(v is None for v in values), css_class=css_class)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def health_charts(series: list[tuple[dt.datetime, ProviderHourlyStats | None]]) -> list[Chart]:
    hours = [hour for hour, _ in series]
    rows = [row for _, row in series]
    labels = [f"{hour:%Y-%m-%d %H:00} UTC" for hour in hours]
    volume = [float(row.attempts) if row else None for row in rows]
    top_volume = max([v for v in volume if v] or [1.0])
    rate = [row.success_rate if row else None for row in rows]
    p95 = [float(row.latency_p95_ms) if row and row.latency_p95_ms is not None else None
           for row in rows]
    top_p95 = max([v for v in p95 if v] or [1.0])
    return [
        _chart("Volume (attempts per hour)", "volume", hours, volume, top_volume,
               f"{top_volume:.0f}",
               [f"{label}: {row.attempts} attempts ({row.approved} approved, "
                f"{row.declined_soft + row.declined_hard} declined, {row.errors} errors, "
                f"{row.refused} refused)" if row else f"{label}: none"
                for label, row in zip(labels, rows, strict=True)]),
        _chart("Success rate (approved / decided)", "rate", hours, rate, 1.0, "100%",
               [f"{label}: {_percent(row.success_rate)} of {row.decided} decided" if row
                else f"{label}: none" for label, row in zip(labels, rows, strict=True)]),
        _chart("p95 latency (ms)", "latency", hours, p95, top_p95, f"{top_p95:.0f} ms",
               [f"{label}: p95 {row.latency_p95_ms} ms (p50 {row.latency_p50_ms}, "
                f"p99 {row.latency_p99_ms}, {row.latency_samples} calls)"
                if row and row.latency_p95_ms is not None else f"{label}: none"
                for label, row in zip(labels, rows, strict=True)]),
    ]


def provider_health_view(request: HttpRequest, object_id: str,
                         model_admin: admin.ModelAdmin[Any]) -> HttpResponse:
    account = ProviderAccount.objects.select_related("merchant").filter(pk=object_id).first()
    if account is None:
        raise Http404("No such provider account.")
    if not model_admin.has_view_permission(request, account):
        raise PermissionDenied
    series = provider_health(account=account, hours=HOURS)
    rate = routing_stats.success_rates([account])[account.id]
    context = {
        **admin.site.each_context(request),
        "title": f"Health of {account}",
        "account": account,
        "opts": ProviderAccount._meta,
        "charts": health_charts(series),
        "rows": [row for _, row in reversed(series) if row is not None],
        "routing": {"rate": _percent(rate.rate), "basis": rate.basis,
                    "samples": rate.samples},
        "now": timezone.now(),
        "hours": HOURS,
    }
    return render(request, "admin/payments/provider_health.html", context)
