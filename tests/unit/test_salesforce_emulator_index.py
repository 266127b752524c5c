"""The Salesforce emulator's indexes answer exactly what a scan of every record answers.

Two emulators in lockstep get the same random writes (seeds, collection creates, updates and
upserts, deletes, composite requests that roll back, a duplicate rule) and the same random SOQL
queries and SOSL searches. One answers from its indexes; the other has the private
``_full_scan`` switch on and evaluates every live record, the reference. Every answer, writes
included, must be the same. Requests go through ``dispatch`` (the HTTP server's entry point)
without a socket; a fake clock places writes so that the lagging search index serves older
versions of a record.
"""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace
from typing import Any

import pytest
from syncd_salesforce.emulator import SalesforceEmulator
from syncd_salesforce.emulator import records as salesforce_records

from syncd.sandbox.http import Request

API = "/services/data/v59.0"
SOSL_RESERVED = set("?&|!{}[]()^~*:\\\"'+-")

FIRST = ["John", "JOHN", "Zoë", "Zoe", "Mary Ann", "José", "\u212aate", "Kate", "Sam", "Li", ""]
LAST = ["Smith", "smith", "Smithers", "Müller", "Mueller", "de la Cruz", "O'Neil", "Ng", "Lee"]
COMPANIES = ["Acme", "ACME Corp", "The Acme Company", "Ącme", "Globex", "Initech LLC", "3M"]
NUMBERS = ["4155551212", "4155551213", "2125550100", "6175550199", "5555551212", "3125550123"]
MARKERS = [f"syncd:acct{a}:{m}" for a in range(2) for m in range(6)]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The emulator's monotonic clock (its records module), set by the test: ``clock[0] = t``."""
    now = [0.0]
    fake = SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(salesforce_records, "time", fake)
    return now


class Lockstep:
    """An indexed emulator and a scanning one, fed the same requests."""

    def __init__(self, **options: Any) -> None:
        self.indexed = SalesforceEmulator(**options)
        self.scanning = SalesforceEmulator(**options)
        self.scanning._full_scan = True
        self.tokens = {id(e): e.issue_session() for e in (self.indexed, self.scanning)}
        self.nonempty = 0

    def call(
        self, method: str, path: str, body: Any = None, q: str | None = None
    ) -> tuple[int, Any]:
        answers = []
        for emulator in (self.indexed, self.scanning):
            request = Request(
                method=method,
                path=API + path,
                query={"q": [q]} if q is not None else {},
                headers={"Authorization": f"Bearer {self.tokens[id(emulator)]}"},
                body=b"" if body is None else json.dumps(body).encode(),
            )
            response = emulator.dispatch(request)
            answers.append((response.status, json.loads(response.body or b"null")))
        assert answers[0] == answers[1], (method, path, q, body)
        return answers[0]

    def query(self, soql: str) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/query", q=soql)
        assert status == 200, (soql, body)
        self.nonempty += bool(body["records"])
        return list(body["records"])

    def search(self, sosl: str, lag: float) -> list[dict[str, Any]]:
        self.indexed.search_lag = self.scanning.search_lag = lag
        status, body = self.call("GET", "/search", q=sosl)
        assert status == 200, (sosl, body)
        self.nonempty += bool(body["searchRecords"])
        return list(body["searchRecords"])

    def seed(self, kind: str, **values: Any) -> str:
        ids = {str(getattr(e, f"seed_{kind}")(**values)) for e in (self.indexed, self.scanning)}
        assert len(ids) == 1
        return ids.pop()

    def records(self, sobject: str) -> list[dict[str, Any]]:
        return self.scanning.records(sobject)


