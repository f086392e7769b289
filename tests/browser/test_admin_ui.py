"""The admin pages in a real browser: Debian's Chromium, headless, driven by Playwright.

The proxy is the real thing as the README runs it (`flask --app aivonx init`, then gunicorn
with gevent workers; two workers sharing Redis in the postgres run), with a log file of its
own. Chromium must be installed (`.ci/run` installs it): without it this test fails, it
does not skip.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.conftest import BACKEND, DEFAULT_PASSWORD, ROOT

CHROMIUM = os.environ.get("AIVONX_TEST_CHROMIUM", "/usr/bin/chromium")
# No sandbox (CI runs as root in a container), and nothing that would reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
MODEL = "tinyllama:1b"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data dir for every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900},
        )
        context.set_default_timeout(20_000)
        yield context
        context.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{BACKEND}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def proxied_request(url: str) -> None:
    """A request for the pulled model; every worker knows the model within a moment."""
    deadline = time.monotonic() + 15
    while True:
        response = requests.post(
            url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}, timeout=10
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert response.status_code == 200, response.text


def test_operator_journey(browser: BrowserContext, start_gunicorn, fake_nodes, tmp_path: Path):
    node = fake_nodes("llama3:latest", name="gpu-fake")
    proxy = start_gunicorn(
        AIVONX_ADMIN_PASSWORD=DEFAULT_PASSWORD, AIVONX_LOG_FILE=str(tmp_path / "logs" / "aivonx.log")
    )
    page = browser.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    # A browser opening the proxy's address is sent to the pages, and to sign in first.
    page.goto(proxy.url + "/")
    expect(page).to_have_url(re.compile(r"/ui/login"))

    page.fill("#username", "admin")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    expect(page.locator(".error[data-field=password]")).to_contain_text("wrong username or password")
    page.fill("#username", "admin")
    page.fill("#password", DEFAULT_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/$"))
    expect(page.locator("#whoami")).to_have_text("admin (admin)")

    # Add the node; a bad URL first, whose message shows next to the field.
    page.click("nav >> text=Nodes")
    page.fill("#base_url", "gopher://nowhere")
    page.click("#add-node button[type=submit]")
    expect(page.locator(".error[data-field=base_url]")).to_contain_text("http:// or https:// URL")
    page.fill("#base_url", node.url)
    page.fill("#name", "gpu-fake")
    page.click("#add-node button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Node gpu-fake added")

    # The dashboard shows it active, live (polled, no reload).
    page.click("nav >> text=Dashboard")
    expect(page.locator("#nodes tr[data-node=gpu-fake] .pool")).to_have_text("active")
    expect(page.locator("#nodes tr[data-node=gpu-fake]")).to_contain_text("llama3:latest")

    # Switch the strategy; the dashboard says so.
    page.click("nav >> text=Settings")
    page.select_option("#strategy", "lowest_latency")
    page.click("#settings-form button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Settings saved")
    expect(page.locator("#strategy")).to_have_value("lowest_latency")
    page.click("nav >> text=Dashboard")
    expect(page.locator("#strategy")).to_have_text("lowest_latency")

    # Pull a model and watch each node's progress bar finish.
    page.click("nav >> text=Models")
    page.fill("#pull-model", "not a model!")
    page.click("#pull-button")
    expect(page.locator(".error[data-for=model]")).to_contain_text("model name")
    page.fill("#pull-model", MODEL)
    page.click("#pull-button")
    expect(page.locator("#pull-status")).to_have_text(f"{MODEL}: success")
    progress = page.locator(".progress[data-node=gpu-fake]")
    expect(progress).to_have_class(re.compile(r"\bdone\b"))
    expect(progress.locator(".bar")).to_have_attribute("style", re.compile(r"width: 100%"))
    expect(page.locator(f"#model-list tr[data-model='{MODEL}']")).to_contain_text("gpu-fake")
    screenshot(page, "pull")

    # A client uses the model; the dashboard counts it and its chart has a bar.
    proxied_request(proxy.url)
    page.click("nav >> text=Dashboard")
    expect(page.locator("#stat-requests")).to_have_text(re.compile(r"^[1-9][0-9]*$"))
    expect(page.locator("#chart rect.bar").first).to_be_attached()
    expect(page.locator("#nodes tr[data-node=gpu-fake]")).to_contain_text(MODEL)
    screenshot(page, "dashboard")

    # Find that request in the log viewer by its model.
    page.click("nav >> text=Logs")
    page.select_option("#f-source", "request")
    page.fill("#f-model", MODEL)
    page.click("#log-search")
    found = page.locator(f"#log-rows tr.entry[data-model='{MODEL}']").first
    expect(found).to_contain_text("POST /api/generate 200")
    expect(found).to_contain_text("gpu-fake")
    found.click()  # the whole JSON line opens below
    expect(page.locator("#log-rows tr.detail pre")).to_contain_text('"request_id"')
    screenshot(page, "logs")

    # Live tail: a new request appears on top without searching again.
    page.check("#live-tail")
    requests.post(
        proxy.url + "/api/generate",
        json={"model": MODEL, "prompt": "again", "stream": False},
        headers={"X-Request-ID": "tail-me"},
        timeout=10,
    )
    expect(page.locator("#log-rows tr.entry").first).to_contain_text("tail-me")
    page.uncheck("#live-tail")

    # Delete the model from every node (after confirming).
    page.click("nav >> text=Models")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#model-list button.delete-model[data-model='{MODEL}']")
    expect(page.locator("#delete-status")).to_have_text(f"{MODEL} deleted from gpu-fake")
    expect(page.locator(f"#model-list tr[data-model='{MODEL}']")).to_have_count(0)

    # Sign out: the pages need signing in again.
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.goto(proxy.url + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    assert page_errors == []
