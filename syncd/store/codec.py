"""Message <-> JSON for the ``messages.fields`` column."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd.models import Message

__all__ = ["message_from_row", "message_to_fields"]


def message_to_fields(message: Message) -> dict[str, Any]:
    return {
        "created_at": message.created_at.isoformat() if message.created_at else None,
        "first_name": message.first_name,
        "last_name": message.last_name,
        "company": message.company,
        "phone": message.phone,
        "caller_id": message.caller_id,
        "email": message.email,
        "content": message.content,
        "is_emergency": message.is_emergency,
        "status": message.status,
        "sender": message.sender,
        "resource": message.resource,
        "account_number": message.account_number,
        "delivered_at": message.delivered_at,
        "delivered_to": message.delivered_to,
        "custom_fields": dict(message.custom_fields),
        "summary": message.summary,
    }


def message_from_row(account: str, message_id: str, fields: dict[str, Any], raw: Any) -> Message:
    created = fields.get("created_at")
    return Message(
        account=account,
        message_id=message_id,
        created_at=datetime.fromisoformat(created) if created else None,
        first_name=fields.get("first_name", ""),
        last_name=fields.get("last_name", ""),
        company=fields.get("company", ""),
        phone=fields.get("phone", ""),
        caller_id=fields.get("caller_id", ""),
        email=fields.get("email", ""),
        content=fields.get("content", ""),
        is_emergency=bool(fields.get("is_emergency", False)),
        status=fields.get("status", ""),
        sender=fields.get("sender", ""),
        resource=fields.get("resource", ""),
        account_number=fields.get("account_number", ""),
        delivered_at=fields.get("delivered_at", ""),
        delivered_to=fields.get("delivered_to", ""),
        custom_fields=dict(fields.get("custom_fields") or {}),
        raw=raw if isinstance(raw, dict) else {"value": raw},
        summary=bool(fields.get("summary", False)),
    )
