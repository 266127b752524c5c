"""Company and person names as match keys, and how alike two of them are.

Names are the weakest keys (two "John Smith"s are common), so they are folded hard enough that
spelling noise disappears ("ACME, Inc." == "The Acme Company") but nothing is guessed: no
nicknames, no phonetic codes. Fuzzy scores decide only between candidates a caller already
narrowed down.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from rapidfuzz import fuzz

__all__ = [
    "normalize_company",
    "normalize_person",
    "same_company",
    "same_person",
    "similarity",
]

# Dropped only at the end of a name, and never the last word left: "Company" stays "company".
_LEGAL_SUFFIXES = frozenset(
    {
        "inc",
        "incorporated",
        "llc",
        "ltd",
        "limited",
        "corp",
        "corporation",
        "co",
        "company",
        "gmbh",
        "plc",
        "sa",
        "ag",
        "bv",
        "pty",
        "lp",
        "llp",
        # Close relatives of the above that turn up with them ("GmbH & Co. KG", "Pte. Ltd.").
        "kg",
        "nv",
        "pllc",
        "pte",
        "sarl",
        "srl",
    }
)
_HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof"})
# Joined, not split: "O'Brien" == "OBrien", "L.L.C." == "LLC", "J.P." == "JP".
_JOINERS = frozenset("'\u2019\u2018`.")  # ASCII and curly apostrophes, backtick, period


def _fold(text: str) -> list[str]:
    """Casefolded words without accents or punctuation; "&" reads "and"."""
    # NFKD on both sides of casefold, Unicode's recipe for caseless matching: compatibility
    # forms (math letters, ligatures) only casefold once decomposed.
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    chars: list[str] = []
    for ch in text:
        if unicodedata.combining(ch) or ch in _JOINERS:
            continue
        if ch == "&":
            chars.append(" and ")
        else:
            chars.append(ch if ch.isalnum() else " ")
    return "".join(chars).split()


# Connectors compare every candidate record with every key of a batch: the same few thousand
# names are folded over and over, so the (pure) normalizers remember their answers.
_MEMO = 4096  # a batch's working set; the bound keeps memory flat as the CRM grows


@lru_cache(maxsize=_MEMO)
def normalize_company(name: str | None) -> str:
    """The company's name folded for matching: "The Acme Co." -> "acme"; "" if there is none."""
    words = _fold(name or "")
    while len(words) > 1 and words[0] == "the":
        words = words[1:]
    # "&" before a suffix ("Smith & Co.") leaves a dangling "and" behind: drop it with them.
    while len(words) > 1 and (words[-1] in _LEGAL_SUFFIXES or words[-1] == "and"):
        words.pop()
    return " ".join(words)


@lru_cache(maxsize=_MEMO)
def normalize_person(first: str | None, last: str | None) -> str:
    """The person's "first last", folded; reads "Last, First" typed into the first-name field."""
    first, last = (first or "").strip(), (last or "").strip()
    if not last and "," in first:
        surname, _, given = first.partition(",")
        first, last = given, surname
    words = _fold(f"{first} {last}")
    while len(words) > 1 and words[0] in _HONORIFICS:
        words = words[1:]
    return " ".join(words)


def similarity(a: str, b: str) -> float:
    """How alike two names are, 0..100, after folding case, accents and punctuation.

    ``token_sort_ratio`` sorts the words before comparing, so word order does not matter
    ("Smith John" vs "John Smith") while an extra word still costs ("Acme" vs "Acme Bank" is
    about 62). ``token_set_ratio`` and ``partial_ratio`` would score those 100 and merge a
    company with every company whose name contains it.
    """
    left, right = " ".join(_fold(a)), " ".join(_fold(b))
    if not left or not right:
        return 0.0
    return float(fuzz.token_sort_ratio(left, right))


def same_company(a: str, b: str, threshold: float = 90.0) -> bool:
    left, right = normalize_company(a), normalize_company(b)
    return bool(left and right) and similarity(left, right) >= threshold


def _first_names_agree(left: str, right: str) -> bool:
    """Given names may differ by a typo or an initial, not by their first letter.

    A whole-name ratio alone joins "Mei Wisniewski" to "Wei Wisniewski" (about 93): two
    people, one letter apart, which the crash soak showed at the same company.
    """
    a, b = left.split()[0], right.split()[0]
    if a == b:
        return True
    if a[0] != b[0]:
        return False
    if len(a) == 1 or len(b) == 1:  # "J Smith" vs "John Smith"
        return True
    return similarity(a, b) >= 80.0


def same_person(a: str, b: str, threshold: float = 88.0) -> bool:
    """Full names ("John Smith", "Smith, John", "Dr. John Smith") compared after folding;
    when both have a given name and a surname, the given names must also agree."""
    left, right = normalize_person(a, None), normalize_person(b, None)
    if not (left and right) or similarity(left, right) < threshold:
        return False
    if len(left.split()) > 1 and len(right.split()) > 1:
        return _first_names_agree(left, right)
    return True
