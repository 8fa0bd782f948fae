"""Live pages and content search in a real chromium against a real ``cas-store serve``.

Two pages stay open while one of them, then a third party, writes through the API:
both redraw by the change feed, with no reload. The search box finds words inside
messages and opens the session at the matching message.
"""

from __future__ import annotations

import re

import history_seed as seed
import httpx
from browser_harness import OpenPage, Server
from playwright.sync_api import expect


def _write(server: Server, method: str, path: str, body: object) -> None:
    r = httpx.request(method, f"{server.base}/api{path}", json=body,
                      headers=server.headers(), timeout=10)
    assert r.status_code < 300, r.text


def test_two_open_pages_follow_writes_made_through_the_api(server: Server,
                                                           open_page: OpenPage) -> None:
    listing, _ = open_page(server)
    rows = listing.locator("table.sessions tbody tr")
    expect(rows).to_have_count(50)
    session, _ = open_page(server, path=f"/#/s/{seed.RESTORED}")
    points = session.locator("svg.timeline-svg a.point")
    expect(session.get_by_role("heading", level=1)).to_be_visible()
    before = points.count()
    assert before > 0
    # Both pages hold their stream (its ready event came) before the write.
    for page in (listing, session):
        expect(page.locator("#live-state")).to_be_visible()

    # The list page writes through the API (as a chat front end in another tab would);
    # the session page, which made no request, shows it.
    status = listing.evaluate(
        """async (sid) => (await fetch(`/api/sessions/${sid}/messages`, {
             method: "POST", headers: {"Content-Type": "application/json"},
             body: JSON.stringify({messages: [{role: "user", content: "one more thing, live"}]}),
           })).status""", seed.RESTORED)
    assert status == 200
    expect(points).to_have_count(before + 1)  # the new version in the timeline
    expect(session.locator("article.msg").last).to_contain_text("one more thing, live")
    expect(session.locator("#status")).to_contain_text(f"version {before + 1}")
    # The list shows that session first now (newest update), with its new version count.
    first = rows.first
    expect(first).to_have_attribute("data-sid", seed.RESTORED)
    expect(first.locator('td[data-label="versions"]')).to_have_text(str(before + 1))

    _write(server, "POST", "/sessions", {"session_id": "born-live",
                                          "metadata": {"title": "Born while watching"}})
    expect(rows.first).to_have_attribute("data-sid", "born-live")
    expect(rows.first).to_contain_text("Born while watching")
    # The session page ignores other sessions' moves.
    expect(points).to_have_count(before + 1)


def test_search_box_finds_words_in_messages_and_opens_the_message(server: Server,
                                                                  open_page: OpenPage) -> None:
    page, _ = open_page(server)
    box = page.get_by_role("searchbox", name="Search sessions")
    box.fill('"paragraph 4"')  # a phrase inside a message, in no title
    box.press("Enter")
    hits = page.locator("#message-hits li.hit")
    expect(hits.first).to_be_visible()
    first = hits.first
    expect(first.locator("mark").first).to_have_text(re.compile("paragraph", re.I))
    expect(page.locator("table.sessions tbody tr")).to_have_count(0)  # no title matches
    link = first.get_by_role("link")
    sid = link.get_attribute("data-sid")
    index = link.get_attribute("data-index")
    link.click()
    expect(page).to_have_url(re.compile(rf"#/s/{sid}\?m={index}$"))
    target = page.locator(f'article.msg[data-index="{index}"]')
    expect(target).to_have_class(re.compile(r"\btarget\b"))
    expect(target).to_be_in_viewport()
    expect(target).to_contain_text("Paragraph 4")

    # A snippet is text: markup inside a message shows as written, never as elements.
    page.goto(server.base + "/#/?q=evil")
    snippet = page.locator("#message-hits li.hit .snippet").first
    expect(snippet).to_contain_text('<img src="/evil.png"')
    assert snippet.locator("img").count() == 0

    # Input that is not a query gets a plain message, not an error page.
    page.goto(server.base + "/#/?q=%22%22")
    expect(page.locator("#message-hits")).to_contain_text("no words")
