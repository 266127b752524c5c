"""The source side: reading messages from the Berkshire Receptionists API v2.

:class:`BerkshireClient` talks HTTP; :func:`parse_message` and :func:`unwrap_envelope` turn
its answers, in whatever spelling and envelope, into :class:`~syncd.models.Message` values.
"""

from syncd.errors import SourceError
from syncd.source.client import BerkshireClient, Quarantined, WindowResult
from syncd.source.parse import find_message_id, parse_message, unwrap_envelope

__all__ = [
    "BerkshireClient",
    "Quarantined",
    "SourceError",
    "WindowResult",
    "find_message_id",
    "parse_message",
    "unwrap_envelope",
]
