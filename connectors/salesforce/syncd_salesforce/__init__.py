"""Salesforce connector: contacts/leads matched and written through simple-salesforce.

Registered under ``syncd.connectors.v1`` as ``salesforce``. Options are documented in
:mod:`syncd_salesforce.options`; the sandbox twin is
:class:`syncd_salesforce.emulator.SalesforceEmulator`.
"""

from syncd_salesforce.connector import SalesforceConnector, create
from syncd_salesforce.soql import sosl_escape, sosl_or, sosl_phrase

__all__ = ["SalesforceConnector", "create", "sosl_escape", "sosl_or", "sosl_phrase"]
