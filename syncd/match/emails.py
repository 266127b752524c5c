"""Email addresses as match keys: found in free text, checked for syntax, lowercased.

Syntax only (``check_deliverability=False``): a DNS lookup per message would make matching slow
and flaky, and a CRM will happily hold an address whose domain has since lapsed.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

__all__ = ["find_emails", "mask_emails_in", "normalize_email"]

# Candidates only; email-validator has the last word. The local part is RFC 5322 "atext" plus
# dots (quoted local parts do not occur in receptionist notes); \w keeps international mail.
_CANDIDATE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_ANGLE = re.compile(r"<([^<>]*)>")
_MAILTO = re.compile(r"^mailto:", re.IGNORECASE)
# Quotes and dots that wrap an address in prose ("'a@b.com'", "...a@b.com") but are not part of it.
_LEADING_NOISE = "'`."


def normalize_email(text: str | None) -> str | None:
    """The address in ``text`` lowercased, or ``None`` when it is not one valid address.

    Accepts the usual wrappers: surrounding space, ``mailto:`` (query dropped) and
    ``Name <address>``. Lowercasing the local part is technically lossy (RFC 5321), but no
    mail provider in use distinguishes case and CRMs compare addresses case-insensitively.
    """
    if text is None:
        return None
    text = text.strip()
    if bracketed := _ANGLE.search(text):
        text = bracketed.group(1).strip()
    text, mailto = _MAILTO.subn("", text)
    if mailto:  # a mailto: URI may carry "?subject=..."; "?" is legal in a bare local part
        text = text.split("?", 1)[0]
    text = text.strip()
    if not text:
        return None
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized.lower()


def find_emails(*texts: str | None) -> list[str]:
    """Every valid address in ``texts``, in order of appearance, each once."""
    found: dict[str, None] = {}
    for text in texts:
        if not text:
            continue
        for match in _CANDIDATE.finditer(text):
            email = normalize_email(match.group(0).lstrip(_LEADING_NOISE))
            if email is not None:
                found.setdefault(email, None)
    return list(found)


def mask_emails_in(text: str) -> str:
    """Every address-looking run in ``text`` masked for people outside the CRM: the first
    character of the local part and the top-level domain survive (``j***@***.com``).
    Looser than :func:`find_emails` on purpose: an invalid address is still personal data."""

    def hide(match: re.Match[str]) -> str:
        local, _, domain = match.group().partition("@")
        return f"{local[:1]}***@***.{domain.rsplit('.', 1)[-1]}"

    return _CANDIDATE.sub(hide, text)
