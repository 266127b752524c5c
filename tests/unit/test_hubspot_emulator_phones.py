"""The HubSpot emulator's phone model against syncd's own (``syncd.match.phones``).

The two share no code: the emulator's is written from HubSpot's documentation (the
searchable number is the phone "without country code"; ``phone`` EQ compares strings
exactly) and picks the less forgiving reading where that is silent. Where they disagree is
where the connector must not lean on syncd's model: these rows pin the disagreements down.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import syncd_hubspot.emulator as emulator_package
from syncd_hubspot.emulator.phones import searchable_phone

from syncd.match.phones import national_digits, normalize_phone

AGREE = [
    ("(415) 392-7461", "4153927461"),
    ("415.392.7461", "4153927461"),
    ("+1 415 392 7461", "4153927461"),
    ("+44 20 7946 0958", "2079460958"),
    ("+49 89 9726173", "899726173"),
    ("+1 (415) 392-7461 ext. 12", "4153927461"),
]
# Stored spelling -> what the emulator calculates, where syncd's model reads another number.
DISAGREE = [
    ("1-415-392-7461", "14153927461"),  # no "+": no country code is assumed
    ("001 415 392 7461", "0014153927461"),  # an international prefix is not read
    ("020 7946 0958", "02079460958"),  # a trunk prefix is kept without a country
]


@pytest.mark.parametrize(("stored", "searchable"), AGREE)
def test_where_both_models_agree(stored: str, searchable: str) -> None:
    calculated = searchable_phone(stored)
    assert calculated is not None
    assert calculated[0] == searchable
    key = normalize_phone(stored)
    assert key is not None
    assert national_digits(key.e164) == searchable


@pytest.mark.parametrize(("stored", "searchable"), DISAGREE)
def test_where_the_emulator_is_less_forgiving(stored: str, searchable: str) -> None:
    calculated = searchable_phone(stored)
    assert calculated == (searchable, "")
    key = normalize_phone(stored, "GB" if stored.startswith("020") else "US")
    assert key is not None, "syncd's model reads a number here"
    assert national_digits(key.e164) != searchable


@pytest.mark.parametrize("stored", ["", "  ", "1234", "Restricted", "ext 12"])
def test_too_few_digits_calculate_nothing(stored: str) -> None:
    assert searchable_phone(stored) is None


def test_the_emulator_imports_neither_libphonenumber_nor_syncd_match() -> None:
    modules = sorted(Path(emulator_package.__file__).parent.glob("*.py"))
    assert len(modules) > 5, modules  # every module of the emulator, not only its phones
    for module in modules:
        source = module.read_text()
        assert "phonenumbers" not in source.replace("phone numbers", ""), module
        assert "syncd.match" not in source, module
        code = source.split('"""', 2)[2] if source.startswith('"""') else source
        assert "connectors" not in code, module  # the docstring may name it
