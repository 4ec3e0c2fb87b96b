"""The page in a real browser: Debian's chromium driven by Playwright, with JFK as the microphone.

Chromium loops the fake capture file: 11 s of speech, then SILENCE_S of silence, then the speech
again, so the second pass talks over the avatar's reply (barge-in) without any scripting. The
hands-free test hears JFK with a long silence after him instead: on a loaded machine a reply can take
longer than SILENCE_S to start, and each pass would then cancel the turn before it spoke.
"""

import json
import re
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import expect

from avatar_core.media import decode_audio
from tests.conftest import JFK, JFK_WORDS, ROOT, SECURE_TOKEN

CHROMIUM = "/usr/bin/chromium"
# The next pass starts SILENCE_S after JFK stops; the reply starts speaking 3.5-5 s after (1.8 s of
# end-of-utterance silence, then ASR, LLM, TTS, animator). 6 s lets the reply start first and leaves
# even a short reply still speaking when JFK comes back; 8 s missed short replies pass after pass.
SILENCE_S = 6.0
# The hands-free test: time to answer even on a loaded machine, and a next pass within heard()'s
# minute should tiny.en mishear this one.
CALM_SILENCE_S = 20.0
# Screenshots land in the ignored artifacts/ folder; docs/ keeps the copies the README shows.
SHOTS = ROOT / "artifacts" / "screenshots"

# Records every status the pill shows, from the first paint on.
RECORD_STATES = """
window.__states = [];
document.addEventListener('DOMContentLoaded', () => {
  const el = document.querySelector('[data-testid="status"]');
  const note = () => { const s = el.textContent.trim(); if (window.__states.at(-1) !== s) window.__states.push(s); };
  note();
  new MutationObserver(note).observe(el, { childList: true, characterData: true, subtree: true });
});
"""


def mic_wav(directory: Path, silence_s: float) -> Path:
    speech = decode_audio(JFK.read_bytes(), 60, rate=48_000)
    audio = np.concatenate([speech, np.zeros(int(silence_s * 48_000), np.float32)])
    path = directory / "mic.wav"
    sf.write(path, audio, 48_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # one per module: a second would find the first's event loop
        yield p


def launch(playwright, silence_s: float):
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic_wav(Path(tmp), silence_s)}",
        ]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page = context.new_page()
    page.add_init_script(RECORD_STATES)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'idle'", timeout=30_000)
    yield page
    context.close()
    assert errors == [], "the page threw"


@pytest.fixture(scope="module")
def browser(playwright):
    yield from launch(playwright, SILENCE_S)


@pytest.fixture(scope="module")
def calm_browser(playwright):
    yield from launch(playwright, CALM_SILENCE_S)


@pytest.fixture
def page(browser, serve_app):
    yield from open_page(browser, serve_app)


@pytest.fixture
def calm_page(calm_browser, serve_app):
    yield from open_page(calm_browser, serve_app)


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


def heard(page, n: int) -> str:
    """The first user line from the n-th on that has JFK's words. tiny.en sometimes hears "asked
    not" in the browser's processed audio; the mic loops, so the next pass is heard again."""
    find = """([n, wanted]) => {
      const norm = (t) => t.toLowerCase().replace(/[^a-z' ]+/g, ' ').replace(/\\s+/g, ' ');
      const lines = [...document.querySelectorAll('[data-testid=transcript] li.user p')].slice(n - 1);
      const line = lines.find((p) => norm(p.textContent).includes(wanted));
      return line ? line.textContent : null;
    }"""
    try:
        return page.wait_for_function(find, arg=[n, JFK_WORDS], timeout=60_000).json_value()
    except Exception:
        shown = page.evaluate("[...document.querySelectorAll('[data-testid=transcript] li.user p')].map(p => p.textContent)")
        raise AssertionError(f"no user line from line {n} on has JFK's words: {shown}") from None


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """`wanted` appears in `seen` as a subsequence."""
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


