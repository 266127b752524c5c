"""The owner rules as a pure function: each rule, each fall-through and its recorded reason."""

from __future__ import annotations

import pytest

from syncd.errors import ConfigError
from syncd.models import CrmUser
from syncd.owners import OwnerDirectory, OwnerFacts, normalize_name, parse_owner_settings
from syncd.owners import resolve_owner as resolve

ANA = CrmUser("u1", "ana@example.com", "Ana Lopez", True)
BEN = CrmUser("u2", "ben@example.com", "Ben Okafor", True)
GONE = CrmUser("u3", "gone@example.com", "Carl Gone", False)
DESK = CrmUser("u4", "desk@example.com", "Front Office", True)
DIRECTORY = OwnerDirectory.of([ANA, BEN, GONE, DESK])
SETTINGS = parse_owner_settings(
    {
        "owners": {"Front desk": "desk@example.com", "Old team": "gone@example.com"},
        "owner_round_robin": ["ana@example.com", "gone@example.com", "u2"],
        "default_owner": "desk@example.com",
    },
    "targets.t",
)


def test_record_owner_first_when_active() -> None:
    got = resolve(SETTINGS, DIRECTORY, OwnerFacts("Front desk", record_owner_id="u2"))
    assert (got.owner_id, got.rule, got.reasons) == ("u2", "record", ())


def test_inactive_record_owner_falls_through_to_the_mapping_with_the_reason() -> None:
    got = resolve(SETTINGS, DIRECTORY, OwnerFacts("  front   DESK ", record_owner_id="u3"))
    assert (got.owner_id, got.rule) == ("u4", "mapping")
    assert got.reasons == ("record: record owner gone@example.com is inactive",)


def test_a_record_owner_who_no_longer_exists_falls_through() -> None:
    got = resolve(SETTINGS, DIRECTORY, OwnerFacts("Ana Lopez", record_owner_id="u99"))
    assert (got.owner_id, got.rule) == ("u1", "name")
    assert got.reasons[0] == "record: record owner u99 is not a user in the CRM"


def test_exact_normalized_name_match_never_fuzzy() -> None:
    assert resolve(SETTINGS, DIRECTORY, OwnerFacts("ANA  lopez")).owner_id == "u1"
    near = resolve(SETTINGS, DIRECTORY, OwnerFacts("Ana Lopes"))
    assert near.rule == "default"
    assert "name: no user is named 'Ana Lopes'" in near.reasons


def test_delivered_to_an_email_matches_the_users_email() -> None:
    got = resolve(SETTINGS, DIRECTORY, OwnerFacts("Ben@Example.com"))
    assert (got.owner_id, got.rule) == ("u2", "name")


def test_a_mapping_to_an_inactive_user_falls_through() -> None:
    got = resolve(SETTINGS, DIRECTORY, OwnerFacts("Old team"))
    assert (got.owner_id, got.rule) == ("u4", "default")
    assert "mapping: mapped user gone@example.com is inactive" in got.reasons


def test_round_robin_only_for_new_records_and_over_active_members() -> None:
    first = resolve(SETTINGS, DIRECTORY, OwnerFacts("Nobody Here", new_record=True))
    assert first.needs_turn
    assert first.owner_id is None
    owners = [
        resolve(SETTINGS, DIRECTORY, OwnerFacts("Nobody Here", new_record=True), turn).owner_id
        for turn in range(4)
    ]
    assert owners == ["u1", "u2", "u1", "u2"]  # the inactive member is skipped, evenly
    existing = resolve(SETTINGS, DIRECTORY, OwnerFacts("Nobody Here"))
    assert existing.rule == "default"
    assert "round_robin: only for new records" in existing.reasons


def test_an_inactive_default_leaves_the_crm_default_and_says_why() -> None:
    settings = parse_owner_settings({"default_owner": "gone@example.com"}, "t")
    got = resolve(settings, DIRECTORY, OwnerFacts("Zed"))
    assert (got.owner_id, got.rule) == (None, "")
    assert got.reasons[-1] == "default: default owner gone@example.com is inactive"


def test_two_active_users_with_one_name_are_no_match() -> None:
    twin = CrmUser("u5", "ana2@example.com", "Ana Lopez", True)
    got = resolve(SETTINGS, OwnerDirectory.of([ANA, twin, DESK]), OwnerFacts("Ana Lopez"))
    assert got.rule == "default"
    assert "name: 2 active users are named 'Ana Lopez'" in got.reasons


def test_the_order_is_configurable() -> None:
    settings = parse_owner_settings(
        {"owner_rules": ["name", "record"], "owners": {"Ana Lopez": "u2"}}, "t"
    )
    got = resolve(settings, DIRECTORY, OwnerFacts("Ana Lopez", record_owner_id="u2"))
    assert (got.owner_id, got.rule) == ("u1", "name")


def test_normalize_name() -> None:
    assert normalize_name("  \uff26ront\tDesk ") == "front desk"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"owner_rules": ["record", "guess"]}, "targets.t.owner_rules"),
        ({"owner_rules": ["record", "record"]}, "targets.t.owner_rules"),
        ({"owners": {"A": ""}}, "targets.t.owners.A"),
        ({"owners": {"a": "x@y", "A ": "z@y"}}, "targets.t.owners"),
        ({"owner_round_robin": "a@b"}, "targets.t.owner_round_robin"),
        ({"owners_refresh_seconds": 0}, "targets.t.owners_refresh_seconds"),
        ({"owner_on_new_records": "yes"}, "targets.t.owner_on_new_records"),
    ],
)
def test_bad_owner_settings_name_their_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_owner_settings(table, "targets.t")
    assert info.value.key == key


def test_owners_are_off_unless_configured_and_kept_from_the_connector() -> None:
    from syncd.config import parse_settings

    doc = {
        "accounts": {
            "a": {
                "base_url": "https://x.example",
                "email": "e@x.example",
                "token": "t",
                "targets": ["crm"],
            }
        },
        "targets": {
            "crm": {"type": "hubspot", "token": "x", "default_owner": "a@b", "owners": {"A": "b"}}
        },
    }
    settings = parse_settings(doc)
    target = settings.targets["crm"]
    assert target.owners.enabled
    assert target.owners.default == "a@b"
    assert "default_owner" not in target.options
    assert "owners" not in target.options
    assert not parse_owner_settings({}, "t").enabled
