"""The Salesforce contract world (entry point ``syncd.contract.v1``): an org as it ships."""

from __future__ import annotations

from .org import SalesforceEmulator

__all__ = ["world"]


def world() -> SalesforceEmulator:
    """The standard duplicate rules active, queries paged one row a page (every read of two
    rows or more follows ``nextRecordsUrl``), OAuth 2.0 client credentials."""
    return SalesforceEmulator(duplicate_rule=True, query_page_size=1)
