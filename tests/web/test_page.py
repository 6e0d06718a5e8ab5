"""The page at `/` in a real browser against a real server: a clip, a long video, the webcam,
errors, the keyboard, phone width, dark mode and an accessibility check (axe-core)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.web.conftest import API_KEY

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# what chromium logs for an API answer that is an error on purpose (the page shows its message)
EXPECTED_FAILURES = ("status of 401", "status of 413", "status of 415", "status of 422")


def _wait(driver, condition, timeout: float = 10.0, what: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, what)


def _console_errors(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    entries = driver.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def _open(driver, server, key: str | None = API_KEY) -> None:
    """The page, fresh, with `key` in its session storage (as typed in an earlier visit)."""
    driver.get(server.url + "/favicon.ico")  # the origin, without the page's API calls
    driver.execute_script(
        "sessionStorage.clear(); if (arguments[0]) sessionStorage.setItem('sttm-api-key', arguments[0])", key
    )
    driver.get(server.url + "/")
    if key is not None:
        _wait(driver, lambda d: "frames" in d.find_element(By.ID, "model-info").text, what="the model description")
        # the runtime, its precision and why (the test server names its backend)
        assert "onnxruntime" in (text := driver.find_element(By.ID, "model-info").text) and "--backend" in text
    driver.get_log("browser")  # what happened before is not this test's


def _upload(driver, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def _error_text(driver) -> str:
    box = driver.find_element(By.ID, "error")
    return box.text if box.is_displayed() else ""


def _axe(driver) -> list[dict]:
    """Serious or critical axe-core violations of the page as it is now."""
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[0]; axe.run(document).then(done, e => done(String(e)))"
    )
    assert isinstance(result, dict), result
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]  # fmt: skip


def _screenshot(driver, path: Path) -> None:
    """The whole page (not only the window), as PNG."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))


def _api(server, path: str, file: Path, **params) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", params=params, files={"file": (file.name, file.read_bytes())},
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)  # fmt: skip


def test_key_then_clip_predictions_latency_frames_and_merges(browser, server, media, artifacts):
    """Without the key the API's 401 reads as a sentence; with it, a clip of a known class is
    classified on selection: that label first within 10 s, the four latency stages, one
    thumbnail per sampled frame and one merge overlay per token time slice, drawn."""
    _open(browser, server, key=None)
    _wait(browser, lambda d: "API key" in _error_text(d), what="the unauthorized message")
    browser.find_element(By.ID, "key").send_keys(API_KEY, Keys.ENTER)
    _wait(browser, lambda d: "frames" in d.find_element(By.ID, "model-info").text and not _error_text(d))
    assert browser.execute_script("return sessionStorage.getItem('sttm-api-key')") == API_KEY
    assert browser.execute_script("return localStorage.length") == 0

    started = time.monotonic()
    _upload(browser, media["right"])
    first = (By.CSS_SELECTOR, "#predictions li:first-child .label")
    _wait(browser, EC.text_to_be_present_in_element(first, "moving_right"), 10, "moving_right first")
    assert time.monotonic() - started < 10
    scores = [float(s.text.rstrip("%")) for s in browser.find_elements(By.CSS_SELECTOR, "#predictions .score")]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    stages = browser.find_elements(By.CSS_SELECTOR, "#latency li[class^=stage-]")
    assert [s.get_attribute("class") for s in stages] == [
        f"stage-{k}" for k in ("decode", "preprocess", "queue", "inference")
    ]
    assert all(" ms" in s.text for s in stages)

    expected = _api(server, "/v1/classify", media["right"], explain="true").json()
    slices = len(expected["merges"]["frames"])
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#merges canvas")) == slices, 10, "merge overlays")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#frames canvas")) == len(expected["frames"])
    # every overlay is drawn: a frame with coloured patches, not a blank canvas
    spreads = browser.execute_script("""
        return [...document.querySelectorAll('#merges canvas')].map(c => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let lo = 255, hi = 0;
          for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
          return hi - lo; });""")
    assert all(spread > 50 for spread in spreads), spreads
    assert browser.execute_script(
        "return document.getElementById('player').paused && document.getElementById('player').muted"
    )
    _screenshot(browser, artifacts / "page-clip.png")
    assert _console_errors(browser, ("status of 401",)) == []


