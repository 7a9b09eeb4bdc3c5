"""The chat app in a real browser: Debian's chromium, headless, driven by Selenium through the system
chromedriver (nothing downloaded). Upload a music file, ask, see the answer; ask for music, see the
audio player. Saves a screenshot (MUMU_SCREENSHOT=path to keep it). Skips, saying why, without chromium/chromedriver/selenium.

The README's picture: MUMU_SCREENSHOT=docs/screenshot.png MUMU_BROWSER_CKPT=ckpts/tiny MUMU_BROWSER_AUDIO=<a
held-out world clip> MUMU_BROWSER_QUESTION="What instrument is playing?" MUMU_BROWSER_MAX_NEW=48 (the trained default answering about a clip it never saw); by default the
random tiny bundle and an example melody."""
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

import gradio_app  # noqa: E402
from llama.examples import write_examples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver); not installed here")


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    ckpt = os.environ.get("MUMU_BROWSER_CKPT") or str(tiny_bundle)
    pipe = gradio_app.load_pipeline(gradio_app.parse_args(["--ckpt-dir", ckpt]))
    cfg = gradio_app.AppConfig(workdir=tmp_path_factory.mktemp("browser_app"))
    demo = gradio_app.build_demo(pipe, cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gradio_app.serve(demo, cfg, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"                # Selenium Manager: never fetch a browser/driver
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _wait(predicate, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _bot_messages(driver):
    from selenium.webdriver.common.by import By
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid='bot']") if e.text.strip()]


def _settled(driver, quiet_s=2.0, timeout=120.0):
    """Wait until the chat is idle: no pending event and text unchanged for `quiet_s` (a click
    while an event runs is ignored, gradio's trigger_mode "once")."""
    from selenium.webdriver.common.by import By
    chat = driver.find_element(By.CSS_SELECTOR, "#chat")
    end, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < end:
        trackers = chat.find_elements(By.CSS_SELECTOR, "[data-testid='status-tracker']")
        busy = any("hide" not in (t.get_attribute("class") or "") for t in trackers)
        text = chat.text
        if text != last or busy:
            last, since = text, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return text
        time.sleep(0.25)
    raise AssertionError("timed out waiting for the chat to settle")


def _send(driver, text):
    from selenium.webdriver.common.by import By
    box = driver.find_element(By.CSS_SELECTOR, "#message textarea")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#send").click()


def test_upload_ask_and_get_music(app, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    write_examples(tmp_path)
    clip = Path(os.environ.get("MUMU_BROWSER_AUDIO") or tmp_path / "melody.wav")
    browser.get(app)
    upload = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#audio_in input[type=file]"), what="the page")
    max_new = os.environ.get("MUMU_BROWSER_MAX_NEW") or "8"          # short answers keep the test fast
    for slider, value in (("max_new", max_new), ("duration", "1")):
        box = browser.find_element(By.CSS_SELECTOR, f"#{slider} input[type=number]")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value, Keys.TAB)
    upload[0].send_keys(str(clip.resolve()))
    _wait(lambda: clip.stem in browser.find_element(By.CSS_SELECTOR, "#audio_in").text, what="the upload")
    _send(browser, os.environ.get("MUMU_BROWSER_QUESTION") or "Describe this music.")
    first = _wait(lambda: [m for m in _bot_messages(browser) if m.strip() not in ("…", "")], what="the answer")
    assert not first[-1].startswith("Error"), first
    _settled(browser)
    assert clip.name in browser.find_element(By.CSS_SELECTOR, "#chat").text

    browser.find_element(By.CSS_SELECTOR, "#make_music input[type=checkbox]").click()
    _send(browser, "Write a calm piano piece.")
    chat = browser.find_element(By.CSS_SELECTOR, "#chat")
    try:
        _wait(lambda: "music:" in chat.text or "Error" in chat.text, timeout=120, what="the music answer")
    finally:
        browser.save_screenshot(str(tmp_path / "music.png"))
    assert "music: 1.00 s at 32000 Hz" in chat.text, chat.text
    player = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#music_out audio, #music_out .waveform-container,"
                                                                  " #music_out [data-testid='waveform-output']"),
                   what="the audio player")
    assert player
    # The README's picture is refreshed only on request (MUMU_SCREENSHOT=docs/screenshot.png):
    # a test run never changes tracked files.
    browser.set_window_size(1280, 1500)       # the whole chat, scrolled to its start
    browser.execute_script("window.scrollTo(0, 0); document.querySelectorAll('*').forEach("
                           "e => { if (e.scrollHeight > e.clientHeight) e.scrollTop = 0; });")
    assert browser.save_screenshot(os.environ.get("MUMU_SCREENSHOT") or str(tmp_path / "screenshot.png"))
