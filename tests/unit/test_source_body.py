"""Reading an answer body item by item: one bad item never costs the window."""

from __future__ import annotations

import json

import pytest

from syncd.errors import MalformedMessage, SourceError
from syncd.source.body import read_items
from syncd.source.parse import fingerprint, parse_message

GOOD = b'{"message id": "a", "content": "hi"}'
OTHER = b'{"message id": "b", "content": "there"}'


@pytest.mark.parametrize(
    "wrap",
    [
        lambda items: b"[" + items + b"]",
        lambda items: b'{"data": [' + items + b"]}",
        lambda items: b'{"success": true, "data": {"messages": [' + items + b"]}}",
    ],
)
def test_undecodable_bytes_cost_only_their_item(wrap: object) -> None:
    bad = b'{"message id": "c", "first name": "Jos\xe9"}'
    items, poison = read_items(wrap(GOOD + b"," + bad + b"," + OTHER))  # type: ignore[operator]
    assert [i["message id"] for i in items] == ["a", "b"]  # type: ignore[index]
    assert [(p.message_id, "UTF-8" in p.reason) for p in poison] == [("c", True)]
    assert poison[0].raw == {"message id": "c", "first name": "Jos\ufffd"}


def test_an_item_too_deep_for_the_parser_is_cut_out_of_the_list() -> None:
    deep = b'{"message id": "d", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    body = b'{"success": true, "data": [' + GOOD + b"," + deep + b"," + OTHER + b"]}"
    with pytest.raises(RecursionError):
        json.loads(body)  # what failed every cycle before
    items, poison = read_items(body)
    assert [i["message id"] for i in items] == ["a", "b"]  # type: ignore[index]
    (bad,) = poison
    assert bad.message_id == "d"
    assert "nested too deeply" in bad.reason
    assert len(bad.raw["unparsed"]) <= 2000  # type: ignore[index]


def test_garbage_between_items_is_quarantined_when_the_list_still_closes() -> None:
    body = b'{"data": [' + GOOD + b", {not json}, " + OTHER + b"]}"
    items, poison = read_items(body)
    assert [i["message id"] for i in items] == ["a", "b"]  # type: ignore[index]
    assert poison[0].reason.startswith("not valid JSON")


@pytest.mark.parametrize(
    "body",
    [b'{"data": [{"message id": "M1"', b"<html>502 Bad Gateway</html>", b"", b'[{"a": 1}, {'],
)
def test_a_body_cut_short_or_not_json_fails_the_window(body: bytes) -> None:
    # Whatever followed the cut is lost: quarantining what is left would hide the loss.
    with pytest.raises(SourceError, match="not JSON"):
        read_items(body)


def test_a_refusal_is_still_a_refusal_when_the_body_needs_slicing() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(SourceError, match="failure"):
        read_items(b'{"success": false, "info": "Invalid token", "x": ' + deep + b"}")


def test_huge_and_deep_items_are_malformed_not_truncated() -> None:
    with pytest.raises(MalformedMessage, match="2000000 characters"):
        parse_message({"message id": "h", "content": "x" * 2_000_000}, account="a")
    nested: object = "leaf"
    for _ in range(40):
        nested = {"k": nested}
    with pytest.raises(MalformedMessage, match="nested deeper"):
        parse_message(
            {"message id": "n", "content with additional details table": nested}, account="a"
        )


def test_fingerprints_follow_the_item_not_its_key_order() -> None:
    one = {"message id": "a", "status": "New"}
    assert fingerprint(one) == fingerprint({"status": "New", "message id": "a"})
    assert fingerprint(one) != fingerprint({"message id": "a", "status": "Delivered"})