def test_errors_are_readable_and_the_page_still_works(browser, server, media, artifacts):
    """A text file and a file over the upload limit show the API's own message; then a clip works."""
    _open(browser, server)
    for name in ("text", "large"):
        message = _api(server, "/v1/classify", media[name]).json()["error"]["message"]
        _upload(browser, media[name])
        _wait(browser, lambda d, m=message: m in _error_text(d), 10, f"the {name} error")
        _screenshot(browser, artifacts / f"page-error-{name}.png")
    assert "too large" in _error_text(browser)
    _upload(browser, media["right"])
    first = (By.CSS_SELECTOR, "#predictions li:first-child .label")
    _wait(browser, EC.text_to_be_present_in_element(first, "moving_right"), 10, "a clip after the errors")
    assert not _error_text(browser)
    assert _console_errors(browser, EXPECTED_FAILURES) == []


def test_keyboard_phone_width_dark_mode_and_axe(browser, server, media, artifacts):
    """Tab reaches the key, the file input and the camera button in order; no serious or
    critical axe violation in light and dark; nothing wider than a phone."""
    _open(browser, server)
    reached = []
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()  # to the page (a file input takes keys as paths)
        reached.append(browser.switch_to.active_element.get_attribute("id"))
    order = [i for i in reached if i in ("key", "file", "live-start")]
    assert order[:3] == ["key", "file", "live-start"], reached
    _upload(browser, media["right"])
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#merges canvas"), 10, "a result")
    assert _axe(browser) == []

    try:
        browser.set_window_size(390, 1400)
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
        )
        assert browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 20, 23)", background
        assert browser.execute_script("return document.documentElement.scrollWidth <= innerWidth + 1")
        assert _axe(browser) == []
        _screenshot(browser, artifacts / "page-phone-dark.png")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        browser.set_window_size(1100, 1400)
    assert _console_errors(browser) == []


def test_long_video_segments_in_order_seek_and_captions(browser, server, media, artifacts):
    """Right then left: both segments in order on the track; a click seeks the player; the
    WebVTT is the player's caption track and a download."""
    _open(browser, server)
    _upload(browser, media["long"])
    buttons = (By.CSS_SELECTOR, "#segments button")
    _wait(browser, lambda d: len(d.find_elements(*buttons)) >= 2, 20, "segments")
    labels = [b.get_attribute("data-label") for b in browser.find_elements(*buttons)]
    assert labels[0] == "moving_right" and labels[-1] == "moving_left", labels
    last = browser.find_elements(*buttons)[-1]
    start = float(last.get_attribute("data-start"))
    last.click()
    _wait(
        browser, lambda d: abs(d.execute_script("return document.getElementById('player').currentTime") - start) < 0.1
    )
    track = "const t = document.querySelector('#player track'); return t && t.kind"
    _wait(browser, lambda d: d.execute_script(track) == "captions", 20, "the caption track")
    vtt = browser.execute_async_script(
        "fetch(document.getElementById('download-vtt').href).then(r => r.text()).then(arguments[0])"
    )
    assert vtt.startswith("WEBVTT") and "moving_left" in vtt
    legend = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert "moving_right" in legend and "moving_left" in legend
    _screenshot(browser, artifacts / "page-timeline.png")
    assert _console_errors(browser) == []


def test_live_camera_label_becomes_the_class(browser, server, artifacts):
    """Chromium's fake camera plays a clip of `moving_down`: the live label becomes it."""
    _open(browser, server)
    browser.find_element(By.ID, "live-start").click()
    label = browser.find_element(By.ID, "live-label")
    _wait(browser, lambda d: label.get_attribute("data-label") == "moving_down", 40, "the live label")
    assert "lag" in browser.find_element(By.ID, "live-lag").text
    _screenshot(browser, artifacts / "page-live.png")
    browser.find_element(By.ID, "live-stop").click()
    _wait(browser, lambda d: d.find_element(By.ID, "live-start").is_enabled(), 10, "stop")
    assert _console_errors(browser) == []
    assert json.loads(browser.execute_script("return JSON.stringify(!!window.WebSocket)"))


def test_url_stream_events_reach_the_live_view(browser, server, media_url, artifacts):
    """A URL the server may read (the right-then-left clip over HTTP): its Server-Sent Events,
    read with the key's header, fill the live label and the recent segments until it ends."""
    _open(browser, server)
    browser.find_element(By.ID, "stream-url").send_keys(f"{media_url}/right_then_left.mp4", Keys.ENTER)
    _wait(browser, lambda d: "ended" in d.find_element(By.ID, "live-lag").text, 30, "the stream's end")
    segments = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#live-segments li")]
    assert segments and segments[0].startswith("moving_left") and segments[-1].startswith("moving_right"), segments
    assert browser.find_element(By.ID, "live-start").is_enabled() and not _error_text(browser)
    _screenshot(browser, artifacts / "page-url-stream.png")
    assert _console_errors(browser) == []
