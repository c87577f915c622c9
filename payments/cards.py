"""Card number checks: Luhn, brand by IIN range and length, expiry, CVC."""

from __future__ import annotations

import datetime as dt
import re

from payments.errors import InvalidRequest

# (brand, IIN ranges as (low, high) over the first digits, allowed lengths, CVC length)
_BRANDS: list[tuple[str, list[tuple[int, int]], set[int], int]] = [
    ("amex", [(34, 34), (37, 37)], {15}, 4),
    ("visa", [(4, 4)], {13, 16, 19}, 3),
    ("mastercard", [(51, 55), (2221, 2720)], {16}, 3),
    ("discover", [(6011, 6011), (644, 649), (65, 65)], {16, 19}, 3),
    ("jcb", [(3528, 3589)], {16, 17, 18, 19}, 3),
    ("diners", [(300, 305), (36, 36), (38, 39)], {14, 16, 19}, 3),
    ("unionpay", [(62, 62)], {16, 17, 18, 19}, 3),
]


# Digits in groups split by single spaces or dashes ("4242 4242 4242 4242"), wherever a
# merchant or a provider put them. A card number is some run of whole groups within one.
_DIGIT_GROUPS = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")


def redact_card_numbers(text: str) -> str:
    """`text` with every card number in it replaced by "[redacted]".

    A card number is 12 to 19 digits that pass the Luhn check, alone or as consecutive groups
    of a longer run ("card 4242 4242 4242 4242 1050"). Other digits (amounts, timestamps,
    the service's own bounds, a 23-digit reference) are left alone: masking every long
    enough number made error messages and logs lie about them.
    """
    return _DIGIT_GROUPS.sub(_redact_run, text)


def _redact_run(match: re.Match) -> str:
    run = match.group()
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    covered = [False] * len(groups)
    for first in range(len(groups)):
        digits = ""
        for last in range(first, len(groups)):
            start, end = groups[last]
            digits += run[start:end]
            if len(digits) > 19:
                break
            if len(digits) >= 12 and luhn_valid(digits):
                covered[first:last + 1] = [True] * (last + 1 - first)
    if not any(covered):
        return run
    out, previous_end, previous_covered = [], 0, False
    for (start, end), is_card in zip(groups, covered, strict=True):
        if not (is_card and previous_covered):  # a card's inner separators go with it
            out.append(run[previous_end:start])
        if is_card and not previous_covered:
            out.append("[redacted]")
        elif not is_card:
            out.append(run[start:end])
        previous_end, previous_covered = end, is_card
    return "".join(out)


def luhn_valid(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand(number: str) -> tuple[str, set[int], int] | None:
    for brand, ranges, lengths, cvc_len in _BRANDS:
        for low, high in ranges:
            width = len(str(low))
            if low <= int(number[:width]) <= high:
                return brand, lengths, cvc_len
    return None


def _integer(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{param} must be an integer.", code="invalid_expiry", param=param)
    return value


def validate_card(number: object, exp_month: object, exp_year: object, cvc: object,
                  *, today: dt.date | None = None) -> tuple[str, str]:
    """Check a card; return (digits, brand). Error messages never echo the number."""
    if not isinstance(number, str):
        raise InvalidRequest("The card number must be a string of digits.",
                             code="invalid_number", param="card.number")
    digits = re.sub(r"[ -]", "", number)
    # ASCII digits only: str.isdigit() also accepts "٤" or "²", which int() may then reject
    if not re.fullmatch(r"[0-9]{12,19}", digits):
        raise InvalidRequest("The card number is not a valid card number.",
                             code="invalid_number", param="card.number")
    if not luhn_valid(digits):
        raise InvalidRequest("The card number is incorrect (checksum failed).",
                             code="incorrect_number", param="card.number")
    found = card_brand(digits)
    if found is None:
        raise InvalidRequest("This card brand is not supported.",
                             code="card_brand_unsupported", param="card.number")
    brand, lengths, cvc_len = found
    if len(digits) not in lengths:
        raise InvalidRequest(f"A {brand} card number cannot have {len(digits)} digits.",
                             code="invalid_number", param="card.number")

    exp_month = _integer(exp_month, "card.exp_month")
    exp_year = _integer(exp_year, "card.exp_year")
    if not 1 <= exp_month <= 12:
        raise InvalidRequest("card.exp_month must be between 1 and 12.",
                             code="invalid_expiry_month", param="card.exp_month")
    today = today or dt.date.today()
    if not 1000 <= exp_year <= today.year + 50:
        raise InvalidRequest("card.exp_year must be a four-digit year.",
                             code="invalid_expiry_year", param="card.exp_year")
    if (exp_year, exp_month) < (today.year, today.month):
        raise InvalidRequest("The card has expired.", code="expired_card",
                             param="card.exp_year")

    if cvc is not None:
        if not isinstance(cvc, str) or not re.fullmatch(r"[0-9]+", cvc) or len(cvc) != cvc_len:
            raise InvalidRequest(f"The CVC of a {brand} card has {cvc_len} digits.",
                                 code="invalid_cvc", param="card.cvc")
    return digits, brand


def validate_cvc(brand: str, cvc: object, *, param: str = "cvc") -> str:
    """A CVC sent with a payment for a vaulted card of `brand`: 3 digits (4 for Amex)."""
    length = next((cvc_len for name, _, _, cvc_len in _BRANDS if name == brand), 3)
    if not isinstance(cvc, str) or not re.fullmatch(r"[0-9]+", cvc) or len(cvc) != length:
        raise InvalidRequest(f"The CVC of a {brand} card has {length} digits.",
                             code="invalid_cvc", param=param)
    return cvc
