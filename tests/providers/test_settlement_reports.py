"""Each provider's settlement report in its real format (docs/providers.md 1.9, 2.9, 3.9),
read by its adapter's `fetch_settlement(day)` into `providers.settlement` lines. The
fixtures are built from the documented formats, not from our sandboxes: the requests the
adapter sends are checked too (paths, query, paging, auth)."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from providers import settlement
from providers.adyen.adapter import AdyenAdapter
from providers.base import AccountConfig, ProviderBadRequest
from providers.checkout.adapter import CheckoutAdapter
from providers.stripe.adapter import StripeAdapter

DAY = dt.date(2026, 3, 9)
START = int(dt.datetime(2026, 3, 9, tzinfo=dt.UTC).timestamp())


def adapter(cls, provider: str, handler, **credentials):
    config = AccountConfig(name=f"{provider}-test", provider=provider, livemode=False,
                           base_url="https://provider.example.test", credentials=credentials)
    client = httpx.Client(base_url=config.base_url, transport=httpx.MockTransport(handler))
    return cls(config, client=client)


# --- Stripe: balance transactions ---------------------------------------------------------------
def stripe_txn(txn_id: str, **fields) -> dict:
    base = {"id": txn_id, "object": "balance_transaction", "available_on": START + 172800,
            "created": START + 3600, "currency": "usd", "description": None,
            "exchange_rate": None, "fee_details": [], "reporting_category": "charge",
            "status": "available"}
    return {**base, **fields}


def test_stripe_balance_transactions_of_the_day_every_page():
    pages = [
        {"object": "list", "url": "/v1/balance_transactions", "has_more": True, "data": [
            stripe_txn("txn_1", amount=1050, fee=60, net=990, type="charge",
                       source={"id": "ch_1", "object": "charge", "amount": 1050,
                               "payment_intent": "pi_1", "currency": "usd",
                               "metadata": {"switchyard_attempt": "att_1"}},
                       fee_details=[{"amount": 60, "application": None, "currency": "usd",
                                     "description": "Stripe processing fees",
                                     "type": "stripe_fee"}]),
            stripe_txn("txn_2", amount=-300, fee=0, net=-300, type="refund",
                       reporting_category="refund", status="pending",
                       source={"id": "re_1", "object": "refund", "amount": 300,
                               "charge": "ch_1", "payment_intent": "pi_1",
                               "metadata": {"switchyard_operation": "re_ours"}}),
        ]},
        {"object": "list", "url": "/v1/balance_transactions", "has_more": False, "data": [
            stripe_txn("txn_3", amount=100000, fee=2930, net=97070, type="charge",
                       currency="isk", source={"id": "ch_2", "object": "charge",
                                               "payment_intent": "pi_2", "metadata": {}}),
            stripe_txn("txn_4", amount=-5000, fee=0, net=-5000, type="payout",
                       reporting_category="payout", source="po_1"),
            stripe_txn("txn_5", amount=-1500, fee=0, net=-1500, type="adjustment",
                       reporting_category="dispute", source="du_1"),
        ]},
    ]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[len(seen) - 1])

    report = adapter(StripeAdapter, "stripe", handler, secret_key="sk_test_x").fetch_settlement(
        DAY)

    first, second = (parse_qs(urlsplit(str(r.url)).query) for r in seen)
    assert [r.url.path for r in seen] == ["/v1/balance_transactions"] * 2
    assert first == {"created[gte]": [str(START)], "created[lt]": [str(START + 86400)],
                     "limit": ["100"], "expand[]": ["data.source"]}
    assert second == {**first, "starting_after": ["txn_2"]}
    assert seen[0].headers["authorization"] == "Bearer sk_test_x"
    charge, refund, isk, payout, dispute = report.lines
    assert charge == settlement.SettlementLine(
        line_id="txn_1", kind="capture", amount_minor=1050, currency="USD", fee_minor=60,
        fee_currency="USD", status="settled", our_reference="", payment_reference="att_1",
        provider_reference="pi_1", operation_reference="ch_1",
        occurred_at=dt.datetime(2026, 3, 9, 1, tzinfo=dt.UTC), raw_type="charge")
    assert (refund.kind, refund.amount_minor, refund.status, refund.our_reference,
            refund.provider_reference, refund.operation_reference) == (
        "refund", 300, "pending", "re_ours", "pi_1", "re_1")
    # ISK: hundredths on Stripe's wire; the fee's fraction of a krona is rounded
    assert (isk.amount_minor, isk.currency, isk.fee_minor) == (1000, "ISK", 29)
    assert (payout.kind, payout.operation_reference) == ("other", "po_1")
    assert dispute.kind == "chargeback"
    assert report.day == DAY and "balance_transactions" in report.source


def test_stripe_an_unreadable_transaction_is_refused():
    def handler(request):
        return httpx.Response(200, json={"object": "list", "has_more": False,
                                         "data": [stripe_txn("txn_1", amount="10.50", fee=0,
                                                             type="charge")]})

    with pytest.raises(ProviderBadRequest):
        adapter(StripeAdapter, "stripe", handler, secret_key="sk").fetch_settlement(DAY)


# --- Adyen: the settlement details report ---------------------------------------------------------
# Adyen's default column order (docs/providers.md 2.9), a Fee line, a payout and a chargeback
ADYEN_REPORT = (
    "Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,"
    "Creation Date,TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),"
    "Gross Credit (GC),Exchange Rate,Net Currency,Net Debit (NC),Net Credit (NC),"
    "Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC),Payment Method Variant,"
    "Modification Merchant Reference,Batch Number,Reserved4,Reserved5,Reserved6,Reserved7,"
    "Reserved8,Reserved9,Reserved10\n"
    "Co,Shop,8815000000000001,att_1,visa,2026-03-08 10:00:00,CET,Settled,8825000000000001,"
    "EUR,,10.50,1,EUR,,10.20,,0.10,0.05,0.15,visa,mod_1,433,,,,,,,\n"
    "Co,Shop,8815000000000001,att_1,visa,2026-03-08 12:00:00,CET,Refunded,8835000000000001,"
    "EUR,3.00,,1,EUR,3.00,,,,,,visa,re_1,433,,,,,,,\n"
    "Co,Shop,8815000000000002,att_2,mc,2026-03-08 13:00:00,CET,Chargeback,8845000000000001,"
    "JPY,1000,,1,JPY,1000,,,,,,mc,,433,,,,,,,\n"
    "Co,Shop,,,,2026-03-09 01:00:00,CET,Fee,,EUR,0.12,,1,EUR,0.12,,,,,,,,433,,,,,,,\n"
    "Co,Shop,,,,2026-03-09 01:00:00,CET,MerchantPayout,,EUR,7.08,,1,EUR,7.08,,,,,,,,433,,,,,,,\n"
)


def test_adyen_the_batch_closed_that_day_downloaded_as_a_report_user():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=ADYEN_REPORT, headers={"Content-Type": "text/csv"})

    instance = adapter(AdyenAdapter, "adyen", handler, api_key="k", merchant_account="Shop",
                       report_username="report@Company.Co", report_password="pw",
                       report_base_url="https://ca-test.example.test",
                       settlement_batch_epoch="2025-01-01")

    report = instance.fetch_settlement(DAY)

    [request] = seen
    assert str(request.url) == ("https://ca-test.example.test/reports/download/MerchantAccount/"
                                "Shop/settlement_detail_report_batch_433.csv")
    assert request.headers["authorization"] == httpx.BasicAuth(
        "report@Company.Co", "pw")._auth_header and "x-api-key" not in request.headers
    settled, refunded, chargeback, fee, payout = report.lines
    assert settled == settlement.SettlementLine(
        line_id="433:Settled:8815000000000001:8825000000000001", kind="capture",
        amount_minor=1050, currency="EUR", fee_minor=30, fee_currency="EUR",
        our_reference="mod_1", payment_reference="att_1",
        provider_reference="8815000000000001", operation_reference="8825000000000001",
        occurred_at=settled.occurred_at, raw_type="Settled")
    assert settled.occurred_at.utcoffset() == dt.timedelta(hours=1)  # CET
    assert (refunded.kind, refunded.amount_minor, refunded.our_reference) == ("refund", 300,
                                                                             "re_1")
    assert (chargeback.kind, chargeback.amount_minor, chargeback.currency) == (
        "chargeback", 1000, "JPY")
    assert (fee.kind, payout.kind) == ("fee", "other")
    assert "batch_433" in report.source


def test_adyen_batches_count_from_the_sandbox_epoch_by_default_and_with_the_api_key():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, text=ADYEN_REPORT.splitlines()[0] + "\n")

    instance = adapter(AdyenAdapter, "adyen", handler, api_key="k", merchant_account="Shop")
    assert instance.fetch_settlement(dt.date(2020, 1, 3)).lines == ()
    assert seen[0].url.path.endswith("settlement_detail_report_batch_3.csv")
    assert seen[0].headers["x-api-key"] == "k"
    with pytest.raises(ProviderBadRequest):
        instance.fetch_settlement(dt.date(2019, 12, 31))  # before batch 1


# --- Checkout.com: the Reconciliation API -------------------------------------------------------
def checkout_payment(payment_id: str, reference: str, actions, *, currency="USD",
                     channel="www.example.com") -> dict:
    return {"id": payment_id, "processing_currency": currency, "payout_currency": "GBP",
            "requested_on": "2026-03-09T10:29:51.922", "channel_name": channel,
            "reference": reference, "payment_method": "VISA", "card_type": "CREDIT",
            "card_category": "Consumer", "issuer_country": "US", "merchant_country": "SI",
            "mid": "123456", "actions": actions,
            "_links": {"payments": {"href": "http://api.checkout.com/reporting/statements/x"}}}


def test_checkout_payments_of_the_day_every_page_by_links_next():
    capture = {"type": "Capture", "id": "act_cap", "processed_on": "2026-03-09T10:30:00.000",
               "response_code": "10000", "response_description": "Approved",
               "breakdown": [
                   {"type": "Captured", "date": "2026-03-09T10:30:00.000",
                    "processing_currency_amount": 10.5, "payout_currency_amount": 8.02},
                   {"type": "Interchange Fee", "processing_currency_amount": -0.2},
                   {"type": "Scheme Fixed Fee", "processing_currency_amount": "-0.1"},
                   {"type": "Gateway Fee Tax ARE USD/GBP@0.7640412612",
                    "processing_currency_amount": "-0.003",
                    "payout_currency_amount": "-0.00229212"},
                   {"type": "Rolling Reserve", "processing_currency_amount": -1.0}]}
    authorization = {"type": "Authorization", "id": "act_auth", "response_code": "10000",
                     "processed_on": "2026-03-09T10:29:51.922",
                     "breakdown": [{"type": "Authorization Fee",
                                    "processing_currency_amount": -0.05}]}
    refund = {"type": "Refund", "id": "act_ref", "response_code": "20005",
              "processed_on": "2026-03-09T11:00:00Z",
              "breakdown": [{"type": "Refunded", "processing_currency_amount": -3.0}]}
    pages = [
        {"count": 2, "data": [
            checkout_payment("pay_1", "att_1", [authorization, capture]),
            checkout_payment("pay_9", "other", [capture], channel="another-site")],
         "_links": {"next": {"href": "http://api.checkout.com/reporting/payments?from=03%2F09"
                                     "%2F2026%2000%3A00%3A00&limit=200&after=269060358"}}},
        # the documented example's shape: `data` and `actions` as single objects
        {"count": 1, "data": checkout_payment("pay_1", "att_1", refund), "_links": {}},
    ]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[len(seen) - 1])

    instance = adapter(CheckoutAdapter, "checkout", handler, secret_key="sk_x",
                       processing_channel_id="pc_1", report_channel_name="www.example.com")
    report = instance.fetch_settlement(DAY)

    assert [r.url.host for r in seen] == ["provider.example.test"] * 2  # never the link's host
    assert parse_qs(seen[0].url.query.decode()) == {
        "from": ["2026-03-09T00:00:00Z"], "to": ["2026-03-10T00:00:00Z"], "limit": ["200"]}
    assert seen[1].url.path == "/reporting/payments"
    assert parse_qs(seen[1].url.query.decode())["after"] == ["269060358"]
    assert seen[0].headers["authorization"] == "Bearer sk_x"
    auth_fee, captured, refunded = report.lines  # pay_9 is another channel's
    assert captured == settlement.SettlementLine(
        line_id="act_cap", kind="capture", amount_minor=1050, currency="USD", fee_minor=30,
        fee_currency="USD", payment_reference="att_1", provider_reference="pay_1",
        operation_reference="act_cap",
        occurred_at=dt.datetime(2026, 3, 9, 10, 30, tzinfo=dt.UTC), raw_type="Capture")
    assert (auth_fee.kind, auth_fee.amount_minor, auth_fee.fee_minor) == ("fee", 0, 5)
    assert (refunded.kind, refunded.amount_minor, refunded.status) == ("refund", 300,
                                                                      "declined")


def test_checkout_without_a_channel_filter_every_payment_is_read():
    body = {"count": 1, "data": [checkout_payment("pay_2", "att_2", [
        {"type": "Capture", "id": "act_2", "response_code": "10000",
         "breakdown": [{"type": "Captured", "processing_currency_amount": 1000}]}],
        currency="JPY", channel="anything")], "_links": {}}
    report = adapter(CheckoutAdapter, "checkout", lambda r: httpx.Response(200, json=body),
                     secret_key="sk").fetch_settlement(DAY)
    [line] = report.lines
    assert (line.amount_minor, line.currency, line.fee_minor) == (1000, "JPY", 0)


def test_checkout_an_unreadable_amount_or_an_error_is_refused():
    body = {"data": [checkout_payment("pay_3", "att_3", [
        {"type": "Capture", "id": "act_3",
         "breakdown": [{"type": "Captured", "processing_currency_amount": "ten"}]}])]}
    with pytest.raises(ProviderBadRequest):
        adapter(CheckoutAdapter, "checkout", lambda r: httpx.Response(200, json=body),
                secret_key="sk").fetch_settlement(DAY)
    with pytest.raises(ProviderBadRequest):
        adapter(CheckoutAdapter, "checkout",
                lambda r: httpx.Response(401, content=json.dumps({}).encode()),
                secret_key="sk").fetch_settlement(DAY)
