"""The HubSpot lookup's key index answers exactly what testing every pair would."""

from __future__ import annotations

import random

import pytest
from syncd_hubspot.candidates import answer, matches
from syncd_hubspot.records import contact_record

from syncd.models import CrmRecord, KeyKind, MatchKey

# E.164 numbers and the ways a portal may hold them, readable in "US" or not.
NUMBERS = {
    "+13125550147": ["(312) 555-0147", "+1 312 555 0147", "312.555.0147"],
    "+441174564243": ["+44 117 456 4243", "01174564243", "441174564243"],
    "+49899726173": ["089 9726173", "+49 89 9726173", "49899726173"],
    "+14165550123": ["416-555-0123"],
    "+442079460958": ["020 7946 0958", "+44 20 7946 0958"],
}
EMAILS = ["ma@example.com", "MA@Example.com", "bo@example.org", ""]
COMPANIES = ["Acme Plumbing, LLC", "acme plumbing", "Initech", "Initech Labs", "Zoë 🚀 Ltd", ""]
NAMES = [("Mary Ann", "Smith"), ("Mary", "Ann Smith"), ("Bo", "Diddley"), ("", "")]


def record(rng: random.Random, n: int) -> CrmRecord:
    first, last = rng.choice(NAMES)
    phones = [s for spellings in NUMBERS.values() for s in spellings] + ["", "n/a", "12"]
    props = {
        "firstname": first,
        "lastname": last,
        "email": rng.choice(EMAILS),
        "phone": rng.choice(phones),
        "mobilephone": rng.choice(["", *NUMBERS["+13125550147"]]),
        "company": rng.choice(COMPANIES),
    }
    return contact_record({"id": str(n), "properties": props}, region="US", contact_fields={})


def keys() -> list[MatchKey]:
    return [
        *(MatchKey(KeyKind.PHONE, e164) for e164 in NUMBERS),
        MatchKey(KeyKind.PHONE, "+15550000000"),
        *(MatchKey(KeyKind.EMAIL, e) for e in ("ma@example.com", "BO@example.org", "x@y.z")),
        *(MatchKey(KeyKind.COMPANY, c) for c in ("acme plumbing", "initech", "zoe", "")),
        *(MatchKey(KeyKind.NAME, n) for n in ("mary ann smith", "bo diddley", "")),
    ]


@pytest.mark.parametrize("seed", range(20))
def test_the_index_answers_what_every_pair_tested_would(seed: int) -> None:
    rng = random.Random(seed)
    records = [record(rng, n) for n in range(rng.randint(0, 60))]
    wanted = keys()
    rng.shuffle(wanted)

    got = answer(wanted, records)

    assert got == {k: [r for r in records if matches(k, r)] for k in wanted}


def test_a_foreign_number_stored_without_its_country_code_is_found() -> None:
    rng = random.Random(1)
    uk = contact_record(
        {"id": "1", "properties": {"phone": "01174564243"}}, region="US", contact_fields={}
    )
    others = [record(rng, n) for n in range(2, 30)]
    key = MatchKey(KeyKind.PHONE, "+441174564243")
    assert uk.phones == ()  # unreadable in the portal's region
    assert answer([key], [uk, *others])[key][0] is uk
