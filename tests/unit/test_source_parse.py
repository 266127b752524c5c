"""parse_message / unwrap_envelope: every spelling, envelope and custom-field form we accept."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from syncd.errors import MalformedMessage
from syncd.source import SourceError, find_message_id, parse_message, unwrap_envelope
from syncd.source.parse import MAX_TEXT, parse_datetime

NY = ZoneInfo("America/New_York")

DOC_ITEM: dict[str, object] = {
    "account number": "1001",
    "resource": "Main Line",
    "message id": "M42",
    "content": "Please call back about the leak.",
    "from": "Receptionist Amy",
    "first name": "José",
    "last name": "Núñez",
    "created at": "03/14/2024 09:26 AM",
    "utc created at": "2024-03-14T13:26:31Z",
    "raw created at": "2024-03-14 09:26:31",
    "status": "Delivered",
    "phone": "(212) 555-0100",
    "caller id": "212-867-5309",
    "company name": "O'Brien & Sons LLC",
    "is emergency": True,
    "delivered at": "03/14/2024 09:30 AM",
    "delivered to": "office@example.com",
    "content with additional details": "Email: jose@example.com",
    "content with additional details table Email": "jose@example.com",
}


def _respell(key: str, style: str) -> str:
    words = key.split()
    match style:
        case "spaces":
            return key
        case "snake":
            return "_".join(words)
        case "kebab":
            return "-".join(words)
        case "camel":
            return words[0] + "".join(w.capitalize() for w in words[1:])
        case "pascal":
            return "".join(w.capitalize() for w in words)
        case "upper":
            return "_".join(words).upper()
        case "weird":  # per-word case and separators both vary
            seps = " _-"
            cased = [w.upper() if i % 2 else w.lower() for i, w in enumerate(words)]
            return "".join(w + seps[i % 3] for i, w in enumerate(cased)).rstrip(seps)
    raise AssertionError(style)


@pytest.mark.parametrize("style", ["spaces", "snake", "kebab", "camel", "pascal", "upper", "weird"])
def test_every_key_spelling_gives_the_same_message(style: str) -> None:
    item = {_respell(key, style): value for key, value in DOC_ITEM.items()}
    message = parse_message(item, account="acme", tz=NY)

    assert message.account == "acme"
    assert message.message_id == "M42"
    assert message.created_at == datetime(2024, 3, 14, 13, 26, 31, tzinfo=UTC)
    assert (message.first_name, message.last_name) == ("José", "Núñez")
    assert message.company == "O'Brien & Sons LLC"
    assert (message.phone, message.caller_id) == ("(212) 555-0100", "212-867-5309")
    assert message.content == "Please call back about the leak."
    assert message.is_emergency is True
    assert (message.status, message.sender, message.resource) == (
        "Delivered",
        "Receptionist Amy",
        "Main Line",
    )
    assert message.account_number == "1001"
    assert message.delivered_to == "office@example.com"
    assert message.delivered_at == "03/14/2024 09:30 AM"
    assert {k.lower(): v for k, v in message.custom_fields.items()} == {"email": "jose@example.com"}
    assert message.summary is False
    assert message.raw == item  # exactly as received, spelling included


ITEM = {"message id": "M1", "phone": "212-867-5309"}


@pytest.mark.parametrize(
    "payload",
    [
        [ITEM],
        {"data": [ITEM]},
        {"success": True, "data": [ITEM]},
        {"success": "true", "data": [ITEM]},
        {"data": ITEM},
        {"success": True, "data": ITEM},
        {"messages": [ITEM]},
        {"data": {"messages": [ITEM]}},
        {"Success": True, "Data": {"Messages": [ITEM]}},
        ITEM,
    ],
    ids=[
        "bare-list",
        "data",
        "success-data",
        "success-string",
        "data-single",
        "success-single",
        "messages",
        "data-messages",
        "capitalized",
        "bare-object",
    ],
)
def test_every_envelope_unwraps_to_the_items(payload: object) -> None:
    assert unwrap_envelope(payload) == [ITEM]


@pytest.mark.parametrize(
    "payload",
    [[], {"data": []}, {"success": True, "data": {}}, {"success": True, "data": None}, {}],
)
def test_empty_answers_are_empty(payload: object) -> None:
    assert unwrap_envelope(payload) == []


def test_success_false_is_a_source_error_carrying_the_info() -> None:
    with pytest.raises(SourceError) as caught:
        unwrap_envelope({"success": False, "info": "Invalid token", "data": {}})
    assert caught.value.info == "Invalid token"
    assert "Invalid token" in str(caught.value)


@pytest.mark.parametrize(
    "payload",
    ["<html>502 Bad Gateway</html>", None, 42, {"data": "oops"}, {"results_v3": [ITEM]}],
)
def test_unknown_shapes_are_source_errors(payload: object) -> None:
    with pytest.raises(SourceError):
        unwrap_envelope(payload)


# -- custom fields ----------------------------------------------------------------------------

TABLE = "content with additional details table"


@pytest.mark.parametrize(
    "extra",
    [
        {TABLE: {"Email": "ann@example.com", "Best time to call": "after 6pm"}},
        {
            TABLE: [
                {"label": "Email", "value": "ann@example.com"},
                {"labelName": "Best time to call", "value": "after 6pm"},
            ]
        },
        {
            TABLE: [
                {"name": "Email", "value": "ann@example.com"},
                ["Best time to call", "after 6pm"],
            ]
        },
        {f"{TABLE} Email": "ann@example.com", f"{TABLE} Best time to call": "after 6pm"},
        {f"{TABLE} {{Email}}": "ann@example.com", f"{TABLE} {{Best time to call}}": "after 6pm"},
        {
            "content_with_additional_details_table_email": "ann@example.com",
            "content_with_additional_details_table_best_time_to_call": "after 6pm",
        },
        {
            "contentWithAdditionalDetailsTableEmail": "ann@example.com",
            "contentWithAdditionalDetailsTableBestTimeToCall": "after 6pm",
        },
        {
            TABLE: "<table><tr><td>Email</td><td>ann@example.com</td></tr>"
            "<tr><td>Best time to call</td><td>after 6pm</td></tr></table>"
        },
        {TABLE: '{"Email": "ann@example.com", "Best time to call": "after 6pm"}'},
    ],
    ids=[
        "mapping",
        "label-value-list",
        "name-value-and-pairs",
        "prefixed-spaces",
        "prefixed-braces",
        "prefixed-snake",
        "prefixed-camel",
        "html",
        "json-string",
    ],
)
def test_custom_fields_in_every_form(extra: dict[str, object]) -> None:
    message = parse_message({"message id": "M1", **extra}, account="a")
    by_label = {k.lower(): v for k, v in message.custom_fields.items()}
    assert by_label == {"email": "ann@example.com", "best time to call": "after 6pm"}


def test_html_table_entities_nested_tags_and_th_cells() -> None:
    markup = """
      <table class="details">
        <thead><tr><th>Label</th><th>Value</th></tr></thead>
        <tr><th>Company &amp; Site</th><td><b>Smith &amp; Sons</b> &ndash; <i>north</i></td></tr>
        <tr><td>Email</td><td><a href="mailto:x@example.com">x@example.com</a></td></tr>
        <tr><td>Note</td><td>line one<br>line&nbsp;two &lt;urgent&gt; &#39;today&#39;</td></tr>
        <tr><td>Alone</td></tr>
        <tr><td>Script</td><td>ok<script>alert(1)</script></td></tr>
      </table>"""
    message = parse_message({"message id": "M1", TABLE: markup}, account="a")
    assert message.custom_fields == {
        "Company & Site": "Smith & Sons \u2013 north",
        "Email": "x@example.com",
        "Note": "line one line two <urgent> 'today'",  # whitespace, &nbsp; too, collapsed
        "Script": "ok",
    }


def test_broken_html_keeps_what_it_can() -> None:
    markup = "<table><tr><td>Email</td><td>a@example.com</td></tr><tr><td>Cut"
    message = parse_message({"message id": "M1", TABLE: markup}, account="a")
    assert message.custom_fields == {"Email": "a@example.com"}


def test_plain_details_text_stays_in_raw_only() -> None:
    item = {"message id": "M1", "content with additional details": "Email: a@example.com"}
    message = parse_message(item, account="a")
    assert message.custom_fields == {}
    assert message.raw["content with additional details"] == "Email: a@example.com"


# -- dates ------------------------------------------------------------------------------------

EXPECTED = datetime(2024, 3, 14, 13, 26, tzinfo=UTC)  # 09:26 EDT


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("utc created at", "2024-03-14T13:26:00Z"),
        ("utc created at", "2024-03-14T13:26:00+00:00"),
        ("utc created at", "2024-03-14T09:26:00-04:00"),
        ("utc created at", "2024-03-14 13:26:00"),  # naive UTC field: UTC
        ("utc created at", "2024-03-14T13:26:00.000Z"),
        ("utc created at", 1710422760),
        ("utc created at", 1710422760000),
        ("utc created at", "1710422760"),
        ("utc created at", "Thu, 14 Mar 2024 13:26:00 GMT"),
        ("created at", "03/14/2024 09:26 AM"),  # naive local: account time zone
        ("created at", "03/14/2024 9:26 am"),
        ("created at", "03-14-2024 09:26:00"),
        ("created at", "2024-03-14T09:26:00"),
        ("raw created at", "2024-03-14 09:26:00"),
    ],
)
def test_date_formats(key: str, value: object) -> None:
    message = parse_message({"message id": "M1", key: value}, account="a", tz=NY)
    assert message.created_at == EXPECTED


def test_naive_local_time_follows_daylight_saving() -> None:
    winter = parse_datetime("01/15/2024 09:00 AM", NY)
    summer = parse_datetime("07/15/2024 09:00 AM", NY)
    assert winter == datetime(2024, 1, 15, 14, 0, tzinfo=UTC)
    assert summer == datetime(2024, 7, 15, 13, 0, tzinfo=UTC)


def test_utc_field_wins_over_local_ones() -> None:
    item = {
        "message id": "M1",
        "created at": "01/01/2020 01:00 AM",
        "utcCreatedAt": "2024-03-14T13:26:00Z",
    }
    assert parse_message(item, account="a", tz=NY).created_at == EXPECTED


@pytest.mark.parametrize(
    "value", ["yesterday", "13/45/2024 99:99", "", None, [], {}, True, -5, "0"]
)
def test_unparseable_dates_are_none_not_errors(value: object) -> None:
    message = parse_message({"message id": "M1", "created at": value}, account="a", tz=NY)
    assert message.created_at is None


def test_a_bad_utc_field_falls_back_to_the_local_one() -> None:
    item = {"message id": "M1", "utc created at": "garbage", "created at": "03/14/2024 09:26 AM"}
    assert parse_message(item, account="a", tz=NY).created_at == EXPECTED


# -- is emergency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True), (False, False), ("true", True), ("false", False), ("TRUE", True),
        ("yes", True), ("no", False), ("Yes", True), ("1", True), ("0", False), (1, True),
        (0, False), ("Y", True), ("N", False), ("y", True), (None, False), ("", False),
        ("maybe", False), ([], False),
    ],
)  # fmt: skip
def test_is_emergency_spellings(value: object, expected: bool) -> None:
    message = parse_message({"message id": "M1", "isEmergency": value}, account="a")
    assert message.is_emergency is expected


def test_is_emergency_absent_is_false() -> None:
    assert parse_message({"message id": "M1"}, account="a").is_emergency is False


# -- ids and malformed items ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"message id": "M1"}, "M1"),
        ({"id": 123}, "123"),
        ({"MessageID": "  M2  "}, "M2"),
        ({"message_id": 7.0}, "7"),
        ({"id": "fallback", "messageId": "preferred"}, "preferred"),
        ({"message id": None, "id": "x"}, "x"),
    ],
)
def test_message_ids(item: dict[str, object], expected: str) -> None:
    assert parse_message(item, account="a").message_id == expected
    assert find_message_id(item) == expected


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"first name": "Ann"}, "missing message id"),
        ({"message id": ""}, "missing message id"),
        ({"message id": "   "}, "empty"),
        ({"message id": {"value": "M1"}}, "dict"),
        ({"message id": ["M1"]}, "list"),
        ({"message id": True}, "bool"),
        ({"message id": 1.5}, "fractional"),
        ({"message id": "x" * 1000}, "longer than"),
        ("M1", "str, not an object"),
        (None, "NoneType, not an object"),
        ([{"message id": "M1"}], "list, not an object"),
        (42, "int, not an object"),
    ],
)
def test_malformed_items_raise_malformed_message(item: object, reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_message(item, account="a")  # type: ignore[arg-type]
    assert reason in caught.value.reason
    assert find_message_id(item) is None


# -- text hygiene -----------------------------------------------------------------------------


def test_wrong_types_are_coerced_or_dropped() -> None:
    item = {
        "message id": 5,
        "first name": ["Ann", "Marie"],
        "last name": {"family": "Lee"},
        "phone": 2128675309,
        "company name": None,
        "content": 3.5,
        "caller id": [["nested"], {"x": 1}, "212-867-5309"],
        "status": True,
    }
    message = parse_message(item, account="a")
    assert message.first_name == "Ann, Marie"
    assert message.last_name == ""
    assert message.phone == "2128675309"
    assert message.company == ""
    assert message.content == "3.5"
    assert message.caller_id == "212-867-5309"
    assert message.status == "true"


def test_text_is_stripped_cleaned_and_capped() -> None:
    item = {
        "message id": "M1",
        "first name": "  Ann\x00e \n",
        "last name": "Lee\udcff",  # a lone surrogate, as surrogateescape leaves bad UTF-8
        "content": "x" * (MAX_TEXT * 3),
    }
    message = parse_message(item, account="a")
    assert message.first_name == "Anne"
    assert message.last_name == "Lee"
    assert len(message.content) == MAX_TEXT
    # raw is JSON-safe too: no NUL or surrogate survives into storage.
    assert message.raw["first name"] == "Ann\x00e".replace("\x00", "")
    assert message.raw["last name"] == "Lee"


def test_email_key_is_read_and_custom_email_left_to_the_matcher() -> None:
    assert parse_message({"id": "1", "Email Address": "a@example.com"}, account="a").email == (
        "a@example.com"
    )
    only_custom = parse_message({"id": "1", f"{TABLE} Email": "b@example.com"}, account="a")
    assert only_custom.email == ""
    assert only_custom.custom_fields == {"Email": "b@example.com"}


def test_summary_flag() -> None:
    assert parse_message({"id": "1", "first name": "Ann"}, account="a").summary is True
    # Phone and content are summary fields too: only the detail fields make an item whole.
    assert parse_message({"id": "1", "caller id": "212-867-5309"}, account="a").summary is True
    assert parse_message({"id": "1", "content": "hi"}, account="a").summary is True
    whole = {"id": "1", "content with additional details": ""}
    assert parse_message(whole, account="a").summary is False
    table = {"id": "1", "content with additional details table": {"Email": "a@example.com"}}
    assert parse_message(table, account="a").summary is False
    prefixed = {"id": "1", "content_with_additional_details_table_Email": "a@example.com"}
    assert parse_message(prefixed, account="a").summary is False


def test_unknown_keys_stay_in_raw_and_are_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The seen-set is process-wide and bounded: the fuzz tests may have filled it already.
    monkeypatch.setattr("syncd.source.parse._seen_unknown", set())
    item = {"message id": "M1", "Mystery Field": "42"}
    with capture_logs() as logs:
        first = parse_message(item, account="a")
        parse_message({"message id": "M2", "mystery_field": "43"}, account="a")
    assert first.raw["Mystery Field"] == "42"
    unknown = [entry for entry in logs if entry["event"] == "source.unknown_key"]
    assert [entry["key"] for entry in unknown] == ["Mystery Field"]


def test_a_single_item_under_data_is_one_item_even_without_an_id() -> None:
    # The detail endpoint may leave the id out; the client fills it in from the list.
    assert unwrap_envelope({"data": {"phone": "212-867-5309"}}) == [{"phone": "212-867-5309"}]
    assert unwrap_envelope({"data": {"message id": {"bad": 1}}}) == [{"message id": {"bad": 1}}]
    with pytest.raises(SourceError, match="unrecognized answer envelope"):
        unwrap_envelope({"status": "error", "message": "try later"})