# -- random data --------------------------------------------------------------------------------
def phone(rng: random.Random) -> str:
    n = rng.choice(NUMBERS)
    return rng.choice(
        [
            n,
            f"({n[:3]}) {n[3:6]}-{n[6:]}",
            f"{n[:3]}.{n[3:6]}.{n[6:]}",
            f"+1 {n[:3]} {n[3:6]} {n[6:]}",
            f"1-{n[:3]}-{n[3:6]}-{n[6:]}",
            f"{n[3:6]}-{n[6:]}",
            f"{n[:3]}-{n[3:6]}-{n[6:]} x{rng.randint(1, 99)}",
            "+44 20 7946 0958",
            "",
        ]
    )


def person(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f"{first or 'x'}.{last}@Example.com".replace(" ", "").replace("'", "")
    return {
        "FirstName": first,
        "LastName": last,
        "Email": rng.choice([email, email.lower(), email.upper()]),
        "Phone": phone(rng),
        "MobilePhone": rng.choice(["", phone(rng)]),
    }


def _id_form(rng: random.Random, record_id: str, *, valid: bool = True) -> str:
    """An id as 18 or 15 characters (or, where it need not resolve, in the wrong case)."""
    return rng.choice([record_id, record_id[:15]] + ([] if valid else [record_id.lower()]))


def contact(rng: random.Random, state: Lockstep) -> dict[str, Any]:
    values: dict[str, Any] = {"attributes": {"type": "Contact"}, **person(rng)}
    accounts = [r["Id"] for r in state.records("Account")]
    if accounts and rng.random() < 0.7:
        values["AccountId"] = _id_form(rng, rng.choice(accounts))
    if rng.random() < 0.5:
        values["Syncd_Key__c"] = f"key-{rng.randint(0, 30)}"
    if rng.random() < 0.3:
        values["Description"] = rng.choice(["called about Acme", "wants Globex pricing", ""])
    return values


def lead(rng: random.Random) -> dict[str, Any]:
    values = {"attributes": {"type": "Lead"}, **person(rng), "Company": rng.choice(COMPANIES)}
    values["Status"] = rng.choice(["Open", "Working"])
    return values


def task(rng: random.Random, state: Lockstep) -> dict[str, Any]:
    who = [r["Id"] for r in state.records("Contact") + state.records("Lead")]
    marker = rng.choice(MARKERS)
    values: dict[str, Any] = {
        "attributes": {"type": "Task"},
        "Subject": f"Call from {rng.choice(FIRST)} [{marker}]",
        "Syncd_Marker__c": marker,
    }
    if who:
        values["WhoId"] = _id_form(rng, rng.choice(who))
    return values


def write_round(rng: random.Random, state: Lockstep) -> None:
    """Creates, updates, upserts, deletes and requests that roll back."""
    for _ in range(rng.randint(1, 3)):
        someone = person(rng)
        if rng.random() < 0.5:  # stored as given: phones keep their spelling
            state.seed(
                "contact",
                first_name=someone["FirstName"],
                last_name=someone["LastName"],
                email=someone["Email"],
                phone=someone["Phone"],
            )
        else:
            state.seed("lead", **someone, Company=rng.choice(COMPANIES))
        state.seed("company", name=rng.choice(COMPANIES))
    creates: list[dict[str, Any]] = []
    for _ in range(rng.randint(3, 8)):
        kind = rng.choice(["contact", "contact", "lead", "task", "task", "account"])
        if kind == "contact":
            creates.append(contact(rng, state))
        elif kind == "lead":
            creates.append(lead(rng))
        elif kind == "task":
            creates.append(task(rng, state))
        else:
            creates.append(
                {
                    "attributes": {"type": "Account"},
                    "Name": rng.choice(COMPANIES),
                    "Phone": phone(rng),
                }
            )
    if rng.random() < 0.3:
        creates.append({"attributes": {"type": "Contact"}, "Email": "not an email"})  # fails
    state.call("POST", "/composite/sobjects", {"allOrNone": rng.random() < 0.4, "records": creates})

    live = state.records("Contact") + state.records("Lead")
    updates = []
    for record in rng.sample(live, min(len(live), rng.randint(0, 5))):
        sobject = "Contact" if record["Id"].startswith("003") else "Lead"
        change = {k: v for k, v in person(rng).items() if rng.random() < 0.5}
        updates.append({"attributes": {"type": sobject}, "id": record["Id"], **change})
    if updates:
        if rng.random() < 0.3:
            updates.append({"attributes": {"type": "Contact"}, "id": "003000000000999AAA"})
        state.call(
            "PATCH", "/composite/sobjects", {"allOrNone": rng.random() < 0.5, "records": updates}
        )

    upserts = [contact(rng, state) for _ in range(rng.randint(0, 4))]
    for item in upserts:
        item["Syncd_Key__c"] = f"key-{rng.randint(0, 30)}"
    if upserts:
        state.call("PATCH", "/composite/sobjects/Contact/Syncd_Key__c", {"records": upserts})

    for sobject in ("Contact", "Lead", "Task", "Account"):
        for record in rng.sample(state.records(sobject), min(1, len(state.records(sobject)))):
            if rng.random() < 0.3:
                state.call("DELETE", f"/sobjects/{sobject}/{record['Id']}")

    # A composite request that changes records and then fails: all of it rolls back.
    live = state.records("Contact")
    subrequests: list[dict[str, Any]] = [
        {
            "method": "POST",
            "url": f"{API}/sobjects/Contact",
            "referenceId": "made",
            "body": {k: v for k, v in contact(rng, state).items() if k != "attributes"},
        }
    ]
    if live:
        target = rng.choice(live)
        subrequests.append(
            {
                "method": "PATCH",
                "url": f"{API}/composite/sobjects",
                "referenceId": "changed",
                "body": {
                    "records": [
                        {
                            "attributes": {"type": "Contact"},
                            "id": target["Id"],
                            "LastName": "Rolledback",
                            "Phone": phone(rng),
                        }
                    ]
                },
            }
        )
        subrequests.append(
            {
                "method": "DELETE",
                "url": f"{API}/sobjects/Contact/{rng.choice(live)['Id']}",
                "referenceId": "gone",
            }
        )
    if rng.random() < 0.7:
        subrequests.append(
            {
                "method": "POST",
                "url": f"{API}/sobjects/Contact",
                "referenceId": "bad",
                "body": {"FirstName": "NoLastName"},
            }
        )
    state.call("POST", "/composite", {"allOrNone": True, "compositeRequest": subrequests})


# -- random queries -----------------------------------------------------------------------------
CONDITION_FIELDS = {
    "Contact": [
        "Id",
        "FirstName",
        "LastName",
        "Name",
        "Email",
        "Phone",
        "MobilePhone",
        "AccountId",
        "Account.Name",
        "Syncd_Key__c",
        "Description",
    ],
    "Lead": ["Id", "FirstName", "LastName", "Name", "Company", "Email", "Phone", "Status"],
    "Account": ["Id", "Name", "Phone"],
    "Task": ["Id", "Subject", "WhoId", "Syncd_Marker__c", "Who.Name"],
}
SELECT = {
    "Contact": "Id, Name, Email, Phone, MobilePhone, AccountId, Account.Name, Syncd_Key__c",
    "Lead": "Id, Name, Company, Email, Phone",
    "Account": "Id, Name, Phone",
    "Task": "Id, Subject, WhoId, Who.Name",
}


def quote(text: str, like: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("'", "\\'")
    if like:
        text = text.replace("%", "\\%").replace("_", "\\_")
    return text


def field_value(rng: random.Random, state: Lockstep, sobject: str, name: str) -> str:
    """A value the field holds on some record (perturbed), or one nothing holds."""
    _, _, rest = name.partition(".")
    if rest:  # a field of whatever the reference points at
        return field_value(rng, state, rng.choice(["Account", "Contact", "Lead"]), rest)
    records = state.records(sobject)
    if not records or rng.random() < 0.1:
        return rng.choice(["nobody", "003000000000999", "Smith Jr"])
    record = rng.choice(records)
    if name == "Name" and sobject in ("Contact", "Lead"):
        value = " ".join(str(record.get(k) or "") for k in ("FirstName", "LastName")).strip()
    else:
        value = str(record.get(name) or "")
    if name.endswith("Id") and value:
        return _id_form(rng, value, valid=False)
    return rng.choice([value, value, value.upper(), value.lower(), value.swapcase()])


def comparison(rng: random.Random, state: Lockstep, sobject: str) -> str:
    name = rng.choice(CONDITION_FIELDS[sobject])
    value = field_value(rng, state, sobject, name)
    op = rng.choice(["=", "=", "IN", "IN", "LIKE", "LIKE", "!=", "NOT IN", "<", "null", "num"])
    if op in ("IN", "NOT IN"):
        values = [value] + [
            field_value(rng, state, sobject, name) for _ in range(rng.randint(0, 3))
        ]
        return f"{name} {op} ({', '.join(repr_(v) for v in values)})"
    if op == "LIKE":
        size = rng.randint(1, 9)
        cut = rng.randint(0, max(0, len(value) - 1))
        pattern = rng.choice(
            [
                quote(value[:size], like=True) + "%",
                "%" + quote(value[-size:], like=True),
                "%" + quote(value[cut : cut + size], like=True) + "%",
                quote(value, like=True),
                "_" + quote(value[1:], like=True),
                quote(value[:size], like=True) + "_%" + quote(value[-2:], like=True),
            ]
        )
        return f"{name} LIKE '{pattern}'"
    if op == "null":
        return f"{name} {rng.choice(['=', '!='])} null"
    if op == "num":
        return f"{name} = {rng.randint(0, 9)}"
    return f"{name} {op} {repr_(value)}"


def repr_(value: str) -> str:
    return f"'{quote(value)}'"


def condition(rng: random.Random, state: Lockstep, sobject: str, depth: int = 0) -> str:
    roll = rng.random()
    if depth >= 2 or roll < 0.45:
        return comparison(rng, state, sobject)
    if roll < 0.55:
        return f"NOT ({condition(rng, state, sobject, depth + 1)})"
    joiner = " AND " if roll < 0.75 else " OR "
    parts = [condition(rng, state, sobject, depth + 1) for _ in range(rng.randint(2, 4))]
    return "(" + joiner.join(parts) + ")"


def soql(rng: random.Random, state: Lockstep) -> str:
    sobject = rng.choice(["Contact", "Contact", "Lead", "Account", "Task"])
    text = f"SELECT {SELECT[sobject]} FROM {sobject} WHERE {condition(rng, state, sobject)}"
    if rng.random() < 0.2:
        text += f" ORDER BY {rng.choice(['Id', 'Name'])} {rng.choice(['ASC', 'DESC'])}"
    if rng.random() < 0.2:
        text += f" LIMIT {rng.randint(1, 5)}"
    return text


def sosl_escape(text: str) -> str:
    return "".join("\\" + ch if ch in SOSL_RESERVED else ch for ch in text)


def search_term(rng: random.Random, state: Lockstep) -> str:
    records = state.records("Contact") + state.records("Lead") + state.records("Account")
    if not records or rng.random() < 0.05:
        return rng.choice(["nobody", "zz*", "4155550000"])
    record = rng.choice(records)
    kind = rng.choice(["word", "phrase", "email", "phone", "phone", "wildcard", "company"])
    words = " ".join(str(record.get(k) or "") for k in ("FirstName", "LastName", "Name")).split()
    if kind == "phone":
        digits = "".join(
            ch for ch in str(record.get("Phone") or rng.choice(NUMBERS)) if ch.isdigit()
        )
        national = digits[-10:]
        spelled = rng.choice(
            [
                national,
                f"({national[:3]}) {national[3:6]}-{national[6:]}",
                f"+1 {national}",
                national[-7:],
                f"{national[3:6]}-{national[6:]}",
                national[-6:],
            ]
        )
        return sosl_escape(spelled)
    if kind == "email" and record.get("Email"):
        return sosl_escape(str(record["Email"]))
    if kind == "company" and record.get("Company"):
        return '"' + sosl_escape(str(record["Company"])) + '"'
    words = [w for w in words if len(w) >= 2]  # shorter terms are INVALID_SEARCH
    if not words:
        return "nobody"
    word = rng.choice(words)
    word = rng.choice([word, word.lower(), word.upper(), word.replace("ë", "e").replace("é", "e")])
    if kind == "phrase" and len(words) > 1:
        return '"' + sosl_escape(" ".join(words[:2])) + '"'
    if kind == "wildcard":
        return sosl_escape(word[: rng.randint(2, max(2, len(word)))]) + "*"
    return sosl_escape(word)


def sosl(rng: random.Random, state: Lockstep) -> str:
    terms = [search_term(rng, state) for _ in range(rng.randint(1, 4))]
    search = terms[0]
    for term in terms[1:]:
        search += rng.choice([" OR ", " OR ", " AND ", " AND NOT ", " "]) + term
    group = rng.choice(["ALL", "ALL", "NAME", "EMAIL", "PHONE", "PHONE", "SIDEBAR"])
    specs = rng.sample(
        [
            "Contact(Id, Name, Phone, MobilePhone, Email, Account.Name)",
            "Lead(Id, Name, Company, Phone)",
            "Account(Id, Name, Phone)",
            "Contact(Id WHERE LastName LIKE 'Smi%' LIMIT 3)",
            "Lead(Id, Name LIMIT 2)",
        ],
        rng.randint(1, 3),
    )
    text = f"FIND {{{search}}} IN {group} FIELDS RETURNING {', '.join(specs)}"
    if rng.random() < 0.2:
        text += f" LIMIT {rng.randint(1, 6)}"
    return text


@pytest.mark.parametrize("seed", range(6))
def test_indexed_answers_equal_full_scans(seed: int, clock: list[float]) -> None:
    rng = random.Random(seed)
    state = Lockstep(duplicate_rule=seed % 2 == 0)
    for round_ in range(6):
        clock[0] = 10.0 * (round_ + 1)
        write_round(rng, state)
        clock[0] += 5
        for _ in range(40):
            state.query(soql(rng, state))
        for _ in range(40):
            state.search(sosl(rng, state), rng.choice([0.0, 3.0, 12.0, 27.0, 1000.0]))
    # The comparison meant something: answers were found, and mostly without scanning.
    assert state.nonempty >= 150
    assert state.indexed._scans < state.scanning._scans / 3


# -- particular cases ---------------------------------------------------------------------------
def _ask(
    emulator: SalesforceEmulator, method: str, path: str, body: Any = None, q: str = ""
) -> Any:
    request = Request(
        method=method,
        path=API + path,
        query={"q": [q]} if q else {},
        headers={"Authorization": f"Bearer {emulator.issue_session()}"},
        body=b"" if body is None else json.dumps(body).encode(),
    )
    response = emulator.dispatch(request)
    return json.loads(response.body) if response.body else None


def _ids(emulator: SalesforceEmulator, soql: str) -> list[str]:
    return [row["Id"] for row in _ask(emulator, "GET", "/query", q=soql)["records"]]


def _found(emulator: SalesforceEmulator, sosl: str) -> list[str]:
    return [row["Id"] for row in _ask(emulator, "GET", "/search", q=sosl)["searchRecords"]]


def test_a_rolled_back_composite_leaves_records_and_indexes_as_they_were() -> None:
    emulator = SalesforceEmulator()
    kept = emulator.seed_contact(first_name="Ada", last_name="Lovelace", phone="4155551212")
    doomed = emulator.seed_contact(first_name="Alan", last_name="Turing", phone="2125550100")
    # Indexes exist before the request, so the rollback has to put them back too.
    assert _ids(emulator, "SELECT Id FROM Contact WHERE LastName = 'Lovelace'") == [kept]
    assert _found(emulator, "FIND {2125550100} IN PHONE FIELDS RETURNING Contact") == [doomed]
    subrequests = [
        {
            "method": "PATCH",
            "url": f"{API}/sobjects/Contact/{kept}",
            "referenceId": "renamed",
            "body": {"LastName": "Byron", "Phone": "6175550199"},
        },
        {"method": "DELETE", "url": f"{API}/sobjects/Contact/{doomed}", "referenceId": "gone"},
        {
            "method": "POST",
            "url": f"{API}/sobjects/Contact",
            "referenceId": "made",
            "body": {"LastName": "Hopper", "Phone": "3125550123"},
        },
        {"method": "POST", "url": f"{API}/sobjects/Contact", "referenceId": "bad", "body": {}},
    ]
    answer = _ask(
        emulator, "POST", "/composite", {"allOrNone": True, "compositeRequest": subrequests}
    )
    assert [a["httpStatusCode"] for a in answer["compositeResponse"]] == [400, 400, 400, 400]
    assert emulator.record(kept) == {
        "Id": kept,
        "FirstName": "Ada",
        "LastName": "Lovelace",
        "Phone": "4155551212",
    }
    assert _ids(emulator, "SELECT Id FROM Contact WHERE LastName IN ('Byron', 'Hopper')") == []
    assert _ids(emulator, "SELECT Id FROM Contact WHERE Name = 'ada lovelace'") == [kept]
    assert _found(emulator, "FIND {2125550100} IN PHONE FIELDS RETURNING Contact") == [doomed]
    assert _found(emulator, "FIND {6175550199 OR Hopper} RETURNING Contact") == []
    # The id the rolled-back create took is handed out again, as after a real rollback.
    made = _ask(emulator, "POST", "/sobjects/Contact", {"LastName": "Hopper"})["id"]
    assert _ids(emulator, "SELECT Id FROM Contact") == [kept, doomed, made]
    assert emulator._scans == 1  # only the last query, which has no WHERE


def test_an_all_or_none_collection_that_fails_rolls_back_its_updates() -> None:
    emulator = SalesforceEmulator()
    first = emulator.seed_contact(last_name="Curie", email="marie@example.com")
    records = [
        {"attributes": {"type": "Contact"}, "id": first, "Email": "pierre@example.com"},
        {"attributes": {"type": "Contact"}, "id": "003000000000999AAA", "LastName": "Nobody"},
    ]
    results = _ask(
        emulator, "PATCH", "/composite/sobjects", {"allOrNone": True, "records": records}
    )
    assert [r["success"] for r in results] == [False, False]
    assert _ids(emulator, "SELECT Id FROM Contact WHERE Email = 'MARIE@example.com'") == [first]
    assert _ids(emulator, "SELECT Id FROM Contact WHERE Email = 'pierre@example.com'") == []


def test_parts_the_indexes_cannot_narrow_are_still_evaluated() -> None:
    """An OR with a NOT (no candidates: every record may match it) and an AND NOT search."""
    emulator = SalesforceEmulator()
    emulator.seed_contact(last_name="Ames", email="ames@example.com")
    zed = emulator.seed_contact(last_name="Zed", email="zed@example.com")
    query = (
        "SELECT Id FROM Contact WHERE (LastName = 'Ames' AND Email = 'other@example.com')"
        " OR NOT LastName = 'Ames'"
    )
    assert _ids(emulator, query) == [zed]
    search = "FIND {ames AND NOT example} RETURNING Contact(Id)"
    assert _found(emulator, search) == []


def test_like_matches_the_characters_case_insensitive_regex_matches() -> None:
    emulator = SalesforceEmulator()
    kelvin = emulator.seed_contact(first_name="\u212aate", last_name="Bell")  # Kelvin sign K
    plain = emulator.seed_contact(first_name="kATE", last_name="Bell")
    emulator.seed_contact(first_name="Käte", last_name="Bell")
    long_s = emulator.seed_contact(first_name="\u017fam", last_name="Bell")  # long s
    dotted = emulator.seed_contact(first_name="\u0130van", last_name="Bell")  # dotted capital I
    dotless = emulator.seed_contact(first_name="\u0131van", last_name="Bell")  # dotless i
    query = "SELECT Id FROM Contact WHERE FirstName LIKE 'Kat%' OR FirstName LIKE '%ATE'"
    assert _ids(emulator, query) == [kelvin, plain]
    assert _ids(emulator, "SELECT Id FROM Contact WHERE FirstName LIKE 'SAM'") == [long_s]
    query = "SELECT Id FROM Contact WHERE FirstName LIKE 'iva%' OR Name LIKE '%van Bell'"
    assert _ids(emulator, query) == [dotted, dotless]
    assert emulator._scans == 0


def test_the_lagging_search_index_finds_a_record_by_its_older_version(clock: list[float]) -> None:
    emulator = SalesforceEmulator(search_lag=30.0)
    clock[0] = 100.0
    record = _ask(emulator, "POST", "/sobjects/Contact", {"LastName": "Old", "Phone": "4155551212"})
    clock[0] = 140.0
    _ask(emulator, "PATCH", f"/sobjects/Contact/{record['id']}", {"LastName": "New"})
    clock[0] = 150.0  # the index has the first version, not the second
    assert _found(emulator, "FIND {Old} RETURNING Contact") == [record["id"]]
    assert _found(emulator, "FIND {New} RETURNING Contact") == []
    assert _ids(emulator, "SELECT Id FROM Contact WHERE LastName = 'New'") == [record["id"]]
    assert emulator._scans == 0


def test_what_the_connector_asks_is_answered_without_a_scan() -> None:
    emulator = SalesforceEmulator()
    account = emulator.seed_company("Acme Corp")
    contact = emulator.seed_contact(
        first_name="Ada", last_name="Lovelace", phone="(415) 555-1212", company_id=account
    )
    task = emulator._seed("Task", {"Subject": "Call [syncd:a:1]", "WhoId": contact[:15]})
    asked = {
        "SELECT Id FROM Contact WHERE Phone IN ('4155551212', '(415) 555-1212')"
        " OR Email IN ('x@example.com') OR Name IN ('ada lovelace')"
        " OR Account.Name IN ('acme corp') OR Account.Name LIKE 'acme%'"
        " OR Account.Name LIKE 'the acme%'": [contact],
        f"SELECT Id FROM Contact WHERE Id IN ('{contact[:15]}')": [contact],
        f"SELECT Id FROM Task WHERE WhoId = '{contact}'": [task],
        "SELECT Id FROM Task WHERE Subject LIKE '%[syncd:a:1]'": [task],
        "SELECT Id FROM Account WHERE Name LIKE 'Acm%' AND Phone = null": [account],
    }
    for soql, expected in asked.items():
        assert _ids(emulator, soql) == expected, soql
    assert _found(emulator, "FIND {5551212 OR acme} IN ALL FIELDS RETURNING Contact(Id)") == [
        contact
    ]
    assert _found(emulator, "FIND {ada*} IN NAME FIELDS RETURNING Contact(Id)") == [contact]
    assert emulator._scans == 0
    assert _ids(emulator, "SELECT Id FROM Contact WHERE NOT LastName = 'Smith'") == [contact]
    assert _ids(emulator, "SELECT Id FROM Contact WHERE Email = null OR Phone = '1'") == [contact]
    assert emulator._scans == 2  # NOT and null: the scan still answers what indexes cannot
