"""The admin API's web dashboard (``GET /``): its headers and assets over HTTP, and the page
itself in a real headless Chromium against a real ``lbctl serve`` and real backends.

Selenium is synchronous; the backends run in the test's event loop. So every browser step
runs in a worker thread (``asyncio.to_thread``) while the loop keeps serving the backends,
and the thread talks to the proxy and the admin API with plain urllib.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.error
import urllib.request
from html.parser import HTMLParser

import aiohttp
import pytest
from aiohttp import web

from tests.browser import browser, console_entries  # noqa: F401  (browser is a fixture)

TOKEN = "dash-token-0123456789"
WAIT = 15            # seconds any one condition in the page may take before the test fails
SCREENSHOTS = os.environ.get("LBCTL_SCREENSHOTS")     # a directory: keep pictures to look at



async def failing(request, body):
    return web.Response(status=500, text="no")


async def start_serve(backends, tmp_path, free_port, serve_process,
                      token: str | None = None, outlier: bool = False,
                      workers: int = 1) -> dict:
    """``lbctl serve`` in front of backends "one" and "two" (round robin), admin API on;
    with ``outlier``, "two" answers 500 and two failures in a row eject it. One process by
    default: the tests count a round robin's exact turns, and every worker has its own."""
    one = await backends.start("one")
    two = await backends.start("two", failing if outlier else None)
    outlier_table = ('[pools.p.outlier]\nconsecutive_failures = 2\nejection_time = "5m"\n\n'
                     if outlier else "")
    port, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    token_line = f'token = "{token}"\n' if token else ""
    path.write_text(
        f'[listen]\naddress = "127.0.0.1:{port}"\n\n[server]\nworkers = {workers}\n\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\n{token_line}\n'
        f'[[routes]]\npool = "p"\n\n[pools.p]\nalgorithm = "round_robin"\n\n{outlier_table}'
        f'[[pools.p.backends]]\nurl = "{one.url}"\nname = "one"\n\n'
        f'[[pools.p.backends]]\nurl = "{two.url}"\nname = "two"\n')
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("admin API on")
    await proc.wait_for_log("listening on")
    return {"proc": proc, "port": port, "admin": f"http://127.0.0.1:{admin}", "token": token}


@pytest.fixture
async def serve(backends, tmp_path, free_port, serve_process):
    async def start(token: str | None = None, outlier: bool = False, workers: int = 1) -> dict:
        return await start_serve(backends, tmp_path, free_port, serve_process, token, outlier,
                                 workers)
    return start


# ---- helpers the browser thread uses --------------------------------------------------------

def admin_stats(live: dict) -> dict:
    request = urllib.request.Request(live["admin"] + "/stats?history=0")
    if live["token"]:
        request.add_header("Authorization", f"Bearer {live['token']}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def backend_stats(live: dict, name: str) -> dict:
    return {b["name"]: b for b in admin_stats(live)["pools"][0]["backends"]}[name]


def send_requests(live: dict, n: int) -> list[int]:
    statuses = []
    for _ in range(n):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{live['port']}/", timeout=10) as resp:
                resp.read()
                statuses.append(resp.status)
        except urllib.error.HTTPError as exc:
            exc.read()
            statuses.append(exc.code)
    return statuses


def wait_until(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def cell(driver, backend: str, field: str) -> str:
    from selenium.webdriver.common.by import By
    return driver.find_element(
        By.CSS_SELECTOR, f'tr[data-pool="p"][data-backend="{backend}"] td[data-field="{field}"]'
    ).text


def row_state(driver, backend: str) -> str | None:
    from selenium.webdriver.common.by import By
    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-pool="p"][data-backend="{backend}"]')
    return rows[0].get_attribute("data-state") if rows else None


def click(driver, backend: str, action: str) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.CSS_SELECTOR, f'tr[data-backend="{backend}"] '
                        f'button[data-action="{action}"]').click()


def message(driver) -> str:
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, "message").text


def enter_token(driver, token: str) -> None:
    from selenium.webdriver.common.by import By
    field = driver.find_element(By.ID, "token-input")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


# ---- over plain HTTP ------------------------------------------------------------------------

class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data


