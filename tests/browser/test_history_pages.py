"""The version-history pages in a real chromium against a real ``cas-store serve``."""

from __future__ import annotations

import re

import history_seed as seed
import pytest
from browser_harness import NARROW, WIDE, OpenPage, Server, shot
from playwright.sync_api import Page, expect

from cas_store import open_store


def search(page: Page, text: str) -> None:
    box = page.get_by_role("searchbox", name="Search sessions")
    box.fill(text)
    box.press("Enter")


@pytest.mark.parametrize("size", ["wide", "narrow"])
def test_find_a_shrunk_session_compare_and_restore(server: Server, open_page: OpenPage,
                                                   size: str) -> None:
    page, _ = open_page(server, WIDE if size == "wide" else NARROW)
    rows = page.locator("table.sessions tbody tr")
    expect(rows).to_have_count(50)  # one page of the API's list
    search(page, "lisbon")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text(seed.MAIN_TITLE)
    expect(row.locator(".badge.suspect")).to_be_visible()
    shot(page, f"{size}-1-sessions-search")

    row.get_by_role("link", name=seed.MAIN_TITLE).click()
    expect(page).to_have_url(re.compile(r"#/s/trip-lisbon$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(seed.MAIN_TITLE)
    points = page.locator("svg.timeline-svg a.point")
    expect(points).to_have_count(8)
    suspect = page.locator('a.point[data-kind="suspect"]')
    expect(suspect).to_have_count(1)
    expect(suspect).to_have_attribute("data-seq", "8")
    expect(page.locator('a.point[data-kind="intentional"]')).to_have_attribute("data-seq", "4")
    expect(page.locator("#shrink-warning")).to_contain_text("9 messages to 0 messages")
    shot(page, f"{size}-2-session-with-suspect-shrink")

    page.locator('a.point[data-seq="7"]').click()  # the version before the shrink
    expect(page).to_have_url(re.compile(r"#/s/trip-lisbon/v/7$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Version 7")
    diff = page.locator("#diff")
    expect(diff.locator(".diff-summary")).to_have_text(
        "0 messages in common; then 9 messages only in v7 and 0 messages only in the head (v8).")
    expect(diff.locator(".diff-side.added .msg")).to_have_count(9)
    expect(diff.locator(".diff-meta")).to_contain_text("gpt-4o-mini")
    expect(diff.locator(".diff-meta")).to_contain_text("travel")
    shot(page, f"{size}-3-version-diff")

    page.get_by_role("button", name="Restore this version").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Restore version 7?")
    shot(page, f"{size}-4-restore-confirm")
    dialog.get_by_role("button", name="Restore").click()

    expect(page).to_have_url(re.compile(r"#/s/trip-lisbon$"))
    expect(page.locator("#status")).to_contain_text("Restored version 7 as version 9")
    expect(page.locator(".messages .msg")).to_have_count(9)
    expect(page.locator('a.point[data-seq="9"]')).to_have_attribute("data-kind", "restore")
    expect(page.locator("#shrink-warning")).to_have_count(0)
    shot(page, f"{size}-5-session-restored")

    head = server.get("/sessions/trip-lisbon")
    assert head["seq"] == 9
    assert head["messages"] == seed.main_history()


def test_messages_show_roles_tool_calls_and_fold_long_content(server: Server,
                                                              open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, "/#/s/trip-lisbon/v/7")
    msgs = page.locator("section[aria-labelledby=vmsgs-h] .msg")
    expect(msgs).to_have_count(9)
    roles = [r.strip().lower() for r in msgs.locator(".role").all_inner_texts()]
    assert roles == [m["role"] for m in seed.main_history()]
    call = msgs.nth(2).locator(".tool-call")
    expect(call).to_contain_text("weather_forecast")
    expect(call).to_contain_text('"city": "Lisbon"')
    long = msgs.nth(4)
    expect(long.locator(".text.folded")).to_have_count(1)
    fold = long.locator("button.fold")
    expect(fold).to_have_text(re.compile(r"^Show all"))
    expect(fold).to_have_attribute("aria-expanded", "false")
    fold.click()
    expect(long.locator(".text.folded")).to_have_count(0)
    expect(fold).to_have_attribute("aria-expanded", "true")
    # An image part is named, not fetched (the recorder checks no request left the server).
    expect(msgs.nth(5)).to_contain_text("https://example.invalid/sintra.jpg")


def test_diff_against_another_version(server: Server, open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, "/#/s/trip-lisbon/v/3")
    page.get_by_label("Compare with version").select_option("4")
    summary = page.locator("#diff .diff-summary")
    expect(summary).to_have_text(
        "5 messages in common; then 1 message only in v3 and 0 messages only in v4.")
    expect(page.locator("#diff .diff-side.added")).to_contain_text("(draft, retried)")


def test_sessions_are_paged_like_the_api(server: Server, open_page: OpenPage) -> None:
    page, _ = open_page(server, NARROW)
    rows = page.locator("table.sessions tbody tr")
    expect(rows).to_have_count(50)
    first_page = rows.first.get_attribute("data-sid")
    page.get_by_role("link", name="Next page").click()
    total = len(server.get("/sessions?limit=1000")["sessions"])
    expect(rows).to_have_count(total - 50)
    assert rows.first.get_attribute("data-sid") != first_page
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    shot(page, "narrow-6-sessions-page-2")
    page.get_by_role("link", name="First page").click()
    expect(rows.first).to_have_attribute("data-sid", first_page or "")


def test_a_stale_head_gets_412_and_the_page_offers_reload(server: Server, seeded_store,
                                                         open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, "/#/s/trip-lisbon/v/7")
    expect(page.get_by_role("button", name="Restore this version")).to_be_visible()
    with open_store(seeded_store) as store:  # someone else writes meanwhile
        store.append("trip-lisbon", [{"role": "user", "content": "still there?"}])
    page.get_by_role("button", name="Restore this version").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Restore").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The session has moved on")
    expect(alert).to_contain_text("now at version 9, not 8")
    shot(page, "wide-7-restore-conflict")
    assert server.get("/sessions/trip-lisbon")["seq"] == 9  # nothing was restored

    alert.get_by_role("button", name="Reload").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.locator("#compare-with option:checked")).to_have_text("the head (v9)")
    page.get_by_role("button", name="Restore this version").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Restore").click()
    expect(page.locator("#status")).to_contain_text("Restored version 7 as version 10")


def test_token_is_asked_once_and_kept_for_the_tab(token_server: Server,
                                                  open_page: OpenPage) -> None:
    page, _ = open_page(token_server, WIDE)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Token").fill("wrong")
    dialog.get_by_role("button", name="Use token").click()
    expect(dialog.locator(".refused")).to_be_visible()  # asked again, saying why
    shot(page, "wide-8-token-refused")
    dialog.get_by_label("Token").fill(token_server.token or "")
    dialog.get_by_role("button", name="Use token").click()
    expect(page.locator("table.sessions tbody tr")).to_have_count(50)
    assert page.evaluate("sessionStorage.getItem('cas-store.token')") == token_server.token

    page.reload()  # the same tab: no second question
    expect(page.locator("table.sessions tbody tr")).to_have_count(50)
    expect(dialog).not_to_be_visible()
    page.get_by_role("link", name=seed.MAIN_TITLE).click()
    expect(page.locator('a.point[data-kind="suspect"]')).to_have_count(1)


def test_controls_are_reachable_by_keyboard(server: Server, open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, "/#/s/trip-lisbon")
    expect(page.locator("a.point")).to_have_count(8)

    def tab_to(selector: str, limit: int = 60) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("(s) => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to('a.point[data-seq="7"]')
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/s/trip-lisbon/v/7$"))
    expect(page.locator("#diff .diff-summary")).to_be_visible()
    tab_to("#restore")
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # cancelling changes nothing
    expect(dialog).not_to_be_visible()
    assert server.get("/sessions/trip-lisbon")["seq"] == 8


def test_markup_in_data_is_shown_as_text(server: Server, open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, f"/#/s/{seed.HOSTILE}")
    expect(page.get_by_role("heading", level=1)).to_have_text(seed.HOSTILE_TITLE)
    expect(page.locator(".msg .text")).to_have_text('<img src="/evil.png" onerror="boom()">hi')
    assert page.locator("main img, main script, main b").count() == 0


def test_restores_and_recoveries_are_labelled(server: Server, open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, f"/#/s/{seed.RECOVERED}")
    recovered = page.locator('a.point[data-kind="recover"]')
    expect(recovered).to_have_count(1)
    expect(recovered.locator("text.label")).to_have_text("recovered")
    expect(page.locator("#shrink-warning")).to_have_count(0)  # resolved by the recovery
    page.goto(f"{server.base}/#/s/{seed.RESTORED}")
    restored = page.locator('a.point[data-kind="restore"]')
    expect(restored).to_have_attribute("data-seq", "3")
    expect(restored.locator("text.label")).to_have_text("restored")
    shot(page, "wide-9-session-with-restore")
