"""A Salesforce org on loopback, for the real simple-salesforce client.

It answers what syncd's connector sends: SOAP and OAuth logins, SOQL and SOSL (subsets, parsed
by a small tokenizer, never ``eval``), sObject CRUD and describe, sObject Collections (create,
update, external-id upsert, at most 200 records), composite requests (subrequests with
``@{ref}`` references, one API call), ``limits``. It behaves like an org where it
matters to a sync: Salesforce-shaped error bodies, ``Sforce-Limit-Info`` on every answer,
sessions that expire, a daily request limit (``daily_limit``), at most 25 concurrent requests
of 20 s or longer (``concurrent_long_requests``, ``long_request_seconds``), both refused with a
403 ``REQUEST_LIMIT_EXCEEDED`` and counted in ``refused``, an emulated ``latency``, phones
stored as sent (REST API Developer Guide: the UI's "(NXX) NXX-XXXX" formatting is not applied
to API writes), a search index that lags
writes by ``search_lag`` seconds (SOQL sees writes at once), query results paged at 2,000 rows
(``query_page_size``), restricted picklists, a 16,384-byte limit on URI and headers, the
standard duplicate rules (``duplicate_rule``), OAuth 2.0 client-credentials and JWT bearer
token grants (the JWT's signature checked against ``jwt_certificate``), SOAP ``login()`` only
below API 65.0, and the Tooling API's ``CustomField`` create for ``syncd setup``.

Queries, searches, upserts and the duplicate rule take their candidates from indexes kept
current on every write and rollback, then match them exactly as a scan of every record would:
the emulator's cost follows the answer, not the org's size, so a benchmark measures syncd.
"""

from .org import SalesforceEmulator
from .query import (
    SoqlQuery,
    SoslQuery,
    SyntaxProblem,
    Term,
    parse_soql,
    parse_sosl,
)

__all__ = [
    "SalesforceEmulator",
    "SoqlQuery",
    "SoslQuery",
    "SyntaxProblem",
    "Term",
    "parse_soql",
    "parse_sosl",
]
