"""Everything a message says about who called, as normalized match keys."""

from __future__ import annotations

import re
from dataclasses import dataclass

from syncd.match.emails import find_emails
from syncd.match.names import normalize_company, normalize_person
from syncd.match.phones import PhoneKey, normalize_phone
from syncd.models import KeyKind, MatchKey, Message

__all__ = ["CallerKeys", "extract_keys"]

# Custom fields read for phones. Narrower than for emails on purpose: any field may hold a
# number ("Account number", "Order #"), and a wrong phone key matches a stranger.
_PHONE_LABEL = re.compile(r"phone|cell|mobile|\btel\b|call ?back|contact number|best number", re.I)


@dataclass(frozen=True, slots=True)
class CallerKeys:
    emails: tuple[str, ...] = ()
    phones: tuple[PhoneKey, ...] = ()  # `phone`, then `caller_id`, then custom fields
    company: str = ""  # normalized
    person: str = ""  # normalized "first last"

    def match_keys(self) -> list[MatchKey]:
        """Strongest first: emails, phones (E.164, no extension), company, name."""
        keys = [MatchKey(KeyKind.EMAIL, email) for email in self.emails]
        keys += [MatchKey(KeyKind.PHONE, phone.e164) for phone in self.phones]
        if self.company:
            keys.append(MatchKey(KeyKind.COMPANY, self.company))
        if self.person:
            keys.append(MatchKey(KeyKind.NAME, self.person))
        return keys

    @property
    def caller_key(self) -> str:
        """Stable idempotency key for "this new caller"; "" when too little is known.

        A name alone is not enough: two "John Smith"s calling the same day would become one
        contact. Company plus person is narrow enough to be worth the risk.
        """
        if self.emails:
            return f"email:{self.emails[0]}"
        if self.phones:
            return f"phone:{self.phones[0].e164}"
        if self.company and self.person:
            return f"name:{self.company}|{self.person}"
        return ""


def extract_keys(message: Message, region: str = "US") -> CallerKeys:
    """The caller's keys from ``message``; ``region`` reads numbers without a country code."""
    fields = message.custom_fields
    mail_labels = [label for label in fields if "mail" in label.casefold()]
    other_labels = [label for label in fields if "mail" not in label.casefold()]
    emails = find_emails(
        message.email,
        *(fields[label] for label in mail_labels),
        *(fields[label] for label in other_labels),
        message.content,
    )

    phone_texts = [message.phone, message.caller_id]
    phone_texts += [value for label, value in fields.items() if _PHONE_LABEL.search(label)]
    phones: dict[str, PhoneKey] = {}
    for text in phone_texts:
        key = normalize_phone(text, region)
        if key is not None:
            phones.setdefault(key.e164, key)

    return CallerKeys(
        emails=tuple(emails),
        phones=tuple(phones.values()),
        company=normalize_company(message.company),
        person=normalize_person(message.first_name, message.last_name),
    )
