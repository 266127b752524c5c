"""Realistic, repeatable answering-service traffic for the demo, the benchmark and the tests.

Callers have accented names, apostrophes and ampersands in company names, phones from the
US, Canada, the UK and Germany that libphonenumber considers *valid* (the matcher must be
able to normalize them), and repeat at a skewed rate: a few call often, most once or twice.
Each message spells its caller's phone its own way, as receptionists do. Everything is a
pure function of the seed.
"""

from __future__ import annotations

import itertools
import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers

from syncd.sandbox.team import delivered_to

__all__ = ["CUSTOM_PREFIX", "Caller", "callers_of", "make_callers", "make_messages"]

CUSTOM_PREFIX = "content with additional details table"

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Daniel", "Karen", "Matthew", "Nancy", "Anthony", "Lisa", "Priya", "Wei", "Aisha", "Mohammed",
    "Olga", "Hiroshi", "José", "Zoë", "Łukasz", "François", "Siobhán", "Björn", "Renée", "Chloé",
    "Søren", "Ana", "Carlos", "Mei", "Raj", "Fatima", "Liam", "Noah", "Emma", "Olivia", "Grace",
    "Ethan", "Lucas", "Mia", "Jürgen", "Ingrid", "Tomás", "Nuala", "Kwame", "Amara",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson",
    "O'Brien", "O'Connor", "McDonald", "Nguyen", "Kim", "Patel", "Chen", "Müller", "Schmidt",
    "Kowalski", "Dubois", "Núñez", "Álvarez", "van der Berg", "Smith-Jones", "D'Angelo",
    "Okafor", "Fitzgerald", "Lindqvist", "Wiśniewski",
)  # fmt: skip
_ADJECTIVES = (
    "Northwind", "Blue Ridge", "Summit", "Harbor", "Evergreen", "Pioneer", "Lakeside", "Granite",
    "Silver Oak", "Redwood", "Atlas", "Beacon", "Cedar", "Keystone", "Maple Leaf", "Union",
)  # fmt: skip
_TRADES = (
    "Plumbing", "Dental", "Legal", "Roofing", "Accounting", "Veterinary Clinic", "Realty",
    "Electric", "Landscaping", "Insurance", "Property Management", "Auto Repair", "Bakery",
    "Consulting", "Physical Therapy", "HVAC",
)  # fmt: skip
_SUFFIXES = {
    "US": ("Inc", "Inc.", "LLC", "Corp", "Corp.", "Co.", "Group", "& Sons"),
    "CA": ("Inc", "Ltd", "Ltd.", "Corp", "Co."),
    "GB": ("Ltd", "Ltd.", "PLC", "LLP", "& Co."),
    "DE": ("GmbH", "AG", "GmbH & Co. KG"),
}
_EMOJI = ("🌞", "🐾", "🔧", "🍰")

# Geographic area codes whose numbers libphonenumber accepts (every candidate is checked).
_NANP_AREAS = {
    "US": ("212", "415", "617", "312", "646", "718", "213", "303", "206", "512", "404", "202"),
    "CA": ("416", "604", "514", "613", "403"),
}
_UK_PREFIXES = ("207", "208", "1614", "1314", "1174")  # London, Manchester, Edinburgh, Bristol
_DE_PREFIXES = ("30", "89", "40", "221")  # Berlin, Munich, Hamburg, Cologne

_TOPICS = (
    "an invoice",
    "a quote for new work",
    "rescheduling an appointment",
    "a billing question",
    "a warranty claim",
    "the estimate you sent",
    "a new project",
    "a delivery that did not arrive",
)
_EMERGENCIES = (
    "water is coming through the ceiling",
    "no heat and an elderly resident at home",
    "the alarm is going off and nobody is on site",
    "a gas smell near the meter",
    "the server room is overheating",
)
_WHEN = ("this afternoon", "tomorrow morning", "any time before 5pm", "after 6pm", "on Monday")
_AGENTS = ("Amy", "Brian", "Carmen", "Deshawn", "Elena", "Farah")
_RESOURCES = ("Main Line", "After Hours", "Sales", "Support")
_HIDDEN = ("Unknown", "Restricted", "Private", "UNKNOWN CALLER")


@dataclass(frozen=True)
class Caller:
    """A person who calls. ``e164`` is None for callers who withhold their number."""

    index: int
    first_name: str
    last_name: str
    company: str
    e164: str | None
    email: str | None
    region: str


