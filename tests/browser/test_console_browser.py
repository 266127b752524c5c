"""An operator at the console, in a real browser: settle review items by clicking, retry a
dead-letter group, and see the store and the CRM emulators change; a stranger cannot act;
every page passes axe-core without serious or critical violations, and reads without
JavaScript."""

from __future__ import annotations

import re
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import Served
from console_world import TOKEN
from playwright.sync_api import Page, expect

from syncd.history import message_history
from syncd.models import activity_marker
from syncd.store.store import State

pytestmark = pytest.mark.browser

_AXE = Axe()


def assert_accessible(page: Page) -> None:
    """No serious or critical axe-core violation (labels, headings, contrast, landmarks...)."""
    violations = _AXE.run(page).response["violations"]
    bad = [v for v in violations if v.get("impact") in ("serious", "critical")]
    assert not bad, "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in bad
    )


def _delivery(served: Served, message_id: str, target: str) -> dict[str, Any]:
    (entry,) = message_history(served.cw.store, message_id)
    (found,) = [d for d in entry["deliveries"] if d["target"] == target]
    return found


def test_operator_settles_reviews_and_retries_a_dead_group(browser: Any, served: Served) -> None:
    cw = served.cw
    world = cw.world
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    # The overview shows the queues: dead letters on Salesforce, review items on HubSpot.
    page.goto(f"{served.url}/")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    salesforce = page.get_by_role("row").filter(
        has=page.get_by_role("rowheader", name="salesforce")
    )
    expect(salesforce.get_by_role("link", name="16")).to_be_visible()
    hubspot = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="hubspot"))
    expect(hubspot.get_by_role("link", name=str(len(cw.held)))).to_be_visible()
    assert_accessible(page)

    # Not signed in: the review queue shows the items but offers no action.
    page.get_by_role("link", name="Review queue").click()
    expect(page.get_by_role("heading", name="Review queue", level=1)).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Attach to this one"))).to_have_count(0)
    assert_accessible(page)

    # Sign in with the operator token.
    page.get_by_role("link", name="Sign in to act").click()
    assert_accessible(page)
    page.get_by_label("Operator token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_contain_text("Signed in")
    served.shot(page, "overview")

    # Attach the first held message to the second of the twin records.
    page.get_by_role("link", name="Review queue").click()
    first, second = cw.held[0], cw.held[1]
    chosen = cw.twins["hubspot"][1]
    item = page.get_by_role("region", name=re.compile(f"Message {first} "))
    expect(item.get_by_text("matches").first).to_be_visible()
    expect(item.get_by_role("link", name=f"Open {chosen} in hubspot")).to_have_attribute(
        "href", f"{world.emulators['hubspot'].base_url}/contacts/{chosen}"
    )
    assert_accessible(page)
    served.shot(page, "review")
    item.get_by_role("button", name=f"Attach to this one ({chosen})").click()
    expect(page.get_by_role("status")).to_contain_text(f"attached to {chosen}")
    # ... and say the second is someone new.
    page.get_by_role("region", name=re.compile(f"Message {second} ")).get_by_role(
        "button", name=re.compile("Create new")
    ).click()
    expect(page.get_by_role("status")).to_contain_text("new record")

    attached = _delivery(served, first, "hubspot")
    assert (attached["state"], attached["record_id"], attached["action"]) == (
        State.PENDING, chosen, "resolved_record",
    )  # fmt: skip
    created = _delivery(served, second, "hubspot")
    assert (created["state"], created["action"]) == (State.PENDING, "resolved_new")

    # Retry the whole dead-letter group on Salesforce.
    page.get_by_role("link", name="Dead letters").click()
    expect(page.get_by_role("heading", name=re.compile("salesforce: 16 dead"))).to_be_visible()
    assert_accessible(page)
    served.shot(page, "dead-letters")
    page.get_by_role("button", name=re.compile(r"Retry this group \(16 in salesforce\)")).click()
    expect(page.get_by_role("status")).to_contain_text("Requeued 16 deliveries")
    counts = cw.store.counts()["salesforce"]
    assert (counts["dead"], counts["pending"]) == (0, 16)
    expect(page.get_by_text("No dead letters.")).to_be_visible()

    # The next cycle carries it all out: check the CRMs themselves.
    before = {c.id for c in world.emulators["hubspot"].contacts()}
    cw.daemon.run_cycle()
    hub_activities = world.emulators["hubspot"].activities()
    (on_chosen,) = [a for a in hub_activities if a.marker == activity_marker("demo", first)]
    assert on_chosen.record_id == chosen
    (on_new,) = [a for a in hub_activities if a.marker == activity_marker("demo", second)]
    assert on_new.record_id not in before  # a new contact, as the operator said
    sf_markers = [a.marker for a in world.emulators["salesforce"].activities()]
    assert world.berkshire is not None
    delivered = {activity_marker("demo", str(m["message id"])) for m in world.berkshire.messages}
    held_on_sf = {activity_marker("demo", m) for m in cw.held}  # review on Salesforce now
    assert sorted(sf_markers) == sorted(delivered - held_on_sf)  # each exactly once

    # The message history tells the story: search by phone, open the message.
    page.get_by_role("link", name="Message history").click()
    assert cw.caller.e164 is not None
    page.get_by_label("Message id or caller phone").fill(cw.caller.e164)
    page.get_by_role("button", name="Search").click()
    assert_accessible(page)
    page.get_by_role("link", name=first, exact=True).click()
    expect(page.get_by_role("heading", name=f"Message {first}", level=1)).to_be_visible()
    log = page.get_by_role("table", name="Sync log of hubspot, oldest first")
    settled = log.get_by_role("rowheader", name=re.compile("^settled"))
    expect(settled).to_have_count(1)
    expect(settled).to_contain_text("by console")
    expect(log.get_by_role("rowheader", name=re.compile("^done"))).to_have_count(1)
    expect(log).to_contain_text(chosen)
    assert_accessible(page)
    served.shot(page, "message-history")

    # Back on the overview, after the run.
    page.get_by_role("link", name="Overview").click()
    assert_accessible(page)
    page.close()


def test_an_action_without_the_token_is_refused(browser: Any, served: Served) -> None:
    cw = served.cw
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{served.url}/dead")
    expect(page.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)
    # Post the form anyway, without having signed in: refused, nothing requeued.
    answer = page.request.post(
        f"{served.url}/dead/retry", form={"target": "salesforce", "reason": "x", "csrf": "x"}
    )
    assert answer.status == 403
    assert cw.store.counts()["salesforce"]["dead"] == 16

    # Signed in, a page from elsewhere that posts to the console is refused too (CSRF).
    page.goto(f"{served.url}/login")
    page.get_by_label("Operator token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_contain_text("Signed in")
    page.goto(f"{served.url}/dead")
    reason = page.locator('input[name="reason"]').first.get_attribute("value")
    page.set_content(
        f'<form method="post" action="{served.url}/dead/retry">'
        f'<input name="target" value="salesforce"><input name="reason" value="{reason}">'
        '<button type="submit">Win a prize</button></form>'
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Win a prize").click()
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    assert cw.store.counts()["salesforce"]["dead"] == 16
    context.close()


def test_reading_works_with_javascript_off(browser: Any, served: Served) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{served.url}/")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    page.get_by_role("link", name="Review queue").click()
    first = served.cw.held[0]
    expect(page.get_by_role("heading", name=re.compile(f"Message {first} "))).to_be_visible()
    page.get_by_role("link", name="Dead letters").click()
    expect(page.get_by_role("heading", name=re.compile("salesforce: 16 dead"))).to_be_visible()
    page.get_by_role("link", name="Message history").click()
    page.get_by_label("Message id or caller phone").fill(first)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=first, exact=True).click()
    expect(page.get_by_role("table", name="Sync log of salesforce, oldest first")).to_contain_text(
        "503"
    )
    context.close()


def test_overview_refreshes_itself_until_told_not_to(browser: Any, fast_served: Served) -> None:
    served = fast_served
    cw = served.cw
    page = browser.new_page()
    page.goto(f"{served.url}/")
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="salesforce"))
    expect(row.get_by_role("link", name="16")).to_be_visible()
    assert cw.store.retry_dead("salesforce") == 16  # someone runs `syncd retry` meanwhile
    # The figures change in place (the refresh interval is 1 s here), with no navigation.
    expect(row.get_by_role("cell").nth(1)).to_have_text("16", timeout=10_000)  # pending
    expect(row.get_by_role("link", name="16")).to_have_count(0)
    box = page.get_by_label(re.compile("Refresh these figures"))
    expect(box).to_be_checked()
    box.uncheck()
    item = cw.store.problems(["review"])[0]
    assert cw.store.resolve_review(item["delivery_id"], record_id=None)
    page.wait_for_timeout(3_000)  # three refresh intervals: none may happen now
    hub = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="hubspot"))
    expect(hub.get_by_role("link", name=str(len(cw.held)))).to_be_visible()
    page.close()
