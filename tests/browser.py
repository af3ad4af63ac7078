"""Headless Chromium for page tests: Debian's ``chromium`` driven by Playwright (its own browser
download cannot be fetched here). ``browser_or_skip`` skips a test, with the reason in one line,
where either is missing; CI installs both (.ci/run)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHARLM_CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest keep it from calling home on a closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def _skip(reason: str) -> None:
    if os.environ.get("CHARLM_REQUIRE_BROWSER") == "1":  # CI: the browser must be there
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def browser_or_skip() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("browser test: Playwright for Python is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        _skip(f"browser test: no Chromium at {CHROMIUM} (apt-get install chromium; CI installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
