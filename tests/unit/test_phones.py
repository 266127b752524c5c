"""Phone normalization: real spellings from receptionist notes and CRM fields."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from syncd.match.phones import (
    PhoneKey,
    format_variants,
    mask_phone,
    mask_phones_in,
    national_digits,
    normalize_phone,
    same_number,
)

US_SF = "+14155551212"
UK_LONDON = "+442079460958"


def fullwidth(text: str) -> str:
    """ASCII as typed on a CJK keyboard (built here: ruff rightly flags such literals)."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


# (text, region, expected e164 or None, expected extension)
CASES = [
    # United States: every punctuation habit.
    pytest.param("(415) 555-1212", "US", US_SF, None, id="us-brackets"),
    pytest.param("415.555.1212", "US", US_SF, None, id="us-dots"),
    pytest.param("415-555-1212", "US", US_SF, None, id="us-dashes"),
    pytest.param("4155551212", "US", US_SF, None, id="us-digits"),
    pytest.param("14155551212", "US", US_SF, None, id="us-digits-trunk"),
    pytest.param("+1 415 555 1212", "US", US_SF, None, id="us-plus-spaces"),
    pytest.param("1-415-555-1212", "US", US_SF, None, id="us-trunk-dashes"),
    pytest.param("1 (415) 555-1212", "US", US_SF, None, id="us-trunk-brackets"),
    pytest.param("+1 (415) 555-1212", "US", US_SF, None, id="us-plus-brackets"),
    pytest.param("+1.415.555.1212", "US", US_SF, None, id="us-plus-dots"),
    pytest.param("415/555-1212", "US", US_SF, None, id="us-slash"),
    pytest.param("  415 555 1212\t", "US", US_SF, None, id="us-whitespace"),
    pytest.param("001 415 555 1212", "US", US_SF, None, id="us-00-prefix"),
    pytest.param("011 1 415 555 1212", "US", US_SF, None, id="us-011-prefix"),
    pytest.param("+1 415 555 1212", "GB", US_SF, None, id="us-from-gb-region"),
    pytest.param("001 415 555 1212", "GB", US_SF, None, id="us-from-gb-00"),
    # Extensions: kept, never in the key.
    pytest.param("415-555-1212 x123", "US", US_SF, "123", id="ext-x"),
    pytest.param("415-555-1212 ext. 45", "US", US_SF, "45", id="ext-ext-dot"),
    pytest.param("(415) 555-1212 extension 7", "US", US_SF, "7", id="ext-word"),
    pytest.param("415-555-1212 #12", "US", US_SF, "12", id="ext-hash"),
    pytest.param("tel:+1-415-555-1212;ext=9", "US", US_SF, "9", id="ext-rfc3966"),
    pytest.param("+1 415 555 1212 X 3000", "US", US_SF, "3000", id="ext-capital-x"),
    # URIs, vanity letters, full-width digits, free text.
    pytest.param("tel:+1-415-555-1212", "US", US_SF, None, id="tel-uri"),
    pytest.param("1-800-FLOWERS", "US", "+18003569377", None, id="vanity-flowers"),
    pytest.param("1-800-GOT-JUNK", "US", "+18004685865", None, id="vanity-got-junk"),
    pytest.param(fullwidth("(415) 555-1212"), "US", US_SF, None, id="fullwidth"),
    pytest.param(fullwidth("1-800-FLOWERS"), "US", "+18003569377", None, id="fullwidth-vanity"),
    pytest.param("call me at 415-555-1212 please", "US", US_SF, None, id="free-text"),
    pytest.param("Cell: (650) 253-0000", "US", "+16502530000", None, id="free-text-label"),
    pytest.param(
        "office 415-555-1212, cell 650-253-0000", "US", US_SF, None, id="free-text-first-wins"
    ),
    # NANP numbers libphonenumber calls invalid but that are structurally possible.
    pytest.param("(555) 123-4567", "US", "+15551234567", None, id="nanp-fictional-555"),
    pytest.param("(213) 123-4567", "US", "+12131234567", None, id="nanp-exchange-1xx"),
    pytest.param("212-555-0100", "US", "+12125550100", None, id="nanp-555-01xx"),
    # Canada shares +1.
    pytest.param("(416) 555-0199", "CA", "+14165550199", None, id="ca-toronto"),
    pytest.param("+1 604 555 0123", "US", "+16045550123", None, id="ca-vancouver-intl"),
    pytest.param("1 (514) 555-0142", "CA", "+15145550142", None, id="ca-montreal-trunk"),
    # United Kingdom.
    pytest.param("+44 20 7946 0958", "US", UK_LONDON, None, id="gb-intl"),
    pytest.param("020 7946 0958", "GB", UK_LONDON, None, id="gb-national"),
    pytest.param("0044 20 7946 0958", "US", UK_LONDON, None, id="gb-00-from-us"),
    pytest.param("0044 20 7946 0958", "GB", UK_LONDON, None, id="gb-00-from-gb"),
    pytest.param("011 44 20 7946 0958", "US", UK_LONDON, None, id="gb-011-from-us"),
    pytest.param("+44 (0)20 7946 0958", "US", UK_LONDON, None, id="gb-bracketed-trunk"),
    pytest.param("07911 123456", "GB", "+447911123456", None, id="gb-mobile"),
    # Rest of Europe and beyond.
    pytest.param("+49 30 901820", "US", "+4930901820", None, id="de-intl"),
    pytest.param("030 901820", "DE", "+4930901820", None, id="de-national"),
    pytest.param("+49 (0)30 901820", "US", "+4930901820", None, id="de-bracketed-trunk"),
    pytest.param("+49 151 23456789", "US", "+4915123456789", None, id="de-mobile"),
    pytest.param("+33 1 42 68 53 00", "US", "+33142685300", None, id="fr-intl"),
    pytest.param("01 42 68 53 00", "FR", "+33142685300", None, id="fr-national"),
    pytest.param("06.12.34.56.78", "FR", "+33612345678", None, id="fr-mobile-dots"),
    pytest.param("+353 1 234 5678", "US", "+35312345678", None, id="ie-intl"),
    pytest.param("(01) 234 5678", "IE", "+35312345678", None, id="ie-national"),
    pytest.param("+31 20 123 4567", "US", "+31201234567", None, id="nl-intl"),
    pytest.param("+34 912 345 678", "US", "+34912345678", None, id="es-intl"),
    pytest.param("+39 02 1234 5678", "US", "+390212345678", None, id="it-leading-zero"),
    pytest.param("(02) 9876 5432", "AU", "+61298765432", None, id="au-national"),
    # Junk: withheld numbers, placeholders, wrong lengths.
    pytest.param(None, "US", None, None, id="none"),
    pytest.param("", "US", None, None, id="empty"),
    pytest.param("   ", "US", None, None, id="blank"),
    pytest.param("Unknown", "US", None, None, id="junk-unknown"),
    pytest.param("UNKNOWN CALLER", "US", None, None, id="junk-unknown-caller"),
    pytest.param("Private", "US", None, None, id="junk-private"),
    pytest.param("Restricted", "US", None, None, id="junk-restricted"),
    pytest.param("anonymous", "US", None, None, id="junk-anonymous"),
    pytest.param("Blocked", "US", None, None, id="junk-blocked"),
    pytest.param("N/A", "US", None, None, id="junk-na"),
    pytest.param("no number given", "US", None, None, id="junk-words"),
    pytest.param("0000000000", "US", None, None, id="junk-zeros"),
    pytest.param("555-555-5555", "US", None, None, id="junk-same-digit"),
    pytest.param("+1 (111) 111-1111", "US", None, None, id="junk-ones"),
    pytest.param("(123) 456-7890", "US", None, None, id="junk-area-code-1xx"),
    pytest.param("(911) 555-1212", "US", None, None, id="junk-n11-area-code"),
    pytest.param("555-1212", "US", None, None, id="junk-local-only"),
    pytest.param("12345", "US", None, None, id="junk-too-short"),
    pytest.param("415555121212121", "US", None, None, id="junk-too-long"),
    pytest.param("+1 415 555 12", "US", None, None, id="junk-us-short"),
    pytest.param("+44 20 7946", "US", None, None, id="junk-gb-short"),
    pytest.param("+49 1234", "US", None, None, id="junk-de-short"),
]


