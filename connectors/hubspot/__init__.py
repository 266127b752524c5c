"""HubSpot connector for syncd, over the official ``hubspot-api-client``.

Registered as ``hubspot`` under the entry-point group ``syncd.connectors.v1``. Options (the
target's TOML table) are documented on :class:`HubSpotOptions`; the essentials::

    [targets.crm]
    type = "hubspot"
    access_token_env = "HUBSPOT_TOKEN"  # or access_token_file
    activity = "note"  # or "call"
    caller_key_property = "syncd_key"  # unique contact property: idempotent creates
    marker_property = "syncd_marker"  # unique note/call/task property: crash recovery
"""

from __future__ import annotations

from connectors.hubspot.connector import HubSpotConnector
from connectors.hubspot.options import HubSpotOptions, Limit, parse_options
from syncd.connector import Connector, TargetContext

__all__ = ["HubSpotConnector", "HubSpotOptions", "Limit", "create", "parse_options"]


def create(context: TargetContext) -> Connector:
    """Entry-point factory: validate the options and build the connector."""
    return HubSpotConnector(context)
