"""Emails and names as match keys: folding, fuzzy thresholds, addresses in free text."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from syncd.match.emails import find_emails, normalize_email
from syncd.match.names import (
    normalize_company,
    normalize_person,
    same_company,
    same_person,
    similarity,
)

# ---- emails -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("john@acme.com", "john@acme.com", id="plain"),
        pytest.param("  John.Doe@ACME.com ", "john.doe@acme.com", id="case-and-space"),
        pytest.param("mailto:Jane@Acme.com", "jane@acme.com", id="mailto"),
        pytest.param("MAILTO:jane@acme.com?subject=Hi", "jane@acme.com", id="mailto-query"),
        pytest.param("Jane Doe <jane@acme.com>", "jane@acme.com", id="display-name"),
        pytest.param("a+tag@gmail.com", "a+tag@gmail.com", id="plus-tag"),
        pytest.param("o'brien@acme.ie", "o'brien@acme.ie", id="apostrophe"),
        pytest.param("what?@acme.com", "what?@acme.com", id="question-mark-local"),
        pytest.param("Müller@Bücher.de", "müller@bücher.de", id="international"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("N/A", None, id="not-an-address"),
        pytest.param("john@", None, id="no-domain"),
        pytest.param("john@localhost", None, id="no-dot"),
        pytest.param("a..b@acme.com", None, id="double-dot"),
        pytest.param("john@acme.local", None, id="special-use-domain"),
        pytest.param("john doe@acme.com", None, id="space"),
        pytest.param("a@b.com, c@d.com", None, id="two-addresses"),
    ],
)
def test_normalize_email(text: str | None, expected: str | None) -> None:
    assert normalize_email(text) == expected


def test_find_emails_in_free_text() -> None:
    content = (
        "Caller JOHN@Acme.com asked for a callback. Alt: (jane@acme.co.uk), 'bob@x.io'; "
        "old one was mailto:john@acme.com. Not valid: a..b@acme.com, x@localhost, @acme.com."
    )
    assert find_emails(content) == ["john@acme.com", "jane@acme.co.uk", "bob@x.io"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("write to sam@acme.com.", ["sam@acme.com"], id="trailing-period"),
        pytest.param("sam@acme.com!", ["sam@acme.com"], id="trailing-bang"),
        pytest.param("<sam@acme.com>", ["sam@acme.com"], id="angle-brackets"),
        pytest.param("email:sam@acme.com", ["sam@acme.com"], id="label-no-space"),
        pytest.param("...sam@acme.com", ["sam@acme.com"], id="leading-dots"),
        pytest.param("sam@acme.com\nSAM@ACME.COM", ["sam@acme.com"], id="dedup-case"),
        pytest.param("no address here, @ all", [], id="none"),
        pytest.param("", [], id="empty"),
    ],
)
def test_find_emails_edges(text: str, expected: list[str]) -> None:
    assert find_emails(text) == expected


def test_find_emails_across_texts_keeps_order_and_dedups() -> None:
    assert find_emails(None, "b@x.io", "", "a@x.io b@x.io", None, "c@x.io") == [
        "b@x.io",
        "a@x.io",
        "c@x.io",
    ]


@settings(max_examples=300, deadline=None)
@given(st.emails())
def test_found_emails_are_normalized_and_stable(email: str) -> None:
    # A leading quote is legal in an address but, in prose, almost always quotation.
    assume(not email.startswith(("'", "`")))
    found = find_emails(f"Please reply to {email}, thanks.")
    # Hypothesis draws some addresses email-validator refuses (e.g. reserved domains); any it
    # accepts must come back lowercase and be a fixed point of normalize_email.
    for address in found:
        assert address == address.lower()
        assert normalize_email(address) == address
    if (expected := normalize_email(email)) is not None:
        assert found == [expected]


# ---- companies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("The Acme Co.", "acme", id="the-co"),
        pytest.param("ACME, Inc.", "acme", id="comma-inc"),
        pytest.param("Acme Incorporated", "acme", id="incorporated"),
        pytest.param("Acme Corp.", "acme", id="corp"),
        pytest.param("Acme Corporation", "acme", id="corporation"),
        pytest.param("Acme Company", "acme", id="company"),
        pytest.param("Acme Limited", "acme", id="limited"),
        pytest.param("Acme, L.L.C.", "acme", id="llc-dotted"),
        pytest.param("Acme LLP", "acme", id="llp"),
        pytest.param("Acme Pty. Ltd.", "acme", id="pty-ltd-repeated"),
        pytest.param("Acme GmbH & Co. KG", "acme", id="gmbh-co-kg"),
        pytest.param("Müller GmbH", "muller", id="umlaut-gmbh"),
        pytest.param("Straße AG", "strasse", id="eszett-ag"),
        pytest.param("Société Générale S.A.", "societe generale", id="accents-sa"),
        pytest.param("Philips B.V.", "philips", id="bv"),
        pytest.param("Barclays PLC", "barclays", id="plc"),
        pytest.param("O'Brien & Sons Ltd", "obrien and sons", id="apostrophe-ampersand"),
        pytest.param("Ben & Jerry\u2019s", "ben and jerrys", id="curly-apostrophe"),
        pytest.param("Smith & Co.", "smith", id="and-co"),
        pytest.param("Hewlett-Packard Company", "hewlett packard", id="hyphen"),
        pytest.param("🚀 Rocket Labs 🚀", "rocket labs", id="emoji"),
        pytest.param("  ACME   widgets  ", "acme widgets", id="spaces"),
        pytest.param("The Company", "company", id="only-suffix-kept"),
        pytest.param("Inc", "inc", id="suffix-alone-kept"),
        pytest.param("Theatre Co", "theatre", id="the-prefix-of-word"),
        pytest.param("The The Band", "band", id="the-repeated"),
        pytest.param("Co-op Food", "co op food", id="co-not-at-end"),
        pytest.param("東京 株式会社", "東京 株式会社", id="cjk-untouched"),
        pytest.param("", "", id="empty"),
        pytest.param(None, "", id="none"),
        pytest.param("🙂", "", id="emoji-only"),
    ],
)
def test_normalize_company(name: str | None, expected: str) -> None:
    assert normalize_company(name) == expected


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_company_is_idempotent(name: str) -> None:
    once = normalize_company(name)
    assert normalize_company(once) == once


# ---- persons ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        pytest.param("John", "Smith", "john smith", id="plain"),
        pytest.param("  JOHN ", " SMITH ", "john smith", id="case-space"),
        pytest.param("Smith, John", "", "john smith", id="last-comma-first"),
        pytest.param("Smith, John", None, "john smith", id="last-comma-first-none"),
        pytest.param("Dr. José", "Núñez", "jose nunez", id="honorific-accents"),
        pytest.param("Mrs. Jane", "O\u2019Neil", "jane oneil", id="mrs-curly-apostrophe"),
        pytest.param("Ms", "Smith", "smith", id="honorific-only-first"),
        pytest.param("Mr.", "", "mr", id="honorific-alone-kept"),
        pytest.param("Mary-Jane", "Watson", "mary jane watson", id="hyphenated"),
        pytest.param("", "Doe", "doe", id="last-only"),
        pytest.param("Anne", None, "anne", id="first-only"),
        pytest.param("", "", "", id="empty"),
        pytest.param(None, None, "", id="none"),
    ],
)
def test_normalize_person(first: str | None, last: str | None, expected: str) -> None:
    assert normalize_person(first, last) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_normalize_person_is_idempotent(first: str, last: str) -> None:
    once = normalize_person(first, last)
    assert normalize_person(once, "") == once


# ---- similarity ---------------------------------------------------------------------------


def test_similarity_range_and_symmetry() -> None:
    assert similarity("acme", "acme") == 100.0
    assert similarity("Smith John", "john smith") == 100.0  # word order does not matter
    assert similarity("acme", "acme bank") == similarity("acme bank", "acme")
    assert 0.0 <= similarity("acme", "zebra") < 50.0


@pytest.mark.parametrize(("a", "b"), [("", "acme"), ("acme", ""), ("", ""), ("!!!", "acme")])
def test_empty_never_matches(a: str, b: str) -> None:
    assert similarity(a, b) == 0.0
    assert not same_company(a, b, threshold=0.0)
    assert not same_person(a, b, threshold=0.0)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param("ACME, Inc.", "The Acme Company", True, id="suffixes-and-the"),
        pytest.param("Müller GmbH", "Muller", True, id="accents"),
        pytest.param("O'Brien & Sons Ltd", "OBrien and Sons", True, id="punctuation"),
        pytest.param("Acme Widgets Inc", "Acme Widget Corp", True, id="plural-typo"),
        pytest.param("Acme", "Acme Bank", False, id="extra-word"),
        pytest.param("Acme", "Acne", False, id="one-letter-short-name"),
        pytest.param("Acme Holdings", "Apex Holdings", False, id="different-name-same-suffix"),
        pytest.param("Inc", "Inc", True, id="suffix-only-names-still-compare"),
    ],
)
def test_same_company(a: str, b: str, same: bool) -> None:
    assert same_company(a, b) is same


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param("John Smith", "JOHN SMITH", True, id="case"),
        pytest.param("Smith, John", "John Smith", True, id="comma-order"),
        pytest.param("Dr. John Smith", "John Smith", True, id="honorific"),
        pytest.param("Jon Smith", "John Smith", True, id="one-letter-typo"),
        pytest.param("José Núñez", "Jose Nunez", True, id="accents"),
        pytest.param("John Smith", "Jane Smith", False, id="different-first"),
        pytest.param("John Smith", "John Smithson", False, id="different-last"),
        pytest.param("John Smith", "John", False, id="first-only"),
        pytest.param("Mei Wiśniewski", "Wei Wiśniewski", False, id="first-letter-differs"),
        pytest.param("Jon Smith", "Joan Smith", True, id="same-initial-typo"),
    ],
)
def test_same_person(a: str, b: str, same: bool) -> None:
    assert same_person(a, b) is same


def test_thresholds_are_inclusive() -> None:
    score = similarity("jon smith", "john smith")
    assert same_person("Jon Smith", "John Smith", threshold=score)
    assert not same_person("Jon Smith", "John Smith", threshold=score + 0.01)
