"""The test cards of docs/api.md and what every sandbox provider does with them, as data."""

from dataclasses import dataclass


@dataclass(frozen=True)
class CardBehaviour:
    result: str  # approve | hard_decline | soft_decline | unavailable | commit_then_timeout
    #            | timeout_before_commit
    code: str = ""
    decline_code: str = ""


APPROVE = CardBehaviour("approve")

TEST_CARDS: dict[str, CardBehaviour] = {
    "4242424242424242": APPROVE,
    "5555555555554444": APPROVE,
    "378282246310005": APPROVE,
    "4000000000000002": CardBehaviour("hard_decline", "card_declined", "generic_decline"),
    "4000000000009995": CardBehaviour("hard_decline", "card_declined", "insufficient_funds"),
    "4000000000000069": CardBehaviour("hard_decline", "expired_card", "expired_card"),
    "4000000000009987": CardBehaviour("hard_decline", "card_declined", "lost_card"),
    "4000000000000119": CardBehaviour("soft_decline", "processing_error", "processing_error"),
    "4000000000000507": CardBehaviour("unavailable", "provider_unavailable"),
    "4000000000000408": CardBehaviour("commit_then_timeout"),
    "4000000000000606": CardBehaviour("timeout_before_commit"),
}


def behaviour_for(number: str) -> CardBehaviour:
    """Any other valid card number is approved, as in providers' test environments."""
    return TEST_CARDS.get(number, APPROVE)