def make_callers(count: int, *, seed: int = 0) -> list[Caller]:
    """``count`` distinct callers: no two share first name, last name and company."""
    rng = random.Random(seed)
    seen: set[tuple[str, str, str]] = set()
    phones: set[str | None] = {None}
    emails: set[str | None] = {None}
    callers: list[Caller] = []
    for index in range(count):
        region = rng.choices(("US", "CA", "GB", "DE"), weights=(80, 12, 4, 4))[0]
        for attempt in itertools.count():
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            company = _company(rng, region, last)
            if attempt > 20:  # the name space is exhausted: number the company
                company = f"{company or _company(rng, region, last, force=True)} {index}"
            if (first, last, company) not in seen:
                break
        seen.add((first, last, company))
        withheld = rng.random() < 0.03
        e164 = None
        while not withheld and e164 in phones:  # one number, one caller: tests rely on it
            e164 = _phone(rng, region)
        phones.add(e164)
        email = None
        if withheld or rng.random() < 0.55:
            email = _email(rng, first, last, company, index)
            if email in emails:
                email = email.replace("@", f"{index}@", 1)
        emails.add(email)
        callers.append(Caller(index, first, last, company, e164, email, region))
    return callers


def _company(rng: random.Random, region: str, last: str, *, force: bool = False) -> str:
    roll = rng.random()
    if roll < 0.12 and not force:
        return ""  # a private individual
    suffix = rng.choice(_SUFFIXES[region])
    if roll < 0.3:
        other = rng.choice(LAST_NAMES)
        return f"{last} & {other} {suffix}"
    if roll < 0.4:
        return f"The {rng.choice(_ADJECTIVES)} {rng.choice(_TRADES)} Company"
    if roll < 0.5:
        return f"{last}'s {rng.choice(_TRADES)}"
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_TRADES)} {suffix}"
    if roll > 0.98:
        name = f"{name} {rng.choice(_EMOJI)}"
    return name


def _phone(rng: random.Random, region: str) -> str:
    for _ in range(100):
        if region in _NANP_AREAS:
            exchange = rng.randint(200, 999)
            if exchange == 555 or exchange % 100 == 11:
                continue
            candidate = f"+1{rng.choice(_NANP_AREAS[region])}{exchange}{rng.randint(0, 9999):04d}"
        elif region == "GB":
            prefix = rng.choice(_UK_PREFIXES)
            candidate = (
                f"+44{prefix}{rng.randint(0, 10 ** (10 - len(prefix)) - 1):0{10 - len(prefix)}d}"
            )
        else:
            prefix = rng.choice(_DE_PREFIXES)
            candidate = f"+49{prefix}{rng.randint(2_000_000, 9_999_999)}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate
    raise RuntimeError(f"no valid {region} number found; the prefixes need updating")


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    return "".join(ch for ch in folded if ch.isascii() and (ch.isalnum() or ch == " ")).lower()


def _email(rng: random.Random, first: str, last: str, company: str, index: int) -> str:
    local = f"{_ascii(first)}.{_ascii(last)}".replace(" ", "")
    if rng.random() < 0.3:
        local = f"{local}{index}"
    words = _ascii(company).split()[:2]
    domain = "".join(words) or rng.choice(("mail", "inbox", "home"))
    # Reserved example domains: a sandbox must never address a real mailbox.
    return f"{local}@{domain}.{rng.choice(('example.com', 'example.org', 'example.net'))}"


def spell_phone(rng: random.Random, e164: str) -> str:
    """``e164`` spelt as a person would type it (or a CRM user stored it)."""
    if e164.startswith("+1"):
        a, e, s = e164[2:5], e164[5:8], e164[8:]
        text = rng.choice(
            (
                f"({a}) {e}-{s}",
                f"{a}-{e}-{s}",
                f"{a}.{e}.{s}",
                f"+1 {a} {e} {s}",
                f"1-{a}-{e}-{s}",
                f"{a}{e}{s}",
                f"+1 ({a}) {e}-{s}",
                e164,
            )
        )
    else:
        number = phonenumbers.parse(e164)
        international = phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        # Always with the country code: a national "020 ..." is unmatchable without a region.
        text = rng.choice((international, e164))
    return text


def _render_phone(rng: random.Random, e164: str) -> str:
    """``e164`` spelt as a person would type it, sometimes with an extension."""
    text = spell_phone(rng, e164)
    if rng.random() < 0.05:
        text += rng.choice((f" x{rng.randint(10, 999)}", f" ext. {rng.randint(1, 99)}"))
    return text


