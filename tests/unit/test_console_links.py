"""The console's link from a review candidate to its page in the CRM.

The core knows no CRM by name: a target's ``console_record_url`` wins, else the connector's
own ``record_url`` (the ``LinksRecords`` capability), else there is no link.
"""

from __future__ import annotations

from recording_crm import FakeConnector

from syncd.config import TargetSettings
from syncd.connector import LinksRecords
from syncd.console.records import record_url


class LinkingCrm(FakeConnector):
    def record_url(self, kind: str, record_id: str) -> str | None:
        return f"https://crm.example/{kind}/{record_id}"


def target(url: str | None = None) -> TargetSettings:
    return TargetSettings(name="crm", type="anything", console_record_url=url)


def test_the_connector_links_its_own_records() -> None:
    crm = LinkingCrm()
    assert isinstance(crm, LinksRecords)
    assert record_url(target(), crm, "003A", "lead") == "https://crm.example/lead/003A"


def test_the_operators_template_wins_over_the_connector() -> None:
    url = record_url(target("https://x.example/{kind}s/{id}"), LinkingCrm(), "9", "contact")
    assert url == "https://x.example/contacts/9"


def test_no_template_and_no_capability_is_no_link() -> None:
    assert not isinstance(FakeConnector(), LinksRecords)
    assert record_url(target(), FakeConnector(), "9", "contact") is None
    assert record_url(target(), None, "9", "contact") is None


def test_a_record_id_cannot_change_the_templates_address() -> None:
    url = record_url(target("https://crm.example/r/{id}/view"), None, "../admin?x=1#", "contact")
    assert url == "https://crm.example/r/..%2Fadmin%3Fx%3D1%23/view"
