"""Cursor pagination of docs/api.md: `limit` (1–100, default 10), `starting_after=<id>`, newest
first, `{"object": "list", "data": [...], "has_more": bool}`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db.models import Q, QuerySet

from payments.errors import InvalidRequest


def parse_int_param(params, name: str, *, default=None, low=None, high=None):
    raw = params.get(name)
    if raw is None:
        return default
    # Plain ASCII digits only: int() would also take " 5", "+5", "1_0" and "٥".
    if not re.fullmatch(r"[0-9]+", raw):
        raise InvalidRequest(f"{name} must be an integer written in the digits 0-9.",
                             code="parameter_invalid", param=name)
    digits = raw.lstrip("0") or "0"
    # past 30 digits it is out of any range here, and int() has a digit limit of its own
    value = int(digits) if len(digits) <= 30 else None
    if value is None or (low is not None and value < low) or (high is not None and value > high):
        raise InvalidRequest(f"{name} must be between {low} and {high}.",
                             code="parameter_invalid", param=name)
    return value


def check_params(params, allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown query parameter: {unknown[0]}.",
                             code="parameter_unknown", param=unknown[0])


def paginate(queryset: QuerySet, params, *, by: str = "created_at") -> tuple[list, bool]:
    """One page of `queryset` (already scoped to the merchant and mode), newest first by the
    field `by` (then by id)."""
    limit = parse_int_param(params, "limit", default=10, low=1, high=100)
    queryset = queryset.order_by(f"-{by}", "-id")
    cursor_id = params.get("starting_after")
    if cursor_id:
        cursor = queryset.filter(id=cursor_id).values(by, "id").first()
        if cursor is None:
            raise InvalidRequest(f"No such object for starting_after: {cursor_id[:60]!r}.",
                                 code="resource_missing", param="starting_after")
        # (the first condition is implied by the second; it is there for the index, which
        # Postgres cannot start from an OR: the page starts at the cursor instead of
        # walking down to it from the newest row)
        queryset = queryset.filter(**{f"{by}__lte": cursor[by]}).filter(
            Q(**{f"{by}__lt": cursor[by]}) | Q(**{by: cursor[by]}, id__lt=cursor["id"])
        )
    items = list(queryset[: limit + 1])
    return items[:limit], len(items) > limit


def paginate_by_pk(queryset: QuerySet, params,
                   *, cursor: Callable[[str], dict[str, Any]]) -> tuple[list, bool]:
    """One page of `queryset` (already scoped), newest first by row id, for tables whose
    list index is on the row id (events, delivery attempts) rather than `created_at`.
    `cursor(starting_after)` is the lookup that finds the cursor's row."""
    limit = parse_int_param(params, "limit", default=10, low=1, high=100)
    queryset = queryset.order_by("-pk")
    cursor_id = params.get("starting_after")
    if cursor_id:
        cursor_pk = queryset.filter(**cursor(cursor_id)).values_list("pk", flat=True).first()
        if cursor_pk is None:
            raise InvalidRequest(f"No such object for starting_after: {cursor_id[:60]!r}.",
                                 code="resource_missing", param="starting_after")
        queryset = queryset.filter(pk__lt=cursor_pk)
    items = list(queryset[: limit + 1])
    return items[:limit], len(items) > limit