def make_messages(
    callers: Sequence[Caller],
    count: int,
    *,
    start: datetime,
    end: datetime,
    seed: int = 0,
    account_number: str = "1001",
    tz: str = "America/New_York",
    first_id: int = 1,
) -> list[dict[str, object]]:
    """``count`` messages from ``callers`` between ``start`` and ``end``, oldest first, keyed
    as the API document spells them. Naive ``start``/``end`` are UTC."""
    if not callers:
        raise ValueError("make_messages needs at least one caller")
    rng = random.Random(seed * 7919 + 1)
    zone = ZoneInfo(tz)
    start, end = _aware(start), _aware(end)
    span = max((end - start).total_seconds(), 0.0)
    times = sorted(start + timedelta(seconds=rng.uniform(0, span)) for _ in range(count))

    phoned = [c for c in callers if c.e164]
    withheld = [c for c in callers if not c.e164]
    # Skewed repeat calls: weight 1/rank, ranks shuffled so the busiest caller is anyone.
    ranks = list(range(1, len(phoned) + 1))
    rng.shuffle(ranks)
    cumulative = list(itertools.accumulate(1.0 / r for r in ranks))

    messages = []
    for offset, when in enumerate(times):
        if withheld and (not phoned or rng.random() < 0.015):
            caller = rng.choice(withheld)
        else:
            caller = rng.choices(phoned, cum_weights=cumulative)[0]
        messages.append(
            _message(rng, caller, f"M{first_id + offset:06d}", when, zone, account_number)
        )
    return messages


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _message(
    rng: random.Random,
    caller: Caller,
    message_id: str,
    when: datetime,
    zone: ZoneInfo,
    account_number: str,
) -> dict[str, object]:
    when = when.replace(microsecond=0)
    local = when.astimezone(zone)
    emergency = rng.random() < 0.03
    phone, caller_id = _phones(rng, caller)

    custom: dict[str, str] = {}
    if caller.email and (not caller.e164 or rng.random() < 0.5):
        custom["Email"] = caller.email
    if rng.random() < 0.4:
        custom["Best time to call"] = rng.choice(_WHEN)
    if rng.random() < 0.3:
        custom["Account #"] = f"A-{10_000 + caller.index}"
    topic = rng.choice(_TOPICS)
    if rng.random() < 0.5 or emergency:
        custom["Reason"] = "Emergency" if emergency else topic[0].upper() + topic[1:]

    who = caller.first_name + (f" from {caller.company}" if caller.company else "")
    if emergency:
        content = f"EMERGENCY: {rng.choice(_EMERGENCIES)}. {who} needs a call back right away."
    else:
        content = f"{who} called about {topic}. Please call back {rng.choice(_WHEN)}."
    delivered = rng.random() < 0.7
    message: dict[str, object] = {
        "account number": account_number,
        "resource": rng.choice(_RESOURCES),
        "message id": message_id,
        "content": content,
        "from": f"Receptionist {rng.choice(_AGENTS)}",
        "first name": caller.first_name,
        "last name": caller.last_name,
        "created at": local.strftime("%m/%d/%Y %I:%M %p"),
        "utc created at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "raw created at": local.strftime("%Y-%m-%d %H:%M:%S"),
        "status": "Delivered" if delivered else "New",
        "phone": phone,
        "caller id": caller_id,
        "company name": caller.company,
        "is emergency": emergency,
        "delivered at": (local + timedelta(minutes=2)).strftime("%m/%d/%Y %I:%M %p")
        if delivered
        else "",
        "delivered to": delivered_to(message_id) if delivered else "",
        "content with additional details": "\n".join(f"{k}: {v}" for k, v in custom.items()),
    }
    for label, value in custom.items():
        message[f"{CUSTOM_PREFIX} {label}"] = value
    return message


def _phones(rng: random.Random, caller: Caller) -> tuple[str, str]:
    """(phone, caller id): receptionists fill either, both, or write 'Unknown'."""
    if caller.e164 is None:
        return rng.choice(("", *_HIDDEN)), rng.choice(("", "Restricted", "Private"))
    roll = rng.random()
    if roll < 0.6:
        return _render_phone(rng, caller.e164), _render_phone(rng, caller.e164)
    if roll < 0.72:
        return "", _render_phone(rng, caller.e164)
    if roll < 0.82:
        return rng.choice(_HIDDEN), _render_phone(rng, caller.e164)
    return _render_phone(rng, caller.e164), ""


def callers_of(
    messages: Iterable[Mapping[str, object]], callers: Sequence[Caller]
) -> dict[str, int]:
    """Message id -> index of the caller who left it (tests' ground truth)."""
    index = {(c.first_name, c.last_name, c.company): c.index for c in callers}
    found = {}
    for message in messages:
        name = tuple(str(message.get(k, "")) for k in ("first name", "last name", "company name"))
        if name in index:
            found[str(message["message id"])] = index[name]
    return found
