"""The playground page in a real browser (headless Chromium): generate, stop, score, lines, keyboard,
a phone's width, and not one request to anywhere but the server."""

from __future__ import annotations

import time

import httpx
import pytest

from charlm.serve import ServerSettings, create_app, load_models
from charlm.serve.protocol import Limits
from charlm.serve.run import serve_in_thread
from tests.browser import browser_or_skip
from tests.conftest import make_text
from tests.data.test_lines import WORDS
from tests.train.test_loop import small_config

pytestmark = pytest.mark.slow  # a browser is a process of its own


LONG = 200_000  # characters: minutes of streaming, where 2,000 could end before Stop on a fast CPU


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from charlm.train import train

    root = tmp_path_factory.mktemp("page")
    (root / "text.txt").write_text(make_text(10_000))
    train(small_config(**{"train.max_steps": 10}), root / "text.txt", root / "words", progress=False)
    (root / "list.txt").write_text("\n".join(WORDS * 4) + "\n")
    train(small_config(**{"data.mode": "lines", "train.max_steps": 10, "train.max_epochs": None}),
          root / "list.txt", root / "names", progress=False)
    models = load_models([str(root / "words"), str(root / "names")], "cpu", max_streams=16, queue_limit=64)
    # Long enough a stream that a fast machine is still writing it when the test presses Stop.
    settings = ServerSettings(limits=Limits(max_length=LONG))
    with serve_in_thread(create_app(models, settings)) as address:
        yield address


@pytest.fixture
def page(url):
    with browser_or_skip() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url + "/")
        page.wait_for_selector("#model option[value=words]", state="attached")
        page.wait_for_function("document.getElementById('status').textContent === 'ready'")
        yield page
        assert requests and all(r.startswith(url + "/") for r in requests), requests
        context.close()


def _active(url: str) -> int:
    metrics = httpx.get(url + "/metrics").text
    return sum(int(line.split()[-1]) for line in metrics.splitlines() if line.startswith("charlm_active_streams{"))


def test_generate_streams_text_in_and_stop_ends_it(page, url):
    page.fill("#prompt", "the ")
    page.fill("#length", str(LONG))
    page.click("#generate")
    page.wait_for_function("document.getElementById('made').textContent.length > 30")
    assert page.is_disabled("#generate") and page.is_enabled("#stop")
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stopped after')")
    made = page.text_content("#made")
    time.sleep(0.3)
    assert page.text_content("#made") == made and 30 < len(made) < LONG
    assert page.text_content("#output").startswith("the ")
    deadline = time.monotonic() + 5
    while _active(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active(url) == 0


def test_a_seed_writes_the_same_text_twice_and_ctrl_enter_generates(page):
    page.fill("#prompt", "a")
    page.fill("#length", "40")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('40 characters')")
    first = page.text_content("#made")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('40 characters')")
    assert page.text_content("#made") == first and len(first) == 40


def test_score_colours_every_character_with_its_alternatives(page):
    text = "the cat sat\non a mat"
    page.fill("#prompt", text)
    page.click("#score")
    page.wait_for_function("document.getElementById('status').textContent.includes('characters scored')")
    spans = page.query_selector_all("#scored span")
    assert len(spans) == len(text)
    classes = [s.get_attribute("class") for s in spans]
    assert classes[0] == "sx" and all(c.split()[0] in {f"s{b}" for b in range(10)} for c in classes[1:])
    assert "nats" in spans[1].get_attribute("title") and "%" in spans[1].get_attribute("title")
    assert "nats/char" in page.text_content("#status")


def test_the_model_card_shows_size_and_curve(page):
    card = page.text_content("#card")
    assert "parameters" in card and "best val loss" in card
    page.wait_for_selector("#curve polyline", state="attached")


def test_a_lines_model_offers_ten_new_lines(page):
    assert page.is_hidden("#lines-button") and page.is_hidden("#novel-label")
    page.select_option("#model", "names")
    page.wait_for_selector("#lines-button", state="visible")
    page.uncheck("#novel")
    page.click("#lines-button")
    page.wait_for_function("!document.getElementById('lines-button').disabled")
    assert page.text_content("#status").startswith("10 lines"), page.text_content("#status")
    assert len(page.text_content("#output").split("\n")) == 10


def test_it_fits_a_phone(page):
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.evaluate("document.querySelector('label[for=prompt]').textContent") == "Prompt"
