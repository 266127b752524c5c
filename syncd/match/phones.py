"""Phone numbers as match keys: free text in, E.164 out.

The source gives phones as whatever a receptionist typed ("(415) 555-1212 x12", "Restricted",
"call me at ..."); CRMs store them in any spelling. Both sides meet at E.164, built with
Google's libphonenumber metadata (the ``phonenumbers`` port). The extension is kept beside the
key, never in it: the same desk reached through a switchboard is the same caller.

What counts as a number (the one judgement call here):

* ``phonenumbers.is_valid_number`` is the rule: it knows every country's lengths and ranges.
* North America (+1) alone falls back to a *structural* check: ``is_possible_number`` (ten
  digits) plus an area code that can exist (``[2-9]XX``, not an ``N11`` service code). NANP
  opens exchanges and overlay area codes every month, so the metadata in an installed
  release lags reality, and test and fictional numbers ("555-123-4567", which is how the source
  API's own examples look) fail validity while being perfectly good keys. NANP has one fixed
  length, so "possible" is still a tight check there; elsewhere lengths vary within a country
  and "possible" would let digit soup through.
* Placeholders (one digit repeated) and the words receptionists type for withheld numbers
  are rejected outright: a key shared by every anonymous caller would merge strangers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency, PhoneNumber, PhoneNumberFormat, PhoneNumberMatcher

__all__ = [
    "PhoneKey",
    "format_variants",
    "mask_phone",
    "mask_phones_in",
    "national_digits",
    "normalize_phone",
    "phone_value",
    "same_number",
]

# Compared after NFKC + casefold with spaces, dots, dashes and slashes removed.
_JUNK_WORDS = frozenset(
    {
        "unknown",
        "unknowncaller",
        "private",
        "privatenumber",
        "privatecaller",
        "restricted",
        "anonymous",
        "blocked",
        "withheld",
        "unavailable",
        "notavailable",
        "na",
        "none",
        "nocallerid",
        "outofarea",
        "notprovided",
        "null",
    }
)
_JUNK_STRIP = re.compile(r"[\s./\-_()]+")
_LEADING_00 = re.compile(r"^\s*00(?=\d)")
_N11 = re.compile(r"^[2-9]11$")


@dataclass(frozen=True, slots=True)
class PhoneKey:
    e164: str  # "+14155551212"
    extension: str | None = None  # "123": kept apart, never part of the key


def normalize_phone(text: str | None, region: str = "US") -> PhoneKey | None:
    """The caller's number as E.164 plus extension, or ``None`` when ``text`` holds none.

    ``region`` reads numbers written without a country code. The whole text is tried as one
    number first (that is what handles vanity letters and ``tel:`` URIs); failing that, the
    first number found inside free text wins. Idempotent on the key:
    ``normalize_phone(key.e164) == PhoneKey(key.e164)`` in any region.
    """
    if text is None:
        return None
    text = unicodedata.normalize("NFKC", text).strip()
    if not text or _JUNK_STRIP.sub("", text).casefold() in _JUNK_WORDS:
        return None
    number = _parse_whole(text, region)
    if number is None:
        number = _first_in_free_text(text, region)
    if number is None:
        return None
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return PhoneKey(e164=e164, extension=number.extension or None)


def phone_value(key: PhoneKey) -> str:
    """The number as syncd writes it to a CRM: E.164, then the extension as libphonenumber
    spells it (``"+14155551212 ext. 12"``). Both CRMs' phone fields are free text (Salesforce
    keeps 40 characters); this form keeps the number dialable, reads back through
    :func:`normalize_phone` to the same key and extension, and is how libphonenumber itself
    formats an extension, so other tools parse it too."""
    return f"{key.e164} ext. {key.extension}" if key.extension else key.e164


def _parse_whole(text: str, region: str) -> PhoneNumber | None:
    candidates = [text]
    # "00" is the international prefix in most of the world, so people write it even in US
    # records ("001 415 ..."), where phonenumbers only knows "011". Reading it as "+" is tried
    # only after the region's own reading failed, so it never overrides a valid national number.
    if _LEADING_00.match(text):
        candidates.append(_LEADING_00.sub("+", text, count=1))
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if _acceptable(number):
            return number
    return None


def _first_in_free_text(text: str, region: str) -> PhoneNumber | None:
    # POSSIBLE leniency: validity is judged by _acceptable, so NANP's fallback applies here too.
    for match in PhoneNumberMatcher(text, region, leniency=Leniency.POSSIBLE):
        if _acceptable(match.number):
            return match.number
    return None


def _acceptable(number: PhoneNumber) -> bool:
    nsn = phonenumbers.national_significant_number(number)
    if not nsn or len(set(nsn)) == 1:
        return False
    if phonenumbers.is_valid_number(number):
        return True
    if number.country_code != 1:
        return False
    reason = phonenumbers.is_possible_number_with_reason(number)
    area = nsn[:3]
    return (
        reason == phonenumbers.ValidationResult.IS_POSSIBLE
        and len(nsn) == 10
        and area[0] in "23456789"
        and not _N11.match(area)
    )


def _parse_e164(e164: str) -> PhoneNumber:
    try:
        return phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not an E.164 number: {e164!r}") from exc


def same_number(text: str, e164: str, region: str = "US") -> bool:
    """True when ``text``, as a CRM stores it, is the number ``e164``.

    Read in ``region`` (the CRM's) first, then in the number's own country: a foreign caller
    is often stored as people write the number at home, without the country code ("089
    9787175" for +49 89 9787175), which ``region`` alone cannot read.
    """
    key = normalize_phone(text, region)
    if key is not None and key.e164 == e164:
        return True
    try:
        home = phonenumbers.region_code_for_number(_parse_e164(e164))
    except ValueError:
        return False
    if not home or home == region:
        return False
    key = normalize_phone(text, home)
    return key is not None and key.e164 == e164


def national_digits(e164: str) -> str:
    """The national significant number: "+14155551212" -> "4155551212" (no trunk prefix)."""
    return phonenumbers.national_significant_number(_parse_e164(e164))


def format_variants(e164: str) -> list[str]:
    """Spellings a CRM may have stored for ``e164``, for exact-match queries (``Phone IN (...)``).

    Salesforce phone fields are free text, so an immediately consistent SOQL lookup has to
    name every likely spelling; the list is deduplicated and in a stable order. Outside +1 it
    includes the bare country-code digits ("442079460958"), which CRMs hold when someone
    dropped the "+"; read without that "+", the same digits may be a national number.
    """
    number = _parse_e164(e164)
    canonical = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    nsn = phonenumbers.national_significant_number(number)
    if number.country_code == 1 and len(nsn) == 10:
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        variants = [
            f"({a}) {b}-{c}",
            f"{a}-{b}-{c}",
            f"{a}.{b}.{c}",
            nsn,
            f"1{nsn}",
            canonical,
            f"+1 {a}-{b}-{c}",
            f"+1 ({a}) {b}-{c}",
            f"1-{a}-{b}-{c}",
            f"+1 {a} {b} {c}",
            f"{a} {b} {c}",
        ]
    else:
        national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        variants = [
            canonical,
            phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
            national,
            canonical[1:],
            re.sub(r"\D", "", national),
        ]
    return list(dict.fromkeys(variants))


def mask_phone(text: str) -> str:
    """``text`` fit for a log: country code and the last 2 digits survive ("+1 *** *** **12")."""
    key = normalize_phone(text)
    if key is None:
        # No digits, no number ("Unknown", "Restricted"): worth seeing as it is.
        return _mask_digits(text) if any(ch.isdigit() for ch in text) else text
    number = _parse_e164(key.e164)
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    prefix = f"+{number.country_code}"
    rest = " ".join(re.sub(r"[^\d]+", " ", international[len(prefix) :]).split())
    return f"{prefix} {_mask_digits(rest)}"


def _mask_digits(text: str) -> str:
    """Every digit and letter but the last two digits becomes "*" (letters may spell a number)."""
    digits_seen = sum(ch.isdigit() for ch in text)
    out = []
    for ch in text:
        if ch.isdigit():
            digits_seen -= 1
            out.append(ch if digits_seen < 2 else "*")
        elif ch.isalpha():
            out.append("*")
        else:
            out.append(ch)
    return "".join(out)


# Dates and times first so that they win over the digit-run alternative at the same position.
_DATE = (
    r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?"
    r"|\d{1,2}/\d{1,2}/\d{2}\b"
)
_RUNS = re.compile(
    rf"(?P<date>(?<!\d)(?:{_DATE}))|(?P<run>(?<!\d)\d(?:[ \t\u00a0.\-()/]{{0,3}}\d)+)"
)
_MIN_RUN_DIGITS = 7  # shorter runs ("Account #123", "Suite 4500") are not phone numbers


def mask_phones_in(text: str) -> str:
    """Mask every phone number in free text, leaving the rest of the text as it was.

    Numbers libphonenumber recognizes are masked like :func:`mask_phone`; any other run of
    seven or more digits is masked too (a number in a format it does not know is still a
    number to hide), except dates and times. Meant for caller-supplied text, not for ids.
    """
    pieces: list[str] = []
    last = 0
    for match in PhoneNumberMatcher(text, "US", leniency=Leniency.POSSIBLE):
        if not _acceptable(match.number):
            continue
        pieces.append(_RUNS.sub(_mask_run, text[last : match.start]))
        pieces.append(mask_phone(phonenumbers.format_number(match.number, PhoneNumberFormat.E164)))
        last = match.end
    pieces.append(_RUNS.sub(_mask_run, text[last:]))
    return "".join(pieces)


# A run ending in a parenthesized group: "2982 (409)" is an id and a status code. A phone
# opens with its parenthesized group ("(415) 555-1212", "+44 (0)20..."), never ends with one.
_CLOSING_GROUP = re.compile(r"(?P<head>.*?)(?P<tail>[ \t\u00a0]*\(\d+)")


def _mask_run(match: re.Match[str]) -> str:
    run = match.group("run")
    if run is None:
        return match.group(0)
    closing = _CLOSING_GROUP.fullmatch(run)
    if closing and match.string.startswith(")", match.end()):
        return _mask_long(closing["head"]) + closing["tail"]
    return _mask_long(run)


def _mask_long(run: str) -> str:
    return run if sum(ch.isdigit() for ch in run) < _MIN_RUN_DIGITS else _mask_digits(run)
