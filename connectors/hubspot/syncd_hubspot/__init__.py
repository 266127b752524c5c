"""HubSpot connector for syncd, over the official ``hubspot-api-client``.

Registered as ``hubspot`` under the entry-point group ``syncd.connectors.v1``. Options (the
target's TOML table) are documented on :class:`HubSpotOptions`; the essentials::

    [targets.crm]
    type = "hubspot"
    access_token_env = "HUBSPOT_TOKEN"  # or access_token_file
    activity = "note"  # or "call"
    caller_key_property = "syncd_key"  # unique contact property: idempotent creates
    marker_property = "syncd_marker"  # note/call/task property (not unique): crash recovery

What a message costs, counted by the emulator (tests/integration/test_request_budget.py): a
known caller's note is one request, shared by up to 100 notes; a new caller costs one contacts
search (the phones, emails and names of a whole batch are packed into each search), the
contact upsert, which also links the company through ``associatedcompanyid``, and the note.
Company records come from a listed directory (:mod:`syncd_hubspot.companies`) and each
company word's contacts are remembered for a while (:mod:`syncd_hubspot.colleagues`), so
neither costs a search per caller under HubSpot's ~5 searches/s limit.

A delivery in doubt (``Plan.in_doubt``: an earlier attempt may have reached HubSpot) is read
before it is written (:mod:`syncd_hubspot.markers`): 3 requests for a new caller's
note (contact by caller key, its associations, their markers), 2 for a known caller's, 2
more for an emergency's task; a batch of 100 shares them (6 in all). `syncd setup` creates
the properties (:mod:`syncd_hubspot.setup`).
"""

from __future__ import annotations

from syncd.plugin import Connector, TargetContext
from syncd_hubspot.connector import HubSpotConnector
from syncd_hubspot.options import HubSpotOptions, Limit, parse_options

__all__ = ["HubSpotConnector", "HubSpotOptions", "Limit", "create", "parse_options"]


def create(context: TargetContext) -> Connector:
    """Entry-point factory: validate the options and build the connector."""
    return HubSpotConnector(context)
