"""A real headless Chromium, driven through selenium, for tests of the pages lbctl serves or writes.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/run``) and the ``selenium``
package (the ``test`` extra). Use the fixture by importing it into a test module::

    from tests.browser import browser, console_entries  # noqa: F401  (browser is a fixture)

Each test gets a fresh browser with a fresh profile (``--user-data-dir`` in the test's tmp
dir), so nothing (sessionStorage, cache) leaks between tests. Under ``CI=true`` a missing
browser fails the test; elsewhere it is skipped with the reason, so a developer without the
packages still runs the rest of the suite.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Debian's paths first; shutil.which covers other layouts.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,1000")
TIMEOUT = 20            # seconds for a page load or a script


def _find(candidates) -> str | None:
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing() -> str | None:
    """Why no browser can be started here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _find(CHROMIUM_CANDIDATES) is None:
        return "chromium is not installed (apt-get install chromium chromium-driver; see .ci/run)"
    if _find(DRIVER_CANDIDATES) is None:
        return "chromedriver is not installed (apt-get install chromium-driver; see .ci/run)"
    return None


@pytest.fixture
def browser(tmp_path_factory):
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no headless browser under CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find(CHROMIUM_CANDIDATES)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: selenium never looks for (or downloads) a driver of its own.
    driver = webdriver.Chrome(options=options, service=Service(_find(DRIVER_CANDIDATES)))
    try:
        driver.set_page_load_timeout(TIMEOUT)
        driver.set_script_timeout(TIMEOUT)
        yield driver
    finally:
        driver.quit()


def console_entries(driver, levels=("SEVERE", "WARNING")) -> list[dict]:
    """The browser console entries at ``levels`` since the last call (reading clears them)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] in levels]
