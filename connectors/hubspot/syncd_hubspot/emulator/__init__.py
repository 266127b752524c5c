"""HubSpot's CRM API v3/v4 on loopback, built from HubSpot's documentation (see ``api``).

Shipped by the sandbox distribution (``syncd[sandbox]``), never by the production wheel; it
shares no code with the connector beside it.
"""

from .api import HubSpotEmulator

__all__ = ["HubSpotEmulator"]