@pytest.mark.parametrize(("text", "region", "e164", "extension"), CASES)
def test_normalize_phone(
    text: str | None, region: str, e164: str | None, extension: str | None
) -> None:
    expected = None if e164 is None else PhoneKey(e164=e164, extension=extension)
    assert normalize_phone(text, region) == expected


def test_table_is_broad() -> None:
    assert len(CASES) >= 45


def test_default_region_is_us() -> None:
    assert normalize_phone("(415) 555-1212") == PhoneKey(US_SF, None)


@pytest.mark.parametrize(
    "e164", [US_SF, "+15551234567", UK_LONDON, "+390212345678", "+4930901820", "+61298765432"]
)
def test_normalize_is_idempotent_on_e164(e164: str) -> None:
    assert normalize_phone(e164) == PhoneKey(e164, None)


def test_format_variants_nanp_exact_list() -> None:
    assert format_variants(US_SF) == [
        "(415) 555-1212",
        "415-555-1212",
        "415.555.1212",
        "4155551212",
        "14155551212",
        "+14155551212",
        "+1 415-555-1212",
        "+1 (415) 555-1212",
        "1-415-555-1212",
        "+1 415 555 1212",
        "415 555 1212",
    ]


def test_format_variants_international() -> None:
    assert format_variants(UK_LONDON) == [
        "+442079460958",
        "+44 20 7946 0958",
        "020 7946 0958",
        "442079460958",
        "02079460958",
    ]


