from tests.conftest import pay


def test_approved_card_captures_automatically(api):
    resp = pay(api)
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "succeeded"
    assert body["amount_captured"] == 1050
    assert [a["status"] for a in body["attempts"]] == ["captured"]