def test_hands_free_conversation(calm_page):
    page = calm_page
    status = page.get_by_test_id("status")
    video = page.get_by_test_id("avatar-video")
    page.get_by_test_id("mic-button").click()
    expect(page.get_by_test_id("mic-button")).to_have_attribute("aria-pressed", "true", timeout=10_000)
    page.wait_for_function("document.querySelector('video').currentTime > 1", timeout=30_000)  # listening video
    assert status.text_content() == "listening"
    page.screenshot(path=str(SHOTS / "screenshot-listening.png"))

    said = heard(page, 1)
    assert JFK_WORDS in words(said)
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'speaking'", timeout=60_000)
    reply = page.locator("[data-testid=transcript] li.avatar p").first
    assert len(reply.text_content().split()) >= 3
    t0 = video.evaluate("v => v.currentTime")
    page.wait_for_function(f"document.querySelector('video').currentTime > {t0} + 1", timeout=30_000)
    page.screenshot(path=str(SHOTS / "screenshot-speaking.png"))
    assert video.evaluate("v => v.videoWidth") > 0 and video.evaluate("v => v.muted") is False
    page.wait_for_function("window.__states.at(-1) === 'listening' && window.__states.includes('speaking')", timeout=60_000)
    states = page.evaluate("window.__states")
    assert in_order(states, ["idle", "listening", "thinking", "speaking", "listening"]), states


def test_barge_in_stops_playback(page, serve_app):
    page.get_by_test_id("mic-button").click()
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'speaking'", timeout=90_000)
    # JFK's next pass starts while the avatar speaks. A short reply may have finished playing
    # before he comes back (then that barge-in cut nothing); the mic loops, so wait for a pass that
    # talks over speech still to be played, and judge that one.
    # It must also be a barge-in, not a merge: when his speech resumes within `resume_s` of a pause
    # the turn model called the end, the server withdraws that speculative turn and answers the
    # whole utterance once (`cancelled` with `merged`), and the page drops the turn's lines. That
    # is settled once the next transcript has come; the page's test hooks record both.
    # And part of the reply must have been heard (a barge-in during the jitter buffer keeps none).
    judged = ("(window.__bargeIns || []).find((b) => b.left > 0 && b.heard > 0 && "
              "!(b.turn in (window.__merged || {})) && (window.__heardAt || []).some((t) => t > b.when) && "
              "document.querySelector(`[data-testid=transcript] li.avatar[data-turn='${b.turn}'] p`))")
    page.wait_for_function(f"!!{judged}", timeout=150_000)
    barge = page.evaluate(judged)
    line = page.locator(f"[data-testid=transcript] li.avatar[data-turn='{barge['turn']}']")
    assert "interrupted" in line.get_attribute("class")
    assert JFK_WORDS in words(heard(page, 2))
    # once interrupted, nothing more of that reply was queued (segments in flight were dropped)
    late = page.evaluate(
        "((b) => window.__player.log.filter(([turn, , appended]) => turn === b.turn && appended > b.when))", barge
    )
    assert late == []
    # nor of any reply withdrawn because the speaker went on (a merge), in the passes so far
    withdrawn = page.evaluate("Object.entries(window.__merged || {}).flatMap(([turn, when]) => "
                              "window.__player.log.filter(([t, , appended]) => t === turn && appended > when))")
    assert withdrawn == []
    # the history keeps only the part of the reply that was played before the interruption
    full_reply = line.locator("p").text_content().strip()
    session = page.evaluate("document.body.dataset.session")
    messages = httpx.get(f"{serve_app}/api/v1/sessions/{session}", timeout=30).json()["messages"]
    # found by content, not position: a speculative turn the user talked on into has a line on the
    # page but none in the history (its audio was merged into the next utterance); and the mic loops
    # the same question, so earlier passes that nothing cut kept the same reply whole
    # The part kept begins the reply and ends in "…" where the barge-in cut a piece short (a cut in
    # the last piece keeps its words: the whole text, then "…"); one that came between two pieces
    # (a clause or a sentence) keeps the pieces heard as they are, shorter than the reply.
    # The history joins the pieces heard with a space, where the reply may have had a line break.
    replies = [" ".join(m["content"].split()) for m in messages if m["role"] == "assistant"]
    full_reply = " ".join(full_reply.split())
    kept = [r for r in replies if r.endswith("…") == barge["cut"] and full_reply.startswith(r.rstrip("…"))
            and (barge["cut"] or len(r) < len(full_reply))]
    assert kept, json.dumps({"history": replies, "page": full_reply, "barge": barge})  # whole, not elided