def test_format_variants_rejects_non_e164() -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        format_variants("not a number")


@pytest.mark.parametrize(
    ("e164", "digits"),
    [(US_SF, "4155551212"), (UK_LONDON, "2079460958"), ("+390212345678", "0212345678")],
)
def test_national_digits(e164: str, digits: str) -> None:
    assert national_digits(e164) == digits


# ---- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("(415) 555-1212", "+1 *** *** **12"),
        ("415-555-1212 x123", "+1 *** *** **12"),
        ("+44 20 7946 0958", "+44 ** **** **58"),
        ("1-800-FLOWERS", "+1 *** *** **77"),
        ("Unknown", "Unknown"),
        ("12345678", "******78"),
        ("12-ABCDEFG", "12-*******"),
    ],
)
def test_mask_phone(text: str, masked: str) -> None:
    assert mask_phone(text) == masked


def test_mask_phones_in_masks_numbers_and_keeps_the_rest() -> None:
    text = (
        "Call John at (415) 555-1212 or +44 20 7946 0958 about Account #123 "
        "on 2024-01-15 10:30 (or 01-15-2024); UK office 020 7946 0958."
    )
    assert mask_phones_in(text) == (
        "Call John at +1 *** *** **12 or +44 ** **** **58 about Account #123 "
        "on 2024-01-15 10:30 (or 01-15-2024); UK office *** **** **58."
    )


@pytest.mark.parametrize(
    "text",
    ["Suite 4500, 12 Main St", "Meeting 3/4/2025 at 10:30", "Invoice 2024-01-15T10:30:00Z", ""],
)
def test_mask_phones_in_leaves_non_phone_text(text: str) -> None:
    assert mask_phones_in(text) == text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("contact 2982 (409): email taken", "contact 2982 (409): email taken"),
        ("record 123456 (404) gone", "record 123456 (404) gone"),
        ("12345678 (409)", "******78 (409)"),  # a long run is still masked, the code kept
        ("call 415 555 0100 (mobile)", "call +1 *** *** **00 (mobile)"),
        ("Tel (0) 2982 4091", "Tel (*) **** **91"),  # a group that opens a number is in it
    ],
)
def test_mask_phones_in_keeps_a_status_code_after_an_id(text: str, masked: str) -> None:
    assert mask_phones_in(text) == masked


# ---- properties ---------------------------------------------------------------------------

REGIONS = ["US", "CA", "GB", "DE", "FR", "IE", "NL", "ES", "IT", "AU", "CH", "SE", "JP", "BR"]
TYPES = [PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE]
DIGITS = re.compile(r"\d")
COUNTRY_CODE = re.compile(r"\+\d{1,3} ")


@st.composite
def valid_numbers(draw: st.DrawFn) -> tuple[phonenumbers.PhoneNumber, str]:
    """A valid number in one of REGIONS: an example number with its tail redrawn."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    assert example is not None
    nsn = phonenumbers.national_significant_number(example)
    tail = draw(st.text("0123456789", min_size=3, max_size=3))
    text = f"+{example.country_code}{nsn[:-3]}{tail}"
    number = phonenumbers.parse(text, None)
    if not phonenumbers.is_valid_number(number) or len(set(nsn[:-3] + tail)) == 1:
        number = example  # a redrawn tail left the numbering plan: fall back, do not filter
    return number, region


@st.composite
def nanp_numbers(draw: st.DrawFn) -> tuple[phonenumbers.PhoneNumber, str]:
    """Any structurally possible +1 number, assigned or not."""
    area = draw(st.integers(200, 999).filter(lambda n: n % 100 != 11))
    line = draw(st.integers(0, 9_999_999))
    nsn = f"{area}{line:07d}"
    if len(set(nsn)) == 1:
        nsn = "4155551212"
    return phonenumbers.parse(f"+1{nsn}", None), "US"


numbers = st.one_of(valid_numbers(), nanp_numbers())


@st.composite
def respelled(draw: st.DrawFn, number: phonenumbers.PhoneNumber) -> str:
    """The national number's digits regrouped with random separators, maybe bracketed."""
    nsn = phonenumbers.national_significant_number(number)
    cuts = sorted(draw(st.sets(st.integers(1, len(nsn) - 1), max_size=4)))
    groups = [nsn[i:j] for i, j in zip([0, *cuts], [*cuts, len(nsn)], strict=True)]
    if draw(st.booleans()) and len(groups) > 1:
        groups[0] = f"({groups[0]})"
    separators = draw(st.lists(st.sampled_from([" ", "-", ".", " - ", ""]), min_size=len(groups)))
    body = "".join(g + s for g, s in zip(groups, separators, strict=False)).strip(" -.")
    return f"+{number.country_code} {body}"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), drawn=numbers)
