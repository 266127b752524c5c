"""Caller text in SOSL/SOQL stays data: escaped, then parsed back by the emulator's parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from syncd_salesforce.emulator import SyntaxProblem, parse_soql, parse_sosl
from syncd_salesforce.soql import (
    SOSL_RESERVED,
    format_soql,
    pack,
    soql_in,
    sosl_escape,
    sosl_or,
    sosl_phrase,
)

HOSTILE = [
    "Acme' OR Name != '",
    "x} OR {*",
    "x} IN ALL FIELDS RETURNING User(Id, Email) FIND {y",
    "back\\slash\\",
    "trailing backslash \\",
    "\"quoted\" and 'single'",
    "".join(sorted(SOSL_RESERVED)),
    "multi\nline\r\nname\ttab",
    "AND NOT OR",
    "*",
    "100% _off_",
    "Bob\\'s BBQ",
    "\\}",
    "ünïcödé 東京 🙂",
]


def _control_to_space(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text)


def _find(terms: list[str]) -> str:
    return f"FIND {{{sosl_or(terms)}}} IN ALL FIELDS RETURNING Account(Id, Name)"


@pytest.mark.parametrize("char", sorted(SOSL_RESERVED))
def test_every_reserved_character_is_escaped(char: str) -> None:
    assert sosl_escape(char) == "\\" + char
    assert sosl_escape(f"a{char}b") == f"a\\{char}b"


def test_plain_text_is_left_alone() -> None:
    assert sosl_escape("Jane Doe 4155551212") == "Jane Doe 4155551212"
    assert sosl_phrase("Jane Doe") == '"Jane Doe"'


def test_control_characters_become_spaces() -> None:
    assert sosl_escape("a\nb\r\n\tc\x00d") == "a b c d"


def test_no_terms_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one term"):
        sosl_or([])


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_stays_one_term(text: str) -> None:
    query = parse_sosl(_find([text]))
    assert query.terms() == [type(query.terms()[0])(_control_to_space(text), phrase=True)]
    assert query.group == "ALL"
    assert [(r.sobject, r.fields) for r in query.returning] == [("Account", ("Id", "Name"))]


def test_many_hostile_terms_keep_one_search_group() -> None:
    query = parse_sosl(_find(HOSTILE))
    assert [t.text for t in query.terms()] == [_control_to_space(t) for t in HOSTILE]
    assert all(t.phrase and not t.wildcard for t in query.terms())
    assert len(query.returning) == 1


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6))
def test_any_text_round_trips(terms: list[str]) -> None:
    query = parse_sosl(_find(terms))
    assert [t.text for t in query.terms()] == [_control_to_space(t) for t in terms]
    assert [(r.sobject, r.fields) for r in query.returning] == [("Account", ("Id", "Name"))]


def test_unescaped_text_is_refused_by_the_emulator() -> None:
    # The emulator is strict, like the org: proof that the round trips above test something.
    with pytest.raises(SyntaxProblem):
        parse_sosl('FIND {"Acme\'s"} RETURNING Account(Id)')
    with pytest.raises(SyntaxProblem):
        parse_sosl("FIND {x} OR {*} RETURNING Account(Id)")


@pytest.mark.parametrize("text", HOSTILE)
def test_soql_values_round_trip(text: str) -> None:
    query = parse_soql(format_soql("SELECT Id FROM Account WHERE Name = {}", text))
    assert query.where.field == "Name"
    assert query.where.value.text == text
    listed = parse_soql("SELECT Id FROM Account WHERE " + soql_in("Name", [text, "b"]))
    assert [v.text for v in listed.where.value] == [text, "b"]


@pytest.mark.parametrize("text", HOSTILE)
def test_soql_like_escapes_wildcards(text: str) -> None:
    query = parse_soql(format_soql("SELECT Id FROM Account WHERE Name LIKE '{:like}%'", text))
    pattern = re.compile(query.where.value.like, re.DOTALL)
    assert pattern.fullmatch(text + " Inc")
    assert not pattern.fullmatch("x" + text)


def test_pack_respects_the_limit_and_keeps_order() -> None:
    items = [f"value-{i:04d}" for i in range(500)]
    chunks = list(pack(items, lambda c: soql_in("Name", c), limit=2_000, max_items=200))
    assert [v for chunk, _ in chunks for v in chunk] == items
    assert all(len(statement) <= 2_000 for _, statement in chunks)
    assert len(chunks) > 1


def test_pack_drops_an_item_that_cannot_fit() -> None:
    chunks = list(pack(["a", "x" * 5_000, "b"], lambda c: soql_in("Name", c), limit=1_000))
    assert [chunk for chunk, _ in chunks] == [["a", "b"]]
