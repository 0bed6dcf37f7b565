"""The live status page in real headless Chromium: a simulated call's stream appears, its frame
counter rises, its level meter moves, and it disappears at hang-up. The token goes in once in the
address and the page's feed then works by the cookie alone. A screenshot is kept in
test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from cdp import Chromium
from conftest import wait_until
from helpers.calls import originate
from helpers.daemons import TOKEN, make_daemon

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def browser(tmp_path):
    b = Chromium(tmp_path / "profile")
    try:
        yield b.start()
    finally:
        b.close()


def test_status_page_shows_a_stream_live(fs, tmp_path, esl, peer, browser):
    d = make_daemon(fs, tmp_path, control_token=TOKEN)
    try:
        host, port = d.control.address
        browser.goto(f"http://{host}:{port}/status?token={TOKEN.replace(' ', '%20')}"
                     .replace(";", "%3B"))
        assert wait_until(lambda: browser.js("location.pathname + ' ' + "
                                             "document.getElementById('feed')?.textContent")
                          == "/status live", 10)
        assert browser.js("document.getElementById('esl').textContent") == "connected"
        assert browser.js("document.getElementById('empty').style.display") == "block"

        uuid = originate(esl)
        assert d.execute(f"{uuid} start {peer.url('/page')} mono 16k") == "+OK Success\n"
        row = f"document.querySelector('tr[data-uuid=\"{uuid}\"]')"

        def cell(name: str) -> str | None:
            return browser.js(f"{row} && {row}.querySelector('td.{name}').textContent")

        assert wait_until(lambda: cell("state") == "streaming", 10)
        first = int(cell("frames"))
        assert wait_until(lambda: int(cell("frames")) >= first + 25, 5)  # the counter rises
        assert cell("url") == peer.url("/page") and cell("mix") == "mono"
        assert cell("rate") == "16000"
        assert float(browser.js(f"{row}.dataset.level")) > -20  # the 440 Hz tone moves it
        width = browser.js(f"{row}.querySelector('.meter > div').style.width")
        assert float(width.rstrip("%")) > 50
        shot = browser.screenshot(ARTIFACTS / "status-page.png")
        assert shot.stat().st_size > 1000

        esl.api(f"uuid_kill {uuid}")
        assert wait_until(lambda: browser.js(f"{row} === null"), 10)  # gone at hang-up
        assert browser.js("document.getElementById('count').textContent") == "0"
    finally:
        d.stop()
