"""Property tests: no payload, however hostile, makes the parser raise anything unexpected.

``parse_message`` returns a Message with a non-empty id or raises MalformedMessage;
``unwrap_envelope`` returns a list or raises SourceError. 10,000 examples in all.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.errors import MalformedMessage
from syncd.models import Message
from syncd.source import SourceError, parse_message, unwrap_envelope
from syncd.source.parse import MAX_ID, MAX_TEXT

FUZZ = settings(
    deadline=None,
    database=None,  # keep .hypothesis/ out of the source tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Key spellings the parser knows, in several styles, plus random keys.
_DOC_KEYS = [
    "message id", "id", "utc created at", "created at", "raw created at", "first name",
    "last name", "company name", "phone", "caller id", "from", "resource", "account number",
    "status", "delivered at", "delivered to", "content", "is emergency", "email",
    "content with additional details", "content with additional details table",
    "content with additional details table Email", "content with additional details table {X}",
]  # fmt: skip
_SPELLED = [
    variant
    for key in _DOC_KEYS
    for variant in (key, key.replace(" ", "_"), key.title().replace(" ", ""), key.upper())
]

# Text as a broken upstream might send it: bad UTF-8 surrogate-escaped, NULs, huge.
_bad_utf8 = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
_huge = st.integers(MAX_TEXT - 5, 3 * MAX_TEXT).map(lambda n: "é\x00" * (n // 2))
_html_bits = st.sampled_from(
    [
        "<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", "</th>", "<br>",
        "&amp;", "&#xZZ;", "&#99999999;", "&nbsp", "<![CDATA[x]]>", "<![if !IE]>", "<!--",
        "-->", "<script>", "</script>", "<b>", "<td colspan=2>", "Email", "a@example.com",
        "<!DOCTYPE", "<?php", "<", ">", "</", "\x00",
    ]
)  # fmt: skip
_html = st.lists(_html_bits, max_size=30).map("".join)
_dates = st.sampled_from(
    [
        "2024-03-14T13:26:31Z", "03/14/2024 09:26 AM", "03-14-2024 09:26:00",
        "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00", "02/30/2024 10:00 PM",
        "1e309", "NaN", "17104227600000000000", "-1", "1710422760.5",
    ]
)  # fmt: skip
_text = st.one_of(st.text(max_size=30), _bad_utf8, _html, _dates)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.booleans().map(lambda neg: (-1 if neg else 1) * 10**5000),  # past int->str limit
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalar,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.one_of(st.sampled_from(_SPELLED), st.text(max_size=8)), children, max_size=4
        )
    ),
    max_leaves=8,
)
_id = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.just("x" * (MAX_ID + 1)),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    _bad_utf8,
)
_message_like = st.dictionaries(
    st.one_of(st.sampled_from(_SPELLED), st.text(max_size=12), _bad_utf8),
    st.one_of(_json, _html),
    max_size=8,
)


def _check(raw: object) -> None:
    try:
        message = parse_message(raw, account="acme", tz=ZoneInfo("America/New_York"))  # type: ignore[arg-type]
    except MalformedMessage as exc:
        assert exc.reason  # noqa: PT017 - a property test: pytest.raises cannot say "or"
        return
    assert isinstance(message, Message)
    assert message.message_id
    assert len(message.message_id) <= MAX_ID
    for text in (message.first_name, message.phone, message.content, message.caller_id):
        assert "\x00" not in text
        assert len(text) <= MAX_TEXT
        text.encode("utf-8")  # no lone surrogates left
    assert message.created_at is None or message.created_at.utcoffset() is not None
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in message.custom_fields.items())
    # What the store will do with raw: serialize it.
    json.dumps(message.raw, ensure_ascii=False, allow_nan=False).encode("utf-8")


@settings(FUZZ, max_examples=3400)
@given(
    item=_message_like,
    message_id=_id,
    id_key=st.sampled_from(["message id", "messageId", "ID", "id"]),
    big=st.one_of(st.none(), st.tuples(st.sampled_from(_SPELLED), _huge)),
)
def test_parse_message_on_message_like_items(
    item: dict[Any, Any], message_id: object, id_key: str, big: tuple[str, str] | None
) -> None:
    if big is not None:  # one huge value at most: enough to test the cap, cheap to generate
        item = {**item, big[0]: big[1]}
    _check({id_key: message_id, **item})


@settings(FUZZ, max_examples=2500)
@given(payload=_json)
def test_parse_message_on_arbitrary_json(payload: object) -> None:
    _check(payload)


@settings(FUZZ, max_examples=1500)
@given(
    table=st.one_of(
        _html,
        _json,
        st.lists(
            st.dictionaries(st.sampled_from(["label", "labelName", "name", "value"]), _scalar),
            max_size=5,
        ),
    ),
    key=st.sampled_from(
        ["content with additional details table", "contentWithAdditionalDetailsTable"]
    ),
)
def test_custom_field_tables(table: object, key: str) -> None:
    _check({"message id": "M1", key: table})


@settings(FUZZ, max_examples=2600)
@given(
    payload=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"success": _json},
            optional={"data": _json, "info": _json, "messages": _json},
        ),
        st.fixed_dictionaries(
            {"data": st.dictionaries(st.sampled_from(["messages", "data", "id"]), _json)}
        ),
    )
)
def test_unwrap_envelope_raises_only_source_error(payload: object) -> None:
    try:
        items = unwrap_envelope(payload)
    except SourceError as exc:
        assert str(exc)  # noqa: PT017 - as above
        return
    assert isinstance(items, list)
    for item in items:
        _check(item)
