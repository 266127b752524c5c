"""Salesforce connector: contacts/leads matched and written through simple-salesforce.

Registered under ``syncd.connectors.v1`` as ``salesforce``. Options are documented in
:mod:`connectors.salesforce.options`; the sandbox twin is
:class:`syncd.sandbox.salesforce.SalesforceEmulator`.
"""

from connectors.salesforce.connector import SalesforceConnector, create
from connectors.salesforce.soql import sosl_escape, sosl_or, sosl_phrase

__all__ = ["SalesforceConnector", "create", "sosl_escape", "sosl_or", "sosl_phrase"]
