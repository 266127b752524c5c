"""extract_keys: what a message tells us about who called."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from syncd.match.keys import CallerKeys, extract_keys
from syncd.match.phones import PhoneKey
from syncd.models import KeyKind, MatchKey, Message


def message(
    *,
    phone: str = "",
    caller_id: str = "",
    email: str = "",
    content: str = "",
    first_name: str = "",
    last_name: str = "",
    company: str = "",
    custom_fields: Mapping[str, str] | None = None,
) -> Message:
    return Message(
        account="acme",
        message_id="m-1",
        phone=phone,
        caller_id=caller_id,
        email=email,
        content=content,
        first_name=first_name,
        last_name=last_name,
        company=company,
        custom_fields=custom_fields or {},
    )


def test_full_message() -> None:
    keys = extract_keys(
        message(
            phone="(415) 555-1212 x12",
            caller_id="+1 650 253 0000",
            email="John.Smith@Acme.com",
            first_name="John",
            last_name="Smith",
            company="ACME, Inc.",
        )
    )
    assert keys == CallerKeys(
        emails=("john.smith@acme.com",),
        phones=(PhoneKey("+14155551212", "12"), PhoneKey("+16502530000", None)),
        company="acme",
        person="john smith",
    )
    assert keys.match_keys() == [
        MatchKey(KeyKind.EMAIL, "john.smith@acme.com"),
        MatchKey(KeyKind.PHONE, "+14155551212"),
        MatchKey(KeyKind.PHONE, "+16502530000"),
        MatchKey(KeyKind.COMPANY, "acme"),
        MatchKey(KeyKind.NAME, "john smith"),
    ]
    assert keys.caller_key == "email:john.smith@acme.com"


def test_phone_comes_before_caller_id_and_dedups_by_e164() -> None:
    keys = extract_keys(message(phone="415.555.1212", caller_id="+14155551212 ext. 9"))
    # Same number twice: one key, and the first spelling (no extension) wins.
    assert keys.phones == (PhoneKey("+14155551212", None),)
    assert keys.caller_key == "phone:+14155551212"


def test_caller_id_when_phone_is_empty() -> None:
    keys = extract_keys(message(caller_id="(650) 253-0000"))
    assert keys.phones == (PhoneKey("+16502530000", None),)
    assert keys.caller_key == "phone:+16502530000"


@pytest.mark.parametrize("junk", ["Unknown", "Restricted", "N/A", "0000000000", "555-1212"])
def test_junk_phone_falls_back_to_caller_id(junk: str) -> None:
    keys = extract_keys(message(phone=junk, caller_id="+44 20 7946 0958"))
    assert keys.phones == (PhoneKey("+442079460958", None),)
    assert keys.match_keys() == [MatchKey(KeyKind.PHONE, "+442079460958")]


def test_region_reads_national_numbers() -> None:
    keys = extract_keys(message(phone="020 7946 0958", caller_id="030 901820"), region="GB")
    # A German national number is not a GB number: it is dropped, not guessed.
    assert keys.phones == (PhoneKey("+442079460958", None),)


def test_phones_from_phone_like_custom_fields_only() -> None:
    keys = extract_keys(
        message(
            phone="Private",
            custom_fields={
                "Account Number": "4155559876",  # any field may hold digits: not a phone
                "Callback Phone": "(650) 253-0000",
                "Mobile": "+1 415 555 1212",
                "Order #": "2125550100",
            },
        )
    )
    assert [p.e164 for p in keys.phones] == ["+16502530000", "+14155551212"]


def test_emails_from_custom_fields_mail_labels_first_then_content() -> None:
    keys = extract_keys(
        message(
            content="Please reply to CONTENT@example.org. Thanks!",
            custom_fields={
                "Notes": "cc notes@example.org",
                "E-Mail Address": "Primary <Mail@Example.org>",
                "Company website": "https://example.org",
            },
        )
    )
    assert keys.emails == ("mail@example.org", "notes@example.org", "content@example.org")
    assert keys.caller_key == "email:mail@example.org"


def test_message_email_field_wins_and_duplicates_collapse() -> None:
    keys = extract_keys(
        message(
            email="mailto:Jane@Acme.io",
            content="jane@acme.io called, alt jane.doe@acme.io",
            custom_fields={"Email": "JANE@ACME.IO"},
        )
    )
    assert keys.emails == ("jane@acme.io", "jane.doe@acme.io")


def test_invalid_email_field_is_ignored() -> None:
    keys = extract_keys(message(email="none given", phone="415-555-1212"))
    assert keys.emails == ()
    assert keys.caller_key == "phone:+14155551212"


def test_name_key_needs_company_and_person() -> None:
    both = extract_keys(message(first_name="Smith, John", company="The Acme Co."))
    assert both.person == "john smith"
    assert both.caller_key == "name:acme|john smith"
    assert both.match_keys() == [
        MatchKey(KeyKind.COMPANY, "acme"),
        MatchKey(KeyKind.NAME, "john smith"),
    ]
    # A name alone would merge every "John Smith" who calls: no idempotency key.
    assert extract_keys(message(first_name="John", last_name="Smith")).caller_key == ""
    assert extract_keys(message(company="Acme")).caller_key == ""


def test_no_keys_at_all() -> None:
    keys = extract_keys(
        message(phone="Unknown", caller_id="Restricted", content="Please call back, thanks.")
    )
    assert keys == CallerKeys(emails=(), phones=(), company="", person="")
    assert keys.match_keys() == []
    assert keys.caller_key == ""


def test_keys_are_stable_across_spellings() -> None:
    """The same caller spelled two ways yields the same idempotency key and match keys."""
    a = extract_keys(message(phone="1-415-555-1212", company="ACME, Inc.", first_name="John"))
    b = extract_keys(message(caller_id="+1 (415) 555-1212", company="The Acme Company"))
    assert a.caller_key == b.caller_key == "phone:+14155551212"
    assert MatchKey(KeyKind.COMPANY, "acme") in a.match_keys()
    assert MatchKey(KeyKind.COMPANY, "acme") in b.match_keys()