def test_every_spelling_gives_the_same_key(
    data: st.DataObject, drawn: tuple[phonenumbers.PhoneNumber, str]
) -> None:
    number, region = drawn
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    spellings = [
        phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        phonenumbers.format_number(number, PhoneNumberFormat.RFC3966),
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        e164,
        data.draw(respelled(number)),
    ]
    for spelling in spellings:
        key = normalize_phone(spelling, region)
        assert key is not None, spelling
        assert key.e164 == e164, spelling


@settings(max_examples=300, deadline=None)
@given(drawn=numbers, extension=st.none() | st.text("0123456789", min_size=1, max_size=5))
def test_normalize_is_idempotent(
    drawn: tuple[phonenumbers.PhoneNumber, str], extension: str | None
) -> None:
    number, region = drawn
    text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    if extension:
        text += f" ext. {extension}"
    key = normalize_phone(text, region)
    assert key is not None
    assert key.extension == extension
    assert normalize_phone(key.e164, region) == PhoneKey(key.e164, None)
    assert normalize_phone(key.e164, "GB") == PhoneKey(key.e164, None)  # region-independent


@settings(max_examples=300, deadline=None)
@given(drawn=numbers)
def test_format_variants_read_back(drawn: tuple[phonenumbers.PhoneNumber, str]) -> None:
    number, region = drawn
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    variants = format_variants(e164)
    assert len(variants) == len(set(variants))
    bare_international = e164[1:]
    for variant in variants:
        # Bare country-code digits can also be a national number ("4930..." is a valid
        # German national number too), so that spelling only reads back as international.
        text = f"+{variant}" if variant == bare_international and region != "US" else variant
        key = normalize_phone(text, region)
        assert key is not None, variant
        assert key.e164 == e164, variant


@settings(max_examples=300, deadline=None)
@given(drawn=numbers)
def test_mask_reveals_at_most_two_digits(drawn: tuple[phonenumbers.PhoneNumber, str]) -> None:
    number, _ = drawn
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    masked = mask_phone(e164)
    assert masked.startswith(f"+{number.country_code} ")
    assert DIGITS.findall(masked.removeprefix(f"+{number.country_code} ")) == list(e164[-2:])
    in_text = mask_phones_in(f"Please call {e164} today")
    assert in_text == f"Please call {masked} today"
    # Even spelled nationally, where the (US) reading may guess another country code.
    national_masked = COUNTRY_CODE.sub("", mask_phones_in(f"call {national} back"))
    assert len(DIGITS.findall(national_masked)) <= 2


@pytest.mark.parametrize(
    ("stored", "e164", "region", "same"),
    [
        pytest.param("(415) 555-1212", "+14155551212", "US", True, id="us-as-stored-by-a-us-org"),
        pytest.param("089 9787175", "+49899787175", "US", True, id="german-number-written-at-home"),
        pytest.param("+49 89 9787175", "+49899787175", "US", True, id="german-with-country-code"),
        pytest.param("020 7946 0958", "+442079460958", "US", True, id="uk-written-at-home"),
        pytest.param("(415) 555-1213", "+14155551212", "US", False, id="one-digit-off"),
        pytest.param("089 9787175", "+14155551212", "US", False, id="different-country"),
        pytest.param("Unknown", "+14155551212", "US", False, id="junk"),
        pytest.param("415-555-1212", "not-e164", "US", False, id="bad-key"),
    ],
)
def test_same_number(stored: str, e164: str, region: str, same: bool) -> None:
    assert same_number(stored, e164, region) is same
