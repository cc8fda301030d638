"""A real headless browser for tests: Debian's chromium and chromium-driver, through selenium.

``.ci/run`` installs both packages; ``browser()`` starts chromium headless with a fresh
profile directory and no background traffic (no component updates, sync or first-run
pages), so a test sees only what the page itself does. ``console_errors`` reads the
browser's console log. Tests skip (with the reason) only when the packages are absent, as
on a developer machine that has not run ``.ci/run``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from typing import Iterator

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1200,900")


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    return chromium, driver


@contextlib.contextmanager
def browser() -> Iterator:
    """A started headless chromium WebDriver, quit (and its profile removed) afterwards."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    chromium, driver_path = _binaries()
    profile = tempfile.mkdtemp(prefix="lbctl-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    """Console entries at SEVERE level (errors, failed loads, CSP violations)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
