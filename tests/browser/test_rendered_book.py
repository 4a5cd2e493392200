"""Open the built book in headless Chromium, offline, and check what a reader sees.

Run after ``jupyter-book build`` (``make browser``). The pages are served from a
local HTTP server and every request to any other host is blocked, so a page
that still depends on a CDN (MathJax, require.js, the widget manager) fails
here exactly as it would for a reader without a network.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = ROOT / "_build" / "screenshot-channels.png"

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="build the book first"),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian package 'chromium' is not installed"),
]


def _pages() -> list[str]:
    return sorted(str(p.relative_to(HTML)) for p in (HTML / "book").glob("*.html"))


@pytest.fixture(scope="module")
def server():
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


class PageLog:
    def __init__(self):
        self.errors: list[str] = []
        self.blocked: list[str] = []


def _open(browser, server, rel: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log = PageLog()
    host = urlparse(server).netloc

    def route(r):
        if urlparse(r.request.url).netloc == host:
            r.continue_()
        else:  # offline: nothing outside the local server
            log.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: log.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.errors.append(str(e)))
    page.goto(f"{server}/{rel}", wait_until="load")
    page.wait_for_load_state("networkidle")
    return context, page, log


def test_all_pages_offline_without_console_errors(browser, server):
    pages = ["index.html"] + _pages()
    assert len(pages) >= 4
    problems = {}
    for rel in pages:
        context, page, log = _open(browser, server, rel)
        if page.locator(".math").count() or page.locator("span.math, div.math").count():
            page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("MathJax.startup.promise")
            page.wait_for_selector("mjx-container", timeout=20000)
            raw = page.locator("div.math:not(:has(mjx-container))").count()
            if raw:
                problems.setdefault(rel, []).append(f"{raw} display equations not typeset")
            errors = page.locator("mjx-merror").count()
            if errors:
                problems.setdefault(rel, []).append(f"{errors} MathJax errors (unknown macro?)")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)"
        )
        if broken:
            problems.setdefault(rel, []).append(f"broken images {broken}")
        if log.errors:
            problems.setdefault(rel, []).append(f"console errors {log.errors}")
        if log.blocked:
            problems.setdefault(rel, []).append(f"requests leave the book {log.blocked}")
        context.close()
    assert not problems, problems


def test_chapter_math_figures_widgets_and_folded_solution(browser, server):
    context, page, log = _open(browser, server, "book/channels.html")
    page.wait_for_selector("mjx-container", timeout=20000)
    assert page.locator("mjx-container").count() > 10

    figures = page.locator("img")
    assert figures.count() >= 2
    assert all(
        page.evaluate("i => i.naturalWidth > 100", figures.nth(i).element_handle())
        for i in range(figures.count())
    )

    # the ipywidgets slider is rendered from the stored widget state
    page.wait_for_selector(".jupyter-widgets .slider, .widget-slider", timeout=20000)

    # solutions are folded until the reader opens them
    solution = page.locator("div.solution").first
    assert solution.count() == 1
    body = solution.locator("section").first
    assert not body.is_visible(), "a solution is visible before it is opened"
    solution.locator(".toggle-button, button, summary, .admonition-title").first.click()
    page.wait_for_timeout(500)
    assert body.is_visible(), "a solution does not open on click"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=False)
    assert not log.errors, log.errors
    assert not log.blocked, log.blocked
    context.close()