def test_keyboard_order_and_labels(page):
    """Tab walks the controls in reading order, each with a name a screen reader can say."""
    order = []
    for _ in range(8):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(() => { const e = document.activeElement; return e.id || e.getAttribute('aria-label'); })()"))
    assert order == [
        "pill", "mic", "avatar-select", "Upload a face image", "voice-select", "Upload a reference voice clip",
        "language-select", "autoplay",
    ], order
    mic = page.get_by_test_id("mic-button")
    assert mic.get_attribute("aria-label") and mic.get_attribute("aria-pressed") == "false"
    # the focused control (reached by keyboard) shows the page's focus ring
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"


def test_narrow_screen_stacks_the_columns(page):
    page.set_viewport_size({"width": 420, "height": 900})
    video = page.get_by_test_id("avatar-video").bounding_box()
    chat = page.get_by_test_id("transcript").bounding_box()
    assert chat["y"] > video["y"] + video["height"]  # below, not beside


def test_the_page_works_with_an_access_token(browser, secure_app):
    """The app with `security.auth_token` (tests/conftest.py `secure_app`, behind route prefix
    /secure): opened once with ?access_token=, the page keeps the token out of the address bar and
    its logs, lists the avatars, connects the WebSocket and holds a hands-free turn; without the
    token it says what is missing instead of reconnecting silently."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    logs: list[str] = []
    page.on("console", lambda msg: logs.append(msg.text))
    page.on("pageerror", lambda exc: logs.append(str(exc)))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(f"{secure_app}/?access_token={SECURE_TOKEN}")
        page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'idle'", timeout=30_000)
        assert SECURE_TOKEN not in page.url and page.url.rstrip("/").endswith("/secure")
        expect(page.locator("#avatar-select option")).not_to_have_count(0)  # GET /api/v1/avatars with the token
        page.wait_for_function("document.querySelector('video').poster.startsWith('blob:')", timeout=30_000)  # fetched with the token
        session = page.evaluate("document.body.dataset.session")
        headers = {"Authorization": f"Bearer {SECURE_TOKEN}"}
        assert httpx.get(f"{secure_app}/api/v1/sessions/{session}", headers=headers, timeout=30).status_code == 200
        page.get_by_test_id("mic-button").click()
        assert JFK_WORDS in words(heard(page, 1))  # the mic's speech went over the WebSocket and back
        # every request stayed under the prefix; the token travelled only in the WebSocket's URL
        assert all("/secure/" in url for url in requests if url.startswith(secure_app.split("/secure")[0])), requests
        assert [url for url in requests[1:] if SECURE_TOKEN in url] == []  # after the first load: in headers
        assert not any(SECURE_TOKEN in line for line in logs), logs
        # a fresh tab without the token: told so, and not connected
        other = context.new_page()
        other.goto(f"{secure_app}/")
        expect(other.locator("#banner")).to_contain_text("access token", timeout=30_000)
        assert other.get_by_test_id("status").text_content() in ("connecting", "offline")
    finally:
        context.close()


def test_the_page_continues_its_conversation_after_losing_its_replica(browser, serve_app):
    """The Ingress replica holding the page's WebSocket is killed: the page reconnects with its
    session id and the server resumes that conversation (a new replica, the same session)."""
    from contextlib import contextmanager

    from ray import serve

    from tests.conftest import app_config, second_app
    from tests.test_front_door import kill_ingress

    base = second_app(serve_app, "reconnect", app_config())
    try:
        with contextmanager(open_page)(browser, f"{base}/") as page:
            session = page.evaluate("document.body.dataset.session")
            assert session and page.evaluate("document.body.dataset.resumed") == "false"
            kill_ingress("reconnect", base)
            page.wait_for_function("document.body.dataset.resumed === 'true'", timeout=90_000)
            assert page.evaluate("document.body.dataset.session") == session
            page.wait_for_function("document.querySelector('[data-testid=status]').textContent === 'idle'",
                                   timeout=30_000)
            states = page.evaluate("window.__states")
            assert in_order(states, ["idle", "offline", "idle"]), states  # it said it was cut off
    finally:
        serve.delete("reconnect")