async def test_page_headers_assets_and_no_token_needed_for_the_page(serve):
    live = await serve(token=TOKEN)
    async with aiohttp.ClientSession() as session:
        async with session.get(live["admin"] + "/") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            page = await resp.text()
            headers = resp.headers
        csp = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
        assert csp["connect-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert "unsafe" not in headers["Content-Security-Policy"]      # no inline code, no eval
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        assert '<meta name="lbctl-token" content="required">' in page

        parsed = Tags()
        parsed.feed(page)
        assert parsed.script_text.strip() == ""                        # no inline script
        assert not re.search(r"\s(on\w+|style)\s*=", page, re.I)       # no inline handlers/styles
        refs = [a.get("src") or a.get("href") for tag, a in parsed.tags
                if tag in ("script", "link") and (a.get("src") or a.get("href"))]
        assert sorted(refs) == ["dashboard.css", "dashboard.js", "favicon.svg"]
        types = {"dashboard.css": "text/css", "dashboard.js": "text/javascript",
                 "favicon.svg": "image/svg+xml"}
        for ref in refs:                                               # all served here, no token
            async with session.get(f"{live['admin']}/{ref}") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith(types[ref])
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                body = await resp.text()
            if ref == "dashboard.js":
                for banned in ("eval(", "new Function", "innerHTML", "document.write"):
                    assert banned not in body
            if ref == "dashboard.css":
                assert "@import" not in body and "url(" not in body     # nothing fetched
        # Nothing outside this origin: no absolute URL in what the page loads.
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)

        # The page is public; the data is not.
        async with session.get(live["admin"] + "/stats") as resp:
            assert resp.status == 401
        async with session.post(live["admin"] + "/",
                                headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 405
        async with session.post(live["admin"] + "/") as resp:        # octet-stream: not JSON
            assert resp.status == 415


# ---- in the browser -------------------------------------------------------------------------

async def test_page_shows_live_figures_and_its_controls_change_the_backend(serve, browser):
    live = await serve()

    def steps():
        browser.get(live["admin"] + "/")
        wait_until(browser, lambda d: cell(d, "one", "requests") == "0", "rows drawn")
        assert browser.title.startswith("lbctl ")
        assert row_state(browser, "one") == "up" and row_state(browser, "two") == "up"
        assert cell(browser, "one", "weight") == "1 / 1"
        assert cell(browser, "one", "ejections") == "0"
        assert console_entries(browser) == []                  # loaded cleanly: no errors

        # Numbers move after requests go through the proxy (round robin: 5 each).
        assert send_requests(live, 10) == [200] * 10
        wait_until(browser, lambda d: cell(d, "one", "requests") == "5", "requests counted")
        assert cell(browser, "two", "requests") == "5"
        wait_until(browser, lambda d: cell(d, "one", "rate") not in ("0.0", "-"),
                   "req/s over the last complete seconds")
        assert cell(browser, "one", "p50").endswith("ms")
        path = browser.find_element(
            "css selector", 'tr[data-backend="one"] td[data-field="spark-rate"] path')
        assert path.get_attribute("d").startswith("M")         # a sparkline is drawn

        # Drain from the page: /stats says so, and so does the page.
        click(browser, "one", "drain")
        wait_until(browser, lambda d: row_state(d, "one") == "draining", "drain shown")
        assert backend_stats(live, "one")["state"] == "draining"
        assert "p/one: drain done; now draining" in message(browser)
        assert send_requests(live, 4) == [200] * 4             # a draining backend gets none
        assert backend_stats(live, "one")["requests"] == 5

        # Weight and enable.
        browser.find_element("css selector", 'tr[data-backend="two"] input').send_keys("3")
        click(browser, "two", "weight")
        wait_until(browser, lambda d: cell(d, "two", "weight") == "3 / 3", "weight shown")
        assert backend_stats(live, "two")["weight"] == 3
        click(browser, "one", "enable")
        wait_until(browser, lambda d: row_state(d, "one") == "up", "enable shown")
        assert backend_stats(live, "one")["state"] == "up"
        assert console_entries(browser) == []

    await asyncio.wait_for(asyncio.to_thread(steps), 90)


async def test_without_the_token_the_controls_are_refused_and_the_page_says_so(serve, browser):
    live = await serve(token=TOKEN)

    def steps():
        from selenium.webdriver.common.by import By
        browser.get(live["admin"] + "/")
        form = browser.find_element(By.ID, "token-form")
        wait_until(browser, lambda d: form.is_displayed(), "token asked for")
        assert "needs its token" in message(browser)
        assert console_entries(browser) == []                  # asked up front, no 401 provoked

        enter_token(browser, "not-the-token")
        wait_until(browser, lambda d: "refused the token (401" in message(d), "wrong token")
        assert form.is_displayed() and row_state(browser, "one") is None
        assert browser.execute_script("return sessionStorage.getItem('lbctl.admin.token')") \
            is None                                            # a refused token is not kept
        enter_token(browser, TOKEN)
        wait_until(browser, lambda d: row_state(d, "one") == "up", "rows drawn with the token")
        assert not form.is_displayed()
        assert TOKEN not in browser.current_url
        assert browser.execute_script(
            "return sessionStorage.getItem('lbctl.admin.token')") == TOKEN
        browser.refresh()                                      # typed once: kept for the tab
        wait_until(browser, lambda d: row_state(d, "one") == "up", "rows drawn after reload")
        assert not browser.find_element(By.ID, "token-form").is_displayed()

        # Forget it, then try to drain: the admin API refuses, the page says so.
        browser.find_element(By.ID, "forget").click()
        click(browser, "one", "drain")
        wait_until(browser, lambda d: "refused" in message(d), "refusal shown")
        if SCREENSHOTS:
            browser.save_screenshot(SCREENSHOTS + "/dashboard-refused.png")
        assert "401" in message(browser) and "drain p/one" in message(browser)
        assert backend_stats(live, "one")["state"] == "up"
        refused = console_entries(browser, levels=("SEVERE",))
        assert refused and all("401" in e["message"] for e in refused)   # the refused POST only

        # With the token again the same click drains.
        enter_token(browser, TOKEN)
        click(browser, "one", "drain")
        wait_until(browser, lambda d: row_state(d, "one") == "draining", "drain shown")
        assert backend_stats(live, "one")["state"] == "draining"
        if SCREENSHOTS:
            browser.save_screenshot(SCREENSHOTS + "/dashboard-token.png")

    await asyncio.wait_for(asyncio.to_thread(steps), 90)


async def test_a_refused_weight_is_explained(serve, browser):
    live = await serve()

    def steps():
        browser.get(live["admin"] + "/")
        wait_until(browser, lambda d: row_state(d, "two") == "up", "rows drawn")
        click(browser, "two", "weight")                        # empty: refused by the page
        assert "enter a number greater than 0" in message(browser)
        browser.find_element("css selector", 'tr[data-backend="two"] input').send_keys("-2")
        click(browser, "two", "weight")
        assert "enter a number greater than 0" in message(browser)
        assert backend_stats(live, "two")["weight"] == 1

    await asyncio.wait_for(asyncio.to_thread(steps), 60)



async def test_an_ejected_backend_is_shown_in_its_colour_with_its_ejection_count(serve, browser):
    live = await serve(outlier=True)

    def steps():
        from selenium.webdriver.common.by import By
        browser.get(live["admin"] + "/")
        wait_until(browser, lambda d: row_state(d, "two") == "up", "rows drawn")
        # Round robin: "two" gets every other request and fails it; the second failure in a
        # row ejects it, and from then on "one" takes everything.
        send_requests(live, 6)
        assert backend_stats(live, "two")["state"] == "ejected"
        wait_until(browser, lambda d: row_state(d, "two") == "ejected", "ejection shown")
        badge = browser.find_element(
            By.CSS_SELECTOR, 'tr[data-backend="two"] td[data-field="state"] span')
        assert badge.get_attribute("class") == "state state-ejected"
        assert badge.value_of_css_property("background-color") != \
            browser.find_element(By.CSS_SELECTOR, 'tr[data-backend="one"] td[data-field="state"] '
                                 'span').value_of_css_property("background-color")
        wait_until(browser, lambda d: cell(d, "two", "ejections") == "1", "ejection counted")
        assert cell(browser, "two", "errors") == "2 100.0%"
        assert console_entries(browser) == []

    await asyncio.wait_for(asyncio.to_thread(steps), 60)


async def test_with_workers_the_page_shows_the_instance_and_a_row_per_worker(serve, browser):
    live = await serve(workers=2)

    def steps():
        from selenium.webdriver.common.by import By
        browser.get(live["admin"] + "/")
        wait_until(browser, lambda d: cell(d, "one", "requests") == "0", "rows drawn")
        note = browser.find_element(By.ID, "workers-note").text
        assert note.startswith("2 workers")
        table = browser.find_element(By.ID, "workers-table")
        assert table.is_displayed()
        heads = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        assert heads[:4] == ["index", "pid", "state", "uptime"] and "requests" in heads
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        pids = {w["pid"] for w in admin_stats(live)["workers"]}
        assert [row[0] for row in rows] == ["1", "2"]
        assert {int(row[1].replace(",", "")) for row in rows} == pids
        assert {row[2] for row in rows} == {"serving"}

        # Requests through both workers are counted once, in the instance's totals.
        assert send_requests(live, 10) == [200] * 10
        wait_until(browser, lambda d: int(cell(d, "one", "requests")) +
                   int(cell(d, "two", "requests")) == 10, "the instance's requests counted")
        column = heads.index("requests")
        wait_until(browser, lambda d: sum(
            int(tr.find_elements(By.TAG_NAME, "td")[column].text.replace(",", ""))
            for tr in d.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr")) == 10,
            "each worker's requests")
        # A drain from the page reaches every worker: no request goes to "one".
        click(browser, "one", "drain")
        wait_until(browser, lambda d: row_state(d, "one") == "draining", "drained")
        before = backend_stats(live, "one")["requests"]
        assert send_requests(live, 10) == [200] * 10
        assert backend_stats(live, "one")["requests"] == before
        assert console_entries(browser) == []
    await asyncio.wait_for(asyncio.to_thread(steps), 90)
