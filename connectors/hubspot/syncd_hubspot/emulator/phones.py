"""``hs_searchable_calculated_phone_number``: the emulator's own reading of HubSpot's docs.

HubSpot's default contact properties say only that it holds the number "without country code";
:func:`searchable_phone` is the less forgiving reading, written without libphonenumber and
without syncd's phone code (``tests/unit/test_hubspot_emulator_phones.py`` pins where the two
models agree and where they do not).
"""

from __future__ import annotations

import re

__all__ = ["searchable_phone"]

# ITU-T E.164 country calling codes of one and two digits; every other code has three.
_CC_ONE = frozenset({"1", "7"})

_CC_TWO = frozenset(
    {
        *("20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44"),
        *("45", "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58"),
        *("60", "61", "62", "63", "64", "65", "66", "81", "82", "84", "86", "90", "91"),
        *("92", "93", "94", "95", "98"),
    }
)

_EXTENSION = re.compile(r"(?i)\s*(?:ext\.?|extension|x|#)\s*\d+\s*$")


def searchable_phone(text: str) -> tuple[str, str] | None:
    """(searchable digits, E.164 or "") for a stored phone, by our reading of HubSpot's docs.

    HubSpot documents ``hs_searchable_calculated_phone_number`` only as the phone "without
    country code". Where it is silent we choose the less forgiving reading:

    * a country code is recognised only after a leading ``+`` (ITU-T E.164 code lengths);
      ``001 415...`` or ``1 415...`` keep every digit, so they do not meet ``4153927461``;
    * an extension (``ext 12``, ``x12``, ``#12``) at the end is dropped; other text is not
      read as digits (``1-800-FLOWERS`` keeps only the digits it has);
    * fewer than 5 digits calculate nothing; no region or default country is assumed, so
      ``hs_calculated_phone_number`` (E.164) exists only for numbers written with ``+``.
    """
    if not text or not text.strip():
        return None
    bare = _EXTENSION.sub("", text.strip())
    digits = "".join(ch for ch in bare if ch.isascii() and ch.isdigit())
    if len(digits) < 5:
        return None
    if not bare.startswith("+"):
        return digits, ""
    for size, codes in ((1, _CC_ONE), (2, _CC_TWO)):
        if digits[:size] in codes:
            return digits[size:], f"+{digits}"
    return digits[3:], f"+{digits}"
