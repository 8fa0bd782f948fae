"""The "Messages were dropped" box: Recover with its outcome shown first, a two-click
restore that says what it leaves in history, and timeline marks drawn whole."""

from __future__ import annotations

import re
from pathlib import Path

import history_seed as seed
from browser_harness import NARROW, WIDE, OpenPage, Server, shot
from playwright.sync_api import expect

from cas_store import open_store

WIPED = "wiped-then-continued"


def wipe_then_continue(path: Path) -> None:
    """30 messages, a metadata-only style save of none, then 3 new ones (all fresh)."""
    old = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"old message {i}"}
           for i in range(30)]
    with open_store(path) as store:
        store.create(WIPED, {"title": "Wiped, then continued"}, old)
        store.save(WIPED, [], {"title": "Wiped, then continued"})
        store.append(WIPED, [{"role": "user", "content": f"after the wipe {k}"}
                             for k in range(3)])


def test_recover_from_the_box_keeps_what_was_written_since(server: Server, seeded_store: Path,
                                                          open_page: OpenPage) -> None:
    wipe_then_continue(seeded_store)
    page, _ = open_page(server, WIDE, f"/#/s/{WIPED}")
    box = page.locator("#shrink-warning")
    expect(box).to_contain_text("30 messages to 0 messages")
    expect(page.locator("#recover-plan")).to_have_text(
        "makes a new version with 33 messages, including the 3 messages written since the drop.")
    shot(page, "wide-10-recover-offered")
    page.get_by_role("button", name="Recover").click()
    expect(page.locator("#status")).to_contain_text("Recovered: version 4 has 33 messages.")
    expect(page.locator("section[aria-labelledby=msgs-h] .msg")).to_have_count(33)
    expect(page.locator("#shrink-warning")).to_have_count(0)
    head = server.get(f"/sessions/{WIPED}")
    assert head["seq"] == 4 and head["message_count"] == 33
    assert [m["content"] for m in head["messages"]][-3:] == [
        f"after the wipe {k}" for k in range(3)]


def test_restore_in_two_clicks_says_what_it_leaves_in_history(
        server: Server, seeded_store: Path, open_page: OpenPage) -> None:
    wipe_then_continue(seeded_store)
    page, _ = open_page(server, NARROW, f"/#/s/{WIPED}")
    page.get_by_role("button", name="Restore version 1").click()  # click 1
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Restore version 1?")
    expect(dialog).to_contain_text(
        "The 3 newer messages of the head that version 1 lacks will be in the history only")
    shot(page, "narrow-11-restore-from-session-page")
    dialog.get_by_role("button", name="Restore").click()  # click 2
    expect(page.locator("#status")).to_contain_text("Restored version 1 as version 4")
    assert server.get(f"/sessions/{WIPED}")["message_count"] == 30


def test_the_restore_box_of_an_old_shrink_needs_two_clicks_too(server: Server,
                                                               open_page: OpenPage) -> None:
    page, _ = open_page(server, WIDE, f"/#/s/{seed.MAIN}")
    page.get_by_role("button", name="Restore version 7").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Restore").click()
    expect(page).to_have_url(re.compile(rf"#/s/{seed.MAIN}$"))
    expect(page.locator("#status")).to_contain_text("Restored version 7 as version 9")
    assert server.get(f"/sessions/{seed.MAIN}")["messages"] == seed.main_history()


def test_first_timeline_point_and_its_ring_are_drawn_whole(server: Server,
                                                          open_page: OpenPage) -> None:
    for size in (WIDE, NARROW):
        page, _ = open_page(server, size, f"/#/s/{seed.MAIN}/v/1")
        ring = page.locator('a.point[data-seq="1"] .ring')
        expect(ring).to_have_count(1)
        left, axis_right = page.evaluate("""() => {
            const r = document.querySelector('a.point[data-seq="1"] .ring').getBBox();
            const bg = document.querySelector('.timeline-svg .yaxis-bg').getBBox();
            return [r.x - 1.5, bg.x + bg.width];  // the ring's stroke is 3 px wide
        }""")
        assert left >= axis_right, (left, axis_right)
